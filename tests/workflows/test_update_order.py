"""An update that reaches a request after a query has run it further still replays.

Found by `make chaos` (seed 2): a worker is SIGKILLed while a request waits for `lease.granted`.
The grant's signal schedules the request's next task on the dead worker's sticky queue, where it
waits for its 10 s schedule-to-start timeout. A status query sent meanwhile also waits on that
queue, then goes to another worker, which rebuilds the request and applies the waiting signal to
answer it: ACTIVE. A `revoke` sent on that answer rides the task when it times out and reaches
the same worker, where it is alone in its activation. History records the grant's work, then the
acceptance; replay hands over the signal and the update together, and the SDK used to accept
first: TMPRL1100 on every later task of the request. workflows/runner.py is the fix.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle, WorkflowHistory

from activities.leases import LeaseActivities
from keycard.config import parse_config
from keycard.models import RequestState, RequestView, TakeLeaseInput
from starter.client import KeycardClient
from tests.harness import BOB, CONFIG, ask, running_stack
from tests.polling import eventually
from worker import keycard_replayer

REPO = Path(__file__).resolve().parents[2]


async def test_an_update_after_a_query_that_ran_ahead_replays(dev_env, tmp_path):
    client = dev_env.client
    task_queue = f"test-{uuid.uuid4()}"
    keycard = KeycardClient(client, parse_config(CONFIG), task_queue)
    takes = tmp_path / "take.json"
    doomed = _start_doomed_worker(client.service_client.config.target_host, task_queue, takes)
    try:
        view = await asyncio.wait_for(ask(keycard), timeout=60)
        await keycard.approve(view.id, BOB)
        handle = client.get_workflow_handle(view.id, result_type=RequestView)
        await _until(takes.exists, "the doomed worker to take the lease")
        await _until_quiet(handle)
    finally:
        doomed.kill()
        doomed.wait()

    async with running_stack(client, task_queue=task_queue) as stack:
        # Sent while nothing else is pending: it waits on the dead worker's sticky queue.
        answered = asyncio.create_task(_active_at(stack.keycard, view.id))
        await asyncio.sleep(2)
        await LeaseActivities(client, task_queue).take_lease(
            TakeLeaseInput.model_validate_json(takes.read_text(encoding="utf-8"))
        )
        seen_active_at = await asyncio.wait_for(answered, timeout=60)
        revoked = await asyncio.wait_for(stack.keycard.revoke(view.id, BOB), timeout=60)
        assert revoked.state is RequestState.ACTIVE  # the revoke ran after the grant's work
        final = await asyncio.wait_for(handle.result(), timeout=60)
        assert final.state is RequestState.ENDED

    history = await handle.fetch_history()
    # The situation arose: the query saw ACTIVE before any task recording the grant completed,
    # and that task also accepted the revoke.
    granted_task = _task_accepting(history, "revoke")
    assert seen_active_at < granted_task.event_time.ToDatetime(tzinfo=UTC)
    assert _types_between(history, granted_task.event_id)[:1] == [
        EventType.EVENT_TYPE_TIMER_CANCELED
    ]
    assert any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT for e in history.events)

    replay = await keycard_replayer().replay_workflow(history, raise_on_replay_failure=False)
    assert replay.replay_failure is None, replay.replay_failure


def _start_doomed_worker(address: str, task_queue: str, takes: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "tests.workflows.doomed_worker", address, task_queue]
    log = takes.with_name("doomed.log").open("wb")
    return subprocess.Popen([*command, str(takes)], cwd=REPO, stdout=log, stderr=log)


async def _active_at(keycard: KeycardClient, request_id: str) -> datetime:
    async def active() -> bool:
        return (await keycard.get(request_id)).state is RequestState.ACTIVE

    await eventually(active, timeout=60)
    return datetime.now(UTC)


async def _until(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def _until_quiet(handle: WorkflowHandle) -> None:
    """Until the request has no activity and no workflow task pending, for a second."""
    quiet_since = None
    deadline = time.monotonic() + 30
    while quiet_since is None or time.monotonic() - quiet_since < 1:
        assert time.monotonic() < deadline, "the request never settled"
        described = (await handle.describe()).raw_description
        busy = described.pending_activities or described.HasField("pending_workflow_task")
        quiet_since = None if busy else (quiet_since or time.monotonic())
        await asyncio.sleep(0.1)


def _task_accepting(history: WorkflowHistory, update: str):
    """The WorkflowTaskCompleted event of the task that accepted `update`."""
    completed = None
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            completed = event
        accepted = event.workflow_execution_update_accepted_event_attributes
        if accepted.accepted_request.input.name == update:
            assert completed is not None
            return completed
    raise AssertionError(f"no {update} update was accepted")


def _types_between(history: WorkflowHistory, completed_id: int) -> list[int]:
    """The types of the events a workflow task's completion recorded."""
    types = []
    for event in history.events:
        if event.event_id <= completed_id:
            continue
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED:
            break
        types.append(event.event_type)
    return types
