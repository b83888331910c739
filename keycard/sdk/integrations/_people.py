"""Hooks name people by a Person, an event's actor, or a plain email address."""

from __future__ import annotations

from keycard.sdk.events import Actor, Person

User = Person | Actor | str


def email_of(user: User) -> str:
    email = user if isinstance(user, str) else user.email
    if not email:
        raise ValueError(f"{user!r} has no email address (a rule is not a person)")
    return email.strip().lower()


def slack_id_of(user: User) -> str | None:
    return None if isinstance(user, str) else user.slack_user_id


def as_list(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)
