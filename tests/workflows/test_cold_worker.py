"""Requests decided on a worker that must rebuild them from history, as a restarted or redeployed
worker does (defect 2: TMPRL1100 "Activity machine does not handle this event: TimerCanceled")."""

from __future__ import annotations

import asyncio
import uuid

from temporalio import activity

from activities.audit import AuditActivities
from activities.leases import LeaseActivities
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import Notification, NotificationResult, RequestState, RequestView
from starter.client import KeycardClient
from tests.fakes import FakeCloud
from tests.harness import BOB, CONFIG, MemorySink, Stack, ask, state_is
from worker import WORKFLOWS, keycard_replayer, keycard_worker


class SlowNotifier:
    """A chat that takes a moment, so that notifications and audit deliveries complete in
    workflow tasks of their own, some of which then have nothing to do."""

    @activity.defn(name=names.SEND_NOTIFICATION)
    async def send(self, notification: Notification) -> NotificationResult:
        await asyncio.sleep(0.25)
        return NotificationResult(messages=notification.messages)


async def test_decisions_apply_on_a_worker_that_rebuilds_every_request(dev_env):
    cloud, audit = FakeCloud(), MemorySink()
    task_queue = f"test-{uuid.uuid4()}"
    worker = keycard_worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            *cloud.activities("aws_sso"),
            *cloud.session_activities(),
            LeaseActivities(dev_env.client, task_queue).take_lease,
            LeaseActivities(dev_env.client, task_queue).request_end_sessions,
            AuditActivities([audit]).deliver,
            SlowNotifier().send,
        ],
        # No cache: every workflow task rebuilds the workflow from its history.
        max_cached_workflows=0,
    )
    async with worker:
        keycard = KeycardClient(dev_env.client, parse_config(CONFIG), task_queue)
        stack = Stack(keycard, cloud, audit, task_queue, dev_env.client)
        views = [await ask(stack) for _ in range(8)]
        # Approvals land at different points of the requests' delivery: on 3.5 runs in 5 without
        # the fix, at least one request's approval found the task order it could not replay.
        for index, view in enumerate(views):
            await asyncio.sleep(0.15 * index)
            await asyncio.wait_for(keycard.approve(view.id, BOB), timeout=20)
        for view in views:
            await state_is(stack, view.id, RequestState.ACTIVE)
            await keycard.revoke(view.id, BOB)

        replayer = keycard_replayer()
        for view in views:
            handle = dev_env.client.get_workflow_handle(view.id, result_type=RequestView)
            final = await asyncio.wait_for(handle.result(), timeout=30)
            assert final.state is RequestState.ENDED
            replay = await replayer.replay_workflow(
                await handle.fetch_history(), raise_on_replay_failure=False
            )
            assert replay.replay_failure is None, f"{view.id}: {replay.replay_failure}"
