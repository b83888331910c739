"""Waits in workflow code that a cancel request from Temporal does not break off."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow

T = TypeVar("T")


async def wait_until(condition: Callable[[], bool], timeout: timedelta | None = None) -> None:
    """`workflow.wait_condition`, carried on through a cancel request from Temporal.

    Keycard's workflows take such a request as a decision (a request cancels or revokes itself;
    a grant, the only writer of its assignment, ends only with its leases), so it must not break
    off their waits. The SDK, applying an activation's jobs as one batch, raises CancelledError
    once out of every wait that was pending when the request arrived; this wait goes on to its
    condition or its original deadline (TimeoutError). A cancel of the task itself still ends it.
    """
    deadline = None if timeout is None else workflow.now() + timeout
    while True:
        remaining = None if deadline is None else deadline - workflow.now()
        if remaining is not None and remaining <= timedelta(0):
            if condition():
                return
            raise TimeoutError
        try:
            await workflow.wait_condition(condition, timeout=remaining)
            return
        except asyncio.CancelledError:
            if _task_itself_cancelled():
                raise


async def run_through_cancel(
    work: Awaitable[T], on_cancel: Callable[[str], None] | None = None
) -> T:
    """Run a workflow's main line as its own task, so that a cancel request from Temporal never
    interrupts it half-way (an AWS call, a removal); `on_cancel(reason)` turns the request into
    whatever decision the workflow makes of it."""
    task = asyncio.ensure_future(work)
    while True:
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            reason = workflow.cancellation_reason()
            if reason is None or task.done():
                raise
            if on_cancel is not None:
                on_cancel(reason)


def _task_itself_cancelled() -> bool:
    if workflow.cancellation_reason() is None:
        return True  # not Temporal's request: an ordinary asyncio cancellation
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
