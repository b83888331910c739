"""The time-skipping test server stays usable for the whole session, whatever a test does.

Its clock stops while anything holds it, and two things used to hold it for good, so that every
later test's timers ran in real time until CI gave up: the SDK's `handle.result()` locking
twice when cancelled during its lock (tests/conftest.py, _balanced_unlock), and a workflow
terminated while its activity ran (tests/fakes.py, terminate_when_idle).
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.conftest import _binary
from tests.fakes import terminate_when_idle


@workflow.defn(sandboxed=False)
class Nap:
    @workflow.run
    async def run(self) -> str:
        await workflow.sleep(timedelta(days=1))
        return "rested"


working = asyncio.Event()


@activity.defn
async def brief_work() -> None:
    working.set()
    await asyncio.sleep(0.5)


@workflow.defn(sandboxed=False)
class Works:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(brief_work, start_to_close_timeout=timedelta(hours=1))
        await workflow.sleep(timedelta(hours=1))


async def days_pass(env: WorkflowEnvironment, task_queue: str) -> bool:
    """Whether a day-long timer ends within seconds, as it does while time skips."""
    nap = env.client.execute_workflow(Nap.run, id=f"nap-{uuid.uuid4()}", task_queue=task_queue)
    try:
        return await asyncio.wait_for(nap, timeout=5) == "rested"
    except TimeoutError:
        return False


@pytest.mark.parametrize("idle_first", [False, True])
async def test_terminating_a_workflow_mid_activity_stops_the_clock_unless_idle_first(idle_first):
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )  # a server of its own: the failing case breaks it for good
    try:
        async with Worker(
            env.client, task_queue="q", workflows=[Works, Nap], activities=[brief_work]
        ):
            working.clear()
            handle = await env.client.start_workflow(Works.run, id="works", task_queue="q")
            await working.wait()
            if idle_first:
                await terminate_when_idle(handle, "test over")
            else:
                await handle.terminate("test over")
            await asyncio.sleep(1)  # the activity finishes; the server refuses its completion
            assert await days_pass(env, "q") is idle_first
    finally:
        await env.shutdown()


async def test_a_cancel_while_relocking_leaves_time_skipping_working(time_env, monkeypatch):
    service = time_env.client.service_client.test_service
    lock = service.lock_time_skipping

    async def locked_then_cancelled(request, **options):
        await lock(request, **options)  # the server counted it...
        raise asyncio.CancelledError  # ...and then the waiting task was cancelled

    monkeypatch.setattr(service, "lock_time_skipping", locked_then_cancelled)
    with pytest.raises(asyncio.CancelledError):
        async with time_env.time_skipping_unlocked():
            pass
    monkeypatch.undo()

    # Locked exactly once: a day-long timer still ends at once.
    task_queue = f"nap-{uuid.uuid4()}"
    async with Worker(time_env.client, task_queue=task_queue, workflows=[Nap]):
        rested = time_env.client.execute_workflow(
            Nap.run, id=f"nap-{uuid.uuid4()}", task_queue=task_queue
        )
        assert await asyncio.wait_for(rested, timeout=20) == "rested"
