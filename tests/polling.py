"""The one way tests wait: re-check a condition until it holds, within a deadline, never a sleep."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

PAUSE = 0.05  # seconds between checks


async def eventually(
    check: Callable[[], Any], what: str = "the condition", timeout: float = 30.0
) -> Any:
    """Re-check `check` (a function, or an async one) until it returns something truthy, and
    return that; fail naming `what` once `timeout` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(PAUSE)
