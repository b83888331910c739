"""Approval steps as a matching: which approvals count toward which step, and whether the steps
can still be met.

A flow's steps are an AND: each needs `count` approvers of its own, and one person counts in one
step at most. Who counts where is a largest matching of people to the steps' places (Kuhn's
augmenting paths, in approval order, so the answer is the same on every replay): a person in two
steps' lists moves to the other one when that makes room for a later approver. Pure functions,
shared by the config check, the front doors' rules and the workflow.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass


def expand(users: list[str], groups: list[str], approver_groups: dict[str, list[str]]) -> list[str]:
    """Users plus the members of the named groups, lower-cased, in a stable order."""
    people: list[str] = []
    for email in [*users, *(m for g in groups for m in approver_groups.get(g, []))]:
        email = email.lower()
        if email not in people:
            people.append(email)
    return people


@dataclass(frozen=True)
class Step:
    """A step as people: its name, how many it needs, and who may count toward it."""

    name: str
    count: int
    approvers: Sequence[str]


def assign(
    steps: Sequence[Step], people: Sequence[str], anywhere: Collection[str] = ()
) -> list[list[str]]:
    """Who counts toward each step: `people` (in order) placed so that as many places as possible
    are filled, each person in one place at most. People in `anywhere` (admins) fit every step;
    a person who fits no free place, even by moving others, counts nowhere."""
    places = [index for index, step in enumerate(steps) for _ in range(step.count)]
    holder: list[str | None] = [None] * len(places)
    fits = {
        person: [
            slot
            for slot, index in enumerate(places)
            if person in anywhere or person in steps[index].approvers
        ]
        for person in people
    }

    def place(person: str, seen: set[int]) -> bool:
        for slot in fits[person]:
            if slot in seen:
                continue
            seen.add(slot)
            other = holder[slot]
            if other is None or place(other, seen):
                holder[slot] = person
                return True
        return False

    for person in dict.fromkeys(people):  # each person once, in order
        place(person, set())
    counted: list[list[str]] = [[] for _ in steps]
    for slot, held_by in enumerate(holder):
        if held_by is not None:
            counted[places[slot]].append(held_by)
    order = {person: n for n, person in enumerate(people)}
    return [sorted(names, key=order.__getitem__) for names in counted]


def met(steps: Sequence[Step], counted: Sequence[Sequence[str]]) -> bool:
    return all(len(names) >= step.count for step, names in zip(steps, counted, strict=True))


def shortfall(steps: Sequence[Step], available: Sequence[str]) -> tuple[Step, int] | None:
    """The first step that cannot be met even if everyone `available` approved, with how many
    could count toward it; None when every step can be met."""
    counted = assign(steps, available)
    for step, names in zip(steps, counted, strict=True):
        if len(names) < step.count:
            return step, len(names)
    return None


def still_needed(
    steps: Sequence[Step], counted: Sequence[Sequence[str]], excluded: Collection[str] = ()
) -> list[tuple[Step, int, list[str]]]:
    """Each step not yet met: how many more it needs, and who could still approve toward it."""
    done = {person for names in counted for person in names}
    return [
        (
            step,
            step.count - len(names),
            [p for p in step.approvers if p not in done and p not in excluded],
        )
        for step, names in zip(steps, counted, strict=True)
        if len(names) < step.count
    ]
