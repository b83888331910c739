"""`delivery.round`: every lane from its own place, each independent of the others, and a retried
round resumes its notifications where the last attempt stopped."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from temporalio.testing import ActivityEnvironment

from activities import progress
from activities.delivery import DeliveryActivities
from keycard import temporal as names
from keycard.models import (
    AuditBatch,
    DeliveryRound,
    LaneOutcome,
    MessageRef,
    Notification,
    NotificationResult,
    Requester,
    RequestState,
    RequestView,
)
from tests.audit_events import make_events

EVENTS = make_events(4)


def view(number: int) -> RequestView:
    return RequestView(
        id="req-audit1",
        state=RequestState.PENDING,
        requester=Requester(email="alice@example.com"),
        flow="prod-power-user",
        flow_label="Prod",
        strategy="aws_sso",
        target="prod",
        target_label="Production",
        duration=timedelta(hours=1),
        reason=f"view {number}",
        approvals_required=1,
        requested_at=datetime(2026, 3, 14, tzinfo=UTC),
    )


class Destinations:
    """Audit destinations and a chat, as a worker's audit.deliver and notify.send."""

    def __init__(self, *, down: set[str] = frozenset(), slow: set[str] = frozenset()):
        self.down, self.slow = down, slow
        self.audit: dict[str, list[str]] = {}
        self.notified: list[tuple[str, str]] = []  # (event id, the view's reason)
        self.fail_notify_at: str | None = None

    async def deliver_audit(self, batch: AuditBatch) -> None:
        if batch.destination in self.down:
            raise ConnectionError(f"{batch.destination} is down")
        if batch.destination in self.slow:
            await asyncio.sleep(5)
        self.audit.setdefault(batch.destination, []).extend(e.id for e in batch.events)

    async def notify(self, notification: Notification) -> NotificationResult:
        if notification.event.id == self.fail_notify_at:
            raise ConnectionError("chat is down")
        self.notified.append((notification.event.id, notification.view.reason))
        ref = MessageRef(kind="note", channel="C1", ts=notification.event.id)
        return NotificationResult(messages=[*notification.messages, ref])

    def activity(self, lane_timeout: float = 2.0) -> DeliveryActivities:
        return DeliveryActivities(self.deliver_audit, self.notify, lane_timeout=lane_timeout)


def a_round(**overrides) -> DeliveryRound:
    """Events 1..4 (indexes 0..3): `a` has none, `b` has the first, chat has the first two."""
    fields = {
        "first": 0,
        "events": EVENTS,
        "audit": {"a": 0, "b": 1},
        "notify_from": 2,
        "views": [view(2), view(3)],
    }
    return DeliveryRound(**(fields | overrides))


async def test_each_lane_gets_its_own_events_in_order():
    destinations = Destinations()
    result = await ActivityEnvironment().run(destinations.activity().deliver, a_round())

    ids = [e.id for e in EVENTS]
    assert destinations.audit == {"a": ids, "b": ids[1:]}
    assert destinations.notified == [(ids[2], "view 2"), (ids[3], "view 3")]
    assert result.audit == {"a": LaneOutcome(sent=4), "b": LaneOutcome(sent=4)}
    assert result.notify == LaneOutcome(sent=4)
    assert [m.ts for m in result.messages] == ids[2:]


async def test_a_destination_that_fails_is_reported_and_the_others_are_delivered():
    destinations = Destinations(down={"b"})
    result = await ActivityEnvironment().run(destinations.activity().deliver, a_round())

    assert result.audit["a"] == LaneOutcome(sent=4)
    assert result.audit["b"].sent == 1 and "b is down" in (result.audit["b"].error or "")
    assert result.notify == LaneOutcome(sent=4)


async def test_a_slow_destination_costs_the_round_one_lane_budget_at_most():
    destinations = Destinations(slow={"a"})
    began = asyncio.get_running_loop().time()
    result = await ActivityEnvironment().run(
        destinations.activity(lane_timeout=0.2).deliver, a_round()
    )

    assert asyncio.get_running_loop().time() - began < 2
    assert result.audit["a"].sent == 0 and result.audit["a"].error
    assert result.audit["b"] == LaneOutcome(sent=4)
    assert "a" not in destinations.audit


async def test_chat_stops_at_the_notification_that_failed_and_keeps_what_it_posted():
    destinations = Destinations()
    destinations.fail_notify_at = EVENTS[3].id
    result = await ActivityEnvironment().run(destinations.activity().deliver, a_round())

    assert result.notify is not None
    assert result.notify.sent == 3 and "chat is down" in (result.notify.error or "")
    assert [m.ts for m in result.messages] == [EVENTS[2].id]
    assert result.audit["a"] == LaneOutcome(sent=4)


async def test_a_slow_chat_keeps_what_it_sent_within_the_lane_budget():
    destinations = Destinations()

    async def slow_after_the_first(notification: Notification) -> NotificationResult:
        if notification.event.id == EVENTS[3].id:
            await asyncio.sleep(5)
        return await destinations.notify(notification)

    rounds = DeliveryActivities(destinations.deliver_audit, slow_after_the_first, lane_timeout=0.3)
    result = await ActivityEnvironment().run(rounds.deliver, a_round())

    assert result.notify is not None and result.notify.sent == 3 and result.notify.error
    assert [m.ts for m in result.messages] == [EVENTS[2].id]


async def test_a_round_without_chat_leaves_the_messages_alone():
    destinations = Destinations()
    result = await ActivityEnvironment().run(
        destinations.activity().deliver, a_round(notify_from=None, views=[])
    )
    assert result.notify is None and destinations.notified == []


async def test_a_worker_without_a_lane_reports_it_behind():
    rounds = DeliveryActivities(None, None)
    result = await ActivityEnvironment().run(rounds.deliver, a_round())
    assert result.audit["a"] == LaneOutcome(sent=0, error="this worker has no audit.deliver")
    assert result.notify == LaneOutcome(sent=2, error="this worker has no notify.send")


async def test_a_retried_round_skips_the_notifications_it_already_sent():
    """The record a previous attempt heartbeated: one notification done, one half-way."""
    seen_step = []

    async def notify(notification: Notification) -> NotificationResult:
        seen_step.append(progress.resume())
        progress.save({"done": ["first step"]})
        return NotificationResult(messages=notification.messages)

    env = ActivityEnvironment()
    record = {
        "notified": 3,
        "messages": [{"kind": "note", "channel": "C1", "ts": "earlier"}],
        "step": {"done": ["posted"]},
    }
    env.info = dataclasses.replace(env.info, heartbeat_details=[record])
    beats = []
    env.on_heartbeat = lambda *details: beats.append(details[0])
    result = await env.run(DeliveryActivities(None, notify).deliver, a_round())

    assert seen_step == [{"done": ["posted"]}]  # only event 4, resumed half-way
    assert result.notify == LaneOutcome(sent=4)
    assert [m.ts for m in result.messages] == ["earlier"]
    assert beats[-1]["notified"] == 4 and beats[-1][progress.STEP] is None


@pytest.mark.parametrize("name", [names.DELIVER_AUDIT, names.SEND_NOTIFICATION])
def test_the_worker_adds_rounds_wherever_it_has_a_lane(name):
    from temporalio import activity

    from worker import with_delivery_rounds

    @activity.defn(name=name)
    async def lane(_: object) -> None: ...

    @activity.defn(name="other")
    async def other(_: object) -> None: ...

    added = with_delivery_rounds([lane, other])
    definitions = [activity._Definition.must_from_callable(f).name for f in added]
    assert definitions == [name, "other", names.DELIVER_ROUND]
    assert with_delivery_rounds([other]) == [other]
