"""`delivery.round`: a request's new events to every audit destination and to chat, in one activity.

One activity per round instead of one per destination per event: a lifecycle's five events cost
two or three activities, not ten. Destinations stay independent. Each gets its own time budget in
the round (`ROUND_LANE_TIMEOUT`), and one that fails or is slow is reported as such, not retried
here: the workflow lets that lane catch up alone through `audit.deliver` / `notify.send` and their
retries, while the others go on in rounds. So an outage delays its own lane, never the others and
never the access.

The round calls the worker's own `audit.deliver` and `notify.send` (whatever it registered: the
real sinks, Slack, the console, or a test's fakes), so each destination behaves exactly as when
it is delivered alone. keycard_worker() adds this activity wherever those two are registered.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import structlog
from temporalio import activity

from activities import progress
from keycard import temporal as names
from keycard.models import (
    AuditBatch,
    DeliveryRound,
    DeliveryRoundResult,
    LaneOutcome,
    MessageRef,
    Notification,
    NotificationResult,
)
from keycard.redact import scrub_text

log = structlog.get_logger("keycard.delivery")

ERROR_EXCERPT = 300


class DeliveryActivities:
    """`deliver_audit` and `notify` are the worker's `audit.deliver` and `notify.send` (either may be
    None: that lane then falls behind in every round and is delivered by whichever worker has it)."""

    def __init__(
        self,
        deliver_audit: Callable[[AuditBatch], Any] | None,
        notify: Callable[[Notification], Any] | None,
        lane_timeout: float = names.ROUND_LANE_TIMEOUT.total_seconds(),
    ):
        self._deliver_audit = deliver_audit
        self._notify = notify
        self._lane_timeout = lane_timeout

    @activity.defn(name=names.DELIVER_ROUND)
    async def deliver(self, round: DeliveryRound) -> DeliveryRoundResult:
        record = _resumed_record(round)
        progress.open_round(record)
        audit = [self._audit_lane(round, d, start) for d, start in round.audit.items()]
        notified = self._notify_lane(round, record) if round.notify_from is not None else None
        outcomes = await asyncio.gather(*audit, *([notified] if notified else []))
        result = DeliveryRoundResult(
            audit=dict(zip(round.audit, outcomes[: len(audit)], strict=True)),
            messages=[MessageRef.model_validate(m) for m in record["messages"]],
        )
        if notified is not None:
            result.notify = outcomes[-1]
        return result

    async def _audit_lane(self, round: DeliveryRound, destination: str, start: int) -> LaneOutcome:
        events = round.events[start - round.first :]
        if self._deliver_audit is None:
            return LaneOutcome(sent=start, error="this worker has no audit.deliver")
        try:
            await asyncio.wait_for(
                _call(self._deliver_audit, AuditBatch(destination=destination, events=events)),
                self._lane_timeout,
            )
        except Exception as err:  # the lane falls behind; the others are unaffected
            return _fell_behind(round, destination, start, err)
        return LaneOutcome(sent=start + len(events))

    async def _notify_lane(self, round: DeliveryRound, record: dict[str, Any]) -> LaneOutcome:
        """Each event's notification in order; one that fails stops the lane there."""
        assert round.notify_from is not None
        if self._notify is None:
            return LaneOutcome(sent=record["notified"], error="this worker has no notify.send")
        try:
            async with asyncio.timeout(self._lane_timeout):  # the whole lane, like an audit lane
                while record["notified"] < round.first + len(round.events):
                    index = record["notified"]
                    notification = Notification(
                        event=round.events[index - round.first],
                        view=round.views[index - round.notify_from],
                        messages=[MessageRef.model_validate(m) for m in record["messages"]],
                        flow=round.flow,
                    )
                    result = NotificationResult.model_validate(
                        await _call(self._notify, notification)
                    )
                    record.update(
                        notified=index + 1,
                        messages=[m.model_dump(mode="json") for m in result.messages],
                        step=None,
                    )
                    activity.heartbeat(record)
        except Exception as err:  # stops at the notification that failed; those before stand
            return _fell_behind(round, names.NOTIFY_LANE, record["notified"], err)
        return LaneOutcome(sent=record["notified"])


def _resumed_record(round: DeliveryRound) -> dict[str, Any]:
    """Where a previous attempt of this round got to with notifications (audit lanes are simply
    sent again: events carry ids, so a consumer drops a repeat)."""
    details = activity.info().heartbeat_details
    if details and isinstance(details[0], dict) and "notified" in details[0]:
        return dict(details[0])
    return {
        "notified": round.notify_from if round.notify_from is not None else round.first,
        "messages": [m.model_dump(mode="json") for m in round.messages],
        progress.STEP: None,
    }


async def _call(function: Callable[[Any], Any], argument: Any) -> Any:
    result = function(argument)
    return await result if inspect.isawaitable(result) else result


def _fell_behind(round: DeliveryRound, lane: str, sent: int, err: Exception) -> LaneOutcome:
    if isinstance(err, TimeoutError):
        error = "no answer within this round's time for one destination"
    else:
        error = scrub_text(str(err) or type(err).__name__)[:ERROR_EXCERPT]
    log.warning(
        "delivery.lane_fell_behind",
        lane=lane,
        request_id=round.events[0].request_id if round.events else None,
        first_event=sent,
        error=error,
    )
    return LaneOutcome(sent=sent, error=error)
