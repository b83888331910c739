"""`@hook` and `@reducer`, and the names Keycard calls them by."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

F = TypeVar("F", bound=Callable[..., object])
Kind = Literal["hook", "reducer"]

MARK = "__keycard__"

# Decision hooks may return a Decision; observers' return values are ignored.
DECISION_HOOKS = ("on_request", "on_approve")
OBSERVER_HOOKS = (
    "after_request",
    "after_approve",
    "on_deny",
    "after_deny",
    "after_grant",
    "after_revoke",
    "after_end",
)
HOOKS = (*DECISION_HOOKS, *OBSERVER_HOOKS)
REDUCERS = ("get_approvers",)


def hook(fn: F) -> F:
    """Mark a function as a hook; its name says when it runs (on_request, after_grant, ...)."""
    setattr(fn, MARK, "hook")
    return fn


def reducer(fn: F) -> F:
    """Mark a function as a reducer: it computes a value, e.g. `get_approvers` → the approvers."""
    setattr(fn, MARK, "reducer")
    return fn
