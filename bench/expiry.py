"""Many grants active at once, all expiring in the same second: revoke lag, and what it costs.

    .venv/bin/python -m bench.expiry --requests 1000
    .venv/bin/python -m bench.expiry --requests 10000 --skip-bare   # the 10 000-grant run

For Keycard and then the bare workflow (bench/bare.py), against one dev server and one moto server
behind the AWS-counting proxy of bench.compare: N people each get a grant; once all are ACTIVE,
each Keycard request is extended (the product's own path) so that every one ends within the same
second T (just after the last of their first ends: extensions only lengthen), and each bare
workflow's timer is set to the same kind of moment. Revoke lag is, per grant, the moment the
proxy saw its DeleteAccountAssignment minus its scheduled end. Reports the lag's p50 / p99 / max,
how many were created and removed, the benchmark process's RSS with every grant active (worker and
clients: an upper bound for the worker), and the Temporal dev server's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiohttp import web
from temporalio.client import Client

from bench.bare import BareAssignment, BareGrantWorkflow, BareInput
from bench.compare import ACCOUNT, APPROVER, CountingProxy, config_text, pct, stage
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import Requester, RequestState
from starter.client import KeycardClient


class DeleteClock(CountingProxy):
    """The counting proxy, also noting when each principal's assignment was deleted."""

    def __init__(self, moto: str):
        super().__init__(moto)
        self.deleted: dict[str, float] = {}  # principal id -> epoch seconds

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("X-Amz-Target", "").endswith("DeleteAccountAssignment"):
            body = json.loads(await request.read() or b"{}")
            self.deleted.setdefault(body.get("PrincipalId", ""), time.time())
        return await super().handle(request)


GRANT_SECONDS: int | None = None  # --grant-seconds


def grant_seconds(requests: int) -> int:
    """How long each grant first lasts: long enough for every grant to be made and extended
    before the first one ends. 1000 took 259 s to be asked, approved and made on the 2-core
    machine, and their first ends came soon after: two requests a second leaves room."""
    return GRANT_SECONDS or max(120, math.ceil(requests / 2))


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def dev_server_pid() -> int | None:
    """The Temporal dev server this process started (a child running `server start-dev`)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().split(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == os.getpid() and b"start-dev" in cmdline:
            return int(entry.name)
    return None


async def gather_limited(limit: int, calls) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(call):
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


async def keycard_case(client: Client, keycard: KeycardClient, people, args, clock: DeleteClock):
    ids = [f"req-expiry-{uuid.uuid4().hex[:12]}" for _ in people]
    began = time.perf_counter()
    await gather_limited(
        args.concurrency,
        (
            keycard.request(
                flow="bench",
                target="prod",
                duration=f"{grant_seconds(len(people))}s",
                reason="",
                requester=Requester(email=person),
                request_id=request_id,
            )
            for person, request_id in zip(people, ids, strict=True)
        ),
    )
    await gather_limited(args.concurrency, (keycard.approve(i, APPROVER) for i in ids))
    views = await until_active(keycard, ids, args.deadline)
    created = sum(v.state is RequestState.ACTIVE for v in views)
    print(f"keycard: {created}/{len(ids)} ACTIVE after {time.perf_counter() - began:.0f} s")
    # One common end: just after the last grant's own end, which every extension moves to.
    firsts = [v.expires_at for v in views if v.expires_at is not None]
    target = datetime.fromtimestamp(math.ceil(max(firsts).timestamp()) + 1, UTC)
    extended = await gather_limited(
        args.concurrency,
        (
            keycard.extend(
                v.id,
                APPROVER,
                timedelta(seconds=math.ceil((target - v.expires_at).total_seconds())),
            )
            for v in views
            if v.expires_at is not None
        ),
    )
    ends = {v.requester.email: v.expires_at.timestamp() for v in extended if v.expires_at}
    return ends, views


async def until_active(keycard: KeycardClient, ids: list[str], deadline: float):
    """Once visibility says none is PENDING or GRANTING (asking each request by query would need
    the very worker the burst keeps busy), every request's view."""
    start = time.perf_counter()
    waiting = " OR ".join(
        f"{names.SA_STATE.name} = '{s.value}'"
        for s in (RequestState.PENDING, RequestState.GRANTING)
    )
    query = f"WorkflowId STARTS_WITH 'req-expiry-' AND ExecutionStatus = 'Running' AND ({waiting})"
    while time.perf_counter() - start < deadline:
        if (await keycard.temporal.count_workflows(query)).count == 0:
            break
        await asyncio.sleep(2)
    return await gather_limited(20, (keycard.get(i) for i in ids))


