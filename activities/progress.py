"""What an activity already did, kept across its attempts in Temporal heartbeat details.

A notification sent alone (`notify.send`) keeps its progress as its activity's own details. Sent
inside a delivery round (activities/delivery.py), it keeps it in the round's record instead, beside
how many of the round's notifications are done, so a retried round skips what it already did.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from temporalio import activity

_round: ContextVar[dict[str, Any] | None] = ContextVar("keycard_round_progress", default=None)

STEP = "step"  # the record's key for the progress of the notification under way


def resume() -> Any | None:
    """The progress a previous attempt saved, or None."""
    record = _round.get()
    if record is not None:
        return record.get(STEP)
    if not activity.in_activity():
        return None
    details = activity.info().heartbeat_details
    return details[0] if details else None


def save(step: Any) -> None:
    """Keep `step` for the next attempt, should this one fail."""
    if not activity.in_activity():
        return
    record = _round.get()
    if record is None:
        activity.heartbeat(step)
        return
    record[STEP] = step
    activity.heartbeat(record)


def open_round(record: dict[str, Any]) -> None:
    """Notifications sent from here on (this task and those it starts) keep progress in `record`."""
    _round.set(record)
