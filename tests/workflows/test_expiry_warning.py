"""The requester is warned a flow's `expiry_warning` before access ends (time-skipping server)."""

from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio import activity

from activities.audit import AuditActivities
from activities.leases import LeaseActivities
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import (
    ApproveInput,
    ExtendInput,
    Notification,
    NotificationResult,
    RequestView,
)
from starter.client import KeycardClient
from starter.protocol import Ask
from tests.fakes import FakeCloud
from tests.harness import ALICE, BOB, CONFIG, MemorySink, unique_id
from worker import WORKFLOWS, keycard_worker


class Recorder:
    """A notifier that only records what it was asked to send."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []

    @activity.defn(name=names.SEND_NOTIFICATION)
    async def send(self, notification: Notification) -> NotificationResult:
        self.notifications.append(notification)
        return NotificationResult(messages=notification.messages)


@asynccontextmanager
async def stack(env, config_text: str = CONFIG):
    recorder, audit, cloud = Recorder(), MemorySink(), FakeCloud()
    task_queue = f"test-{uuid.uuid4()}"
    async with keycard_worker(
        env.client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            *cloud.activities("aws_sso"),
            *cloud.session_activities(),
            LeaseActivities(env.client, task_queue).take_lease,
            LeaseActivities(env.client, task_queue).request_end_sessions,
            recorder.send,
            AuditActivities([audit]).deliver,
        ],
    ):
        keycard = KeycardClient(env.client, parse_config(config_text), task_queue)
        try:
            yield keycard, recorder, audit
        finally:
            await cloud.stop_writers(env.client)


async def approved(env, keycard: KeycardClient, duration: str):
    input = keycard.prepare(
        Ask(
            flow="prod-power-user",
            target="prod",
            duration=duration,
            reason="incident 4312",
            requester=ALICE,
        ),
        request_id=unique_id(),
    )
    handle = await env.client.start_workflow(
        names.ACCESS_REQUEST_WORKFLOW,
        input,
        id=input.request_id,
        task_queue=keycard.task_queue,
        result_type=RequestView,
    )
    await handle.signal("approve", ApproveInput(actor=BOB))
    return handle


async def test_warns_before_expiry_and_again_after_an_extension(time_env):
    async with stack(time_env) as (keycard, recorder, audit):
        handle = await approved(time_env, keycard, "1h")
        await time_env.sleep(timedelta(minutes=55))
        view = await handle.query(names.REQUEST_STATUS, result_type=RequestView)
        assert audit.types(view.id)[-1] == "access.expiring"
        first_expiry = view.expires_at
        await handle.signal("extend", ExtendInput(actor=BOB, duration=timedelta(minutes=30)))
        final = await handle.result()

    assert final.expires_at == first_expiry + timedelta(minutes=30)
    events = [e for e in audit.events if e.request_id == final.id]
    assert [e.type for e in events][-6:] == [
        "access.granted",
        "access.expiring",
        "access.extended",
        "access.expiring",
        "access.ended",
        "access.sessions_ended",
    ]
    warnings = [e for e in events if e.type == "access.expiring"]
    # Timers fire a few milliseconds late; ten minutes ahead is what matters.
    expiries = [first_expiry, final.expires_at]
    assert len(warnings) == len(expiries)
    leads = [expiry - w.time for w, expiry in zip(warnings, expiries, strict=True)]
    assert all(timedelta(minutes=9, seconds=59) <= lead <= timedelta(minutes=10) for lead in leads)
    warned = [
        n.view.expires_at for n in recorder.notifications if n.event.type == "access.expiring"
    ]
    assert warned == [first_expiry, final.expires_at]


async def test_access_shorter_than_the_warning_gets_none(time_env):
    async with stack(time_env) as (keycard, _, audit):
        final = await (await approved(time_env, keycard, "1m")).result()
    assert audit.types(final.id)[-3:] == [
        "access.granted",
        "access.ended",
        "access.sessions_ended",
    ]


async def test_a_flow_can_turn_the_warning_off(time_env):
    config = CONFIG.replace(
        "    allow_extension: true", "    allow_extension: true\n    expiry_warning: null"
    )
    async with stack(time_env, config) as (keycard, _, audit):
        final = await (await approved(time_env, keycard, "2h")).result()
    assert audit.types(final.id)[-3:] == [
        "access.granted",
        "access.ended",
        "access.sessions_ended",
    ]
