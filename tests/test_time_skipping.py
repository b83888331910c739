"""The time-skipping test server: what stops its clock, and what the suite does about it.

Its clock stops while anything holds it, and a held clock makes every later timer on that server
run in real time. Two holds came from the client side and are fixed there: the SDK's
`handle.result()` locking twice when cancelled during its lock (tests/conftest.py,
_balanced_unlock), and a workflow terminated while its activity ran (tests/fakes.py,
terminate_when_idle). Two come from the server itself and cannot be fixed from here: a workflow
task that no worker will take (a workflow left open after its worker stopped, whose timer fires
later), and a workflow task refused because the timer it cancels fired in real time while the task
ran (temporalio/sdk-java#3088). So each test gets a server of its own (tests/conftest.py,
time_env), and a stall costs the test that caused it, not the rest of the run.
"""

from __future__ import annotations

import asyncio
import time
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


async def test_a_workflow_left_open_stops_the_clock_when_its_timer_fires():
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        async with Worker(
            env.client, task_queue="left", workflows=[Works], activities=[brief_work]
        ):
            working.clear()
            await env.client.start_workflow(Works.run, id="works", task_queue="left")
            await working.wait()  # then an hour's timer, fired after this worker is gone
        async with Worker(env.client, task_queue="next", workflows=[Nap]):
            assert not await days_pass(env, "next")
    finally:
        await env.shutdown()


@workflow.defn(sandboxed=False)
class SlowToWake:
    def __init__(self) -> None:
        self.woken = False

    @workflow.signal
    def wake(self) -> None:
        time.sleep(1.5)  # a slow workflow task, while the one-second timer fires in real time
        self.woken = True

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: self.woken, timeout=timedelta(seconds=1))
        await workflow.sleep(timedelta(hours=1))


async def test_a_timer_cancelled_after_it_fired_in_real_time_stops_the_clock():
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        async with Worker(env.client, task_queue="q", workflows=[SlowToWake, Nap]):
            handle = await env.client.start_workflow(SlowToWake.run, id="slow", task_queue="q")
            await asyncio.sleep(0.2)  # its first task is done, the timer set
            await handle.signal(SlowToWake.wake)
            # The server refuses the task that cancels the fired timer, and holds its clock for
            # a retry that fails the same way.
            assert not await days_pass(env, "q")
    finally:
        await env.shutdown()


async def test_each_test_has_a_time_skipping_server_of_its_own(time_env):
    """A server stalled as above, in an earlier test, would show here as a timer in real time."""
    async with Worker(time_env.client, task_queue="q", workflows=[Nap]):
        assert await days_pass(time_env, "q")


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