async def bare_case(client: Client, people, args, directory: dict[str, str]):
    end = math.ceil(time.time() + grant_seconds(len(people)))
    began = time.perf_counter()
    handles = await gather_limited(
        args.concurrency,
        (
            client.start_workflow(
                BareGrantWorkflow.run,
                BareInput(
                    assignment=BareAssignment(
                        instance_arn=directory["instance_arn"],
                        account_id=ACCOUNT,
                        permission_set_arn=directory["permission_set_arn"],
                        principal_id=directory[person],
                    ),
                    until=datetime.fromtimestamp(end, UTC),
                ),
                id=f"bare-expiry-{uuid.uuid4().hex[:12]}",
                task_queue="bench-bare",
            )
            for person in people
        ),
    )
    await gather_limited(
        args.concurrency, (h.execute_update(BareGrantWorkflow.approve) for h in handles)
    )
    while True:
        active = await gather_limited(50, (h.query(BareGrantWorkflow.is_active) for h in handles))
        if all(active) or time.perf_counter() - began > args.deadline:
            break
        await asyncio.sleep(2)
    print(f"bare: {sum(active)}/{len(handles)} active after {time.perf_counter() - began:.0f} s")
    return {person: float(end) for person in people}


async def wait_for_ends(clock: DeleteClock, ends: dict[str, float], directory, deadline: float):
    """Until every grant's assignment is deleted, or `deadline` seconds past the common end."""
    last = max(ends.values())
    while time.time() < last + deadline:
        if all(directory[p] in clock.deleted for p in ends):
            break
        await asyncio.sleep(1)
    return [
        clock.deleted[directory[p]] - end
        for p, end in ends.items()
        if directory[p] in clock.deleted
    ]


def lag_line(name: str, lags: list[float], total: int, rss: float, server_rss: float) -> str:
    if not lags:
        return f"| {name} | 0/{total} | | | | {rss:.0f} MiB | {server_rss:.0f} MiB |"
    ms = [1000 * lag for lag in lags]
    return (
        f"| {name} | {len(lags)}/{total} | {pct(ms, 0.5):,.0f} ms | {pct(ms, 0.99):,.0f} ms "
        f"| {max(ms):,.0f} ms | {rss:.0f} MiB | {server_rss:.0f} MiB |"
    )


async def main(args) -> int:
    people = [f"person{n:05d}@example.com" for n in range(args.requests)]
    workdir = Path(tempfile.mkdtemp(prefix="keycard-expiry-"))
    config = parse_config(config_text(people, grant_seconds(len(people)), workdir / "audit.jsonl"))
    lines = [
        f"{args.requests} grants ending in the same second; {os.cpu_count()} CPUs; "
        f"{datetime.now().astimezone():%Y-%m-%d %H:%M}",
        "",
        "| system | removed | lag p50 | lag p99 | lag max | process RSS, all active "
        "| dev server RSS |",
        "|---|---|---|---|---|---|---|",
    ]
    clocks: list[DeleteClock] = []

    def delete_clock(moto_url: str) -> DeleteClock:
        clocks.append(DeleteClock(moto_url))
        return clocks[-1]

    async with stage(config, delete_clock) as on:
        [clock], server = clocks, dev_server_pid()
        ends, _ = await keycard_case(on.client, on.keycard, people, args, clock)
        rss, server_rss = rss_mib(), rss_mib(server) if server else float("nan")
        lags = await wait_for_ends(clock, ends, on.directory, args.deadline)
        lines.append(lag_line("Keycard", lags, len(people), rss, server_rss))
        if not args.skip_bare:
            clock.deleted.clear()
            ends = await bare_case(on.client, people, args, on.directory)
            rss, server_rss = rss_mib(), rss_mib(server) if server else float("nan")
            lags = await wait_for_ends(clock, ends, on.directory, args.deadline)
            lines.append(lag_line("bare", lags, len(people), rss, server_rss))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--deadline", type=float, default=900, help="seconds per phase, at most")
    parser.add_argument("--skip-bare", action="store_true", help="Keycard only")
    parser.add_argument("--grant-seconds", type=int, help="each grant's first length (smoke runs)")
    arguments = parser.parse_args()
    GRANT_SECONDS = arguments.grant_seconds
    raise SystemExit(asyncio.run(main(arguments)))
