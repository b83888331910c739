"""Delivering a request's events: to every audit destination, to people (notifications) and to
the flow's after_* hooks, each at its own pace beside the lifecycle, so a destination that is down
delays only itself, never the access."""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows.request import calls
from workflows.request.record import RequestRecord
from workflows.waiting import wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.models import (
        AuditBatch,
        DeliveryRound,
        Notification,
    )


class Delivery(RequestRecord):
    async def _deliver_audit(self) -> None:
        """Every audit destination gets every event, in order, at its own pace: one that is down
        delays only its own delivery, never the access and never the other destinations."""
        destinations = self._s.input.audit_destinations
        await asyncio.gather(*(self._deliver_audit_to(d) for d in destinations))

    async def _deliver_audit_to(self, destination: str) -> None:
        sent = self._s.audit_sent
        while True:
            await wait_until(lambda: sent.get(destination, 0) < len(self._s.outbox))
            start = sent.get(destination, 0)
            batch = self._s.outbox[start : start + names.AUDIT_BATCH_MAX]
            await calls.deliver_audit(AuditBatch(destination=destination, events=batch))
            sent[destination] = start + len(batch)

    async def _deliver_notifications(self) -> None:
        """Tell people, in order; a chat outage delays the messages, never the access."""
        while True:
            await wait_until(lambda: self._s.notified < len(self._s.outbox))
            index = self._s.notified
            result = await calls.send_notification(
                Notification(
                    event=self._s.outbox[index],
                    view=self._s.views[index],
                    messages=self._s.messages,
                    flow=self._flow,
                )
            )
            self._s.messages = result.messages
            self._s.notified += 1

    async def _deliver_in_rounds(self) -> None:
        while True:
            await wait_until(lambda: bool(self._behind_in_rounds()))
            lanes = self._behind_in_rounds()
            first = min(self._cursor(lane) for lane in lanes)
            events = self._s.outbox[first : first + names.AUDIT_BATCH_MAX]
            notify_from = self._s.notified if names.NOTIFY_LANE in lanes else None
            self._round_in_flight = True
            try:
                result = await calls.deliver_round(
                    DeliveryRound(
                        first=first,
                        events=events,
                        audit={d: self._cursor(d) for d in lanes if d != names.NOTIFY_LANE},
                        notify_from=notify_from,
                        views=(
                            self._s.views[notify_from : first + len(events)]
                            if notify_from is not None
                            else []
                        ),
                        messages=self._s.messages if notify_from is not None else [],
                        flow=self._flow if notify_from is not None else None,
                    )
                )
            finally:
                self._round_in_flight = False
            outcomes = dict(result.audit)
            if result.notify is not None:
                outcomes[names.NOTIFY_LANE] = result.notify
                self._s.messages = result.messages
            for lane, outcome in outcomes.items():
                self._advance(lane, max(outcome.sent, self._cursor(lane)))
                if outcome.error is not None and lane not in self._s.lagging:
                    self._s.lagging.append(lane)

    async def _catch_up(self, lane: str) -> None:
        """A lane that fell behind in a round, delivered alone, retried until it succeeds."""
        while True:
            await wait_until(
                lambda: lane in self._s.lagging and self._cursor(lane) < len(self._s.outbox)
            )
            start = self._cursor(lane)
            if lane == names.NOTIFY_LANE:
                result = await calls.send_notification(
                    Notification(
                        event=self._s.outbox[start],
                        view=self._s.views[start],
                        messages=self._s.messages,
                        flow=self._flow,
                    )
                )
                self._s.messages = result.messages
                self._advance(lane, start + 1)
            else:
                batch = self._s.outbox[start : start + names.AUDIT_BATCH_MAX]
                await calls.deliver_audit(AuditBatch(destination=lane, events=batch))
                self._advance(lane, start + len(batch))
            if self._cursor(lane) == len(self._s.outbox):
                self._s.lagging.remove(lane)  # caught up: back in the rounds
