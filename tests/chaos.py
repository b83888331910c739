"""Chaos run of the real processes: are grants never early, never stuck, always removed?

    .venv/bin/python -m tests.chaos --seed 7 --requests 100 --kills 30     (`make chaos`: 3 seeds)

Starts a Temporal dev server on a SQLite file, two `keycard worker` processes, and a moto server
that the workers reach only through a fault-injecting proxy of ours (a share of AWS calls
answered 500 or ThrottlingException, plus a window where every call gets 503). Overlapping
requests for several people (one of whom already holds the access: standing access) are approved,
some revoked early, some cancelled while pending; a share name two targets (two accounts) under
one approval, each its own lease, and every check below is made per target. Meanwhile workers are SIGKILLed at random and
restarted, and the Temporal server is restarted once. AWS is sampled directly (not through the
proxy) several times a second, and at the end the run checks:

- every approved request went ACTIVE and then ENDED; every cancelled one is CANCELLED;
- no sample shows a person without the assignment while one of their requests was ACTIVE;
- the grants created the assignment once per group of overlapping leases (a lease runs from its
  grant until the grant takes in its return), and the AWS samples saw it appear as often
  (standing access: never created);
- revocation lateness (end of the ACTIVE window to assignment gone), p99 within 60 s plus the
  AWS outage;
- only standing access is left at the end, and no workflow is left open (but the permission
  set's session-policy writer, holding its deny entries, with nothing left to write);
- end_sessions: every removal is followed by `access.sessions_ended`, and the permission set's
  inline policy in AWS denies each person's sessions of their last grant, and nobody else's;
- every request's audit trail is complete (ids 1..n, from request.created to its end) and no id
  names two different events;
- every history (requests and grants) replays offline with the current code.

It prints a table and exits non-zero if any check fails. tests/test_chaos.py runs a short one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
from aiohttp import ClientSession, web
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError

from keycard import session_policy
from keycard import temporal as names
from keycard.audit_chain import verify_chain
from keycard.config import parse_config
from keycard.models import (
    PER_TARGET_EVENTS,
    Actor,
    LeaseReturn,
    Requester,
    RequestState,
    RequestView,
)
from starter.client import KeycardClient
from starter.run.demo_aws import DEMO_CREDENTIALS, seed_demo, start_moto_server
from starter.run.dev import temporal_binary
from worker import keycard_replayer

REGION = "us-east-1"
ACCOUNT = "111111111111"
# The flow's targets: prod (where STANDING already holds the access) and dr, a second account.
ACCOUNTS = {"prod": ACCOUNT, "dr": "222222222222"}
BOTH_SHARE = 0.3  # of the requests, those naming both targets
PEOPLE = ["alice@example.com", "bob@example.com", "carol@example.com"]
STANDING = "dave@example.com"  # holds the access before Keycard: never removed
APPROVER = Actor(email="erin@example.com")
CONFIG = f"""
approver_groups:
  approvers: [erin@example.com]
  requesters: [alice@example.com, bob@example.com, carol@example.com, dave@example.com]
flows:
  - name: chaos
    strategy: aws_sso
    targets:
      - {{name: prod, account_id: "{ACCOUNT}", permission_set: PowerUserAccess}}
      - {{name: dr, account_id: "{ACCOUNTS["dr"]}", permission_set: PowerUserAccess}}
    durations: [20s, 30s, 45s]
    max_duration: 2m
    reason_required: false
    approvers: {{groups: [approvers]}}
    requesters: {{groups: [requesters]}}
    approval_timeout: 30m
audit:
  destinations:
    - {{type: jsonl, name: trail, path: "{{audit_path}}"}}
"""
SAMPLE_EVERY = 0.2
LATENESS_LIMIT = 60.0
ENDINGS = {
    "access.ended",
    "access.revoked",
    "request.cancelled",
    "request.denied",
    "request.expired",
    "access.grant_failed",
}


def ended_as_it_should(trail: list[dict]) -> bool:
    """The trail ends in one of ENDINGS; an ending that removed the access is followed by
    `access.sessions_ended` (end_sessions is on: the removal's sessions must be cut, outages and
    kills notwithstanding)."""
    types = [e["type"] for e in trail]
    if types[-1] == "access.sessions_ended":
        return len(types) >= 2 and types[-2] in {"access.ended", "access.revoked"}
    return types[-1] in ENDINGS and not trail[-1].get("detail", {}).get("removed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- AWS: moto behind a proxy that fails on purpose ---------------------------------------------


@dataclass
class FaultyAws:
    """Forwards to moto, but answers a share of calls with an error instead (the call is never
    forwarded, so AWS state changes only through calls that really went through)."""

    moto: str
    rng: random.Random
    fault_rate: float
    outage: tuple[float, float] | None = None  # monotonic start, end
    faults: int = 0
    forwarded: int = 0
    session: ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        if self.outage and self.outage[0] <= now < self.outage[1]:
            self.faults += 1
            return web.Response(status=503, text="Service Unavailable")
        if self.rng.random() < self.fault_rate:
            self.faults += 1
            if self.rng.random() < 0.5:
                body = {"__type": "ThrottlingException", "message": "Rate exceeded"}
                return web.json_response(body, status=400)
            body = {"__type": "InternalServerException", "message": "injected"}
            return web.json_response(body, status=500)
        assert self.session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with self.session.request(
            request.method, self.moto + request.path_qs, data=await request.read(), headers=headers
        ) as answer:
            self.forwarded += 1
            skip = {"content-length", "transfer-encoding", "content-encoding", "connection"}
            return web.Response(
                status=answer.status,
                body=await answer.read(),
                headers={k: v for k, v in answer.headers.items() if k.lower() not in skip},
            )

    async def serve(self, port: int) -> web.AppRunner:
        self.session = ClientSession()
        app = web.Application(client_max_size=10 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        return runner


Samples = list[tuple[datetime, frozenset[str]]]


@dataclass
class Sampler:
    """Who holds the assignment in each target's account, read from moto directly, several times
    a second."""

    sso: object
    instance_arn: str
    permission_set_arn: str
    people_by_id: dict[str, str]
    by_target: dict[str, Samples] = field(default_factory=lambda: {t: [] for t in ACCOUNTS})

    @property
    def samples(self) -> Samples:
        return self.by_target["prod"]

    def read(self, account: str) -> frozenset[str]:
        pages = self.sso.get_paginator("list_account_assignments").paginate(  # type: ignore[attr-defined]
            InstanceArn=self.instance_arn,
            AccountId=account,
            PermissionSetArn=self.permission_set_arn,
        )
        return frozenset(
            self.people_by_id.get(a["PrincipalId"], a["PrincipalId"])
            for page in pages
            for a in page["AccountAssignments"]
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            # Every account read at once: one sample per account and moment, as finely as one.
            at = datetime.now(UTC)
            reads = await asyncio.gather(
                *(asyncio.to_thread(self.read, account) for account in ACCOUNTS.values())
            )
            for target, holders in zip(ACCOUNTS, reads, strict=True):
                self.by_target[target].append((at, holders))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), SAMPLE_EVERY)


# --- processes -------------------------------------------------------------------------------


class Temporal:
    """The dev server on a SQLite file, so that it can be stopped and started again."""

    def __init__(self, root: Path) -> None:
        self.db = root / "temporal.sqlite"
        self.port = free_port()
        self.log = (root / "temporal.log").open("ab")
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [temporal_binary(), "server", "start-dev", "--headless"]
        command += ["--db-filename", str(self.db), "--port", str(self.port), "--ip", "127.0.0.1"]
        command += ["--http-port", str(free_port()), "--metrics-port", str(free_port())]
        command += ["--log-level", "error"]
        for key in names.SEARCH_ATTRIBUTES:
            command += ["--search-attribute", f"{key.name}=Keyword"]
        self.process = subprocess.Popen(command, stdout=self.log, stderr=self.log)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Worker:
    """A real `keycard worker` process, killed and restarted at will."""

    def __init__(self, name: str, root: Path, env: dict[str, str], config: Path) -> None:
        self.name, self.env, self.config = name, env, config
        self.log = (root / f"{name}.log").open("ab")
        self.process: subprocess.Popen | None = None
        self.kills = 0

    def start(self) -> None:
        keycard = str(Path(sys.executable).parent / "keycard")
        env = {**self.env, "KEYCARD_WORKER_HEALTH_PORT": str(free_port())}
        self.process = subprocess.Popen(
            [keycard, "worker", "--config", str(self.config)],
            env=env,
            stdout=self.log,
            stderr=self.log,
        )

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
            self.kills += 1

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


# --- the workload ----------------------------------------------------------------------------


@dataclass
class Planned:
    index: int
    person: str
    duration: str
    start_after: float
    action: str  # "approve", "revoke" (approve, then revoke early), "cancel"
    revoke_after: float = 0.0
    targets: tuple[str, ...] = ("prod",)
    request_id: str = ""
    revoke_called: datetime | None = None
    final: RequestView | None = None
    error: str | None = None


def plan(rng: random.Random, count: int, span: float) -> list[Planned]:
    planned = []
    for index in range(count):
        person = STANDING if index % 7 == 3 else rng.choice(PEOPLE)
        roll = rng.random()
        action = "cancel" if roll < 0.15 else "revoke" if roll < 0.35 else "approve"
        planned.append(
            Planned(
                index=index,
                person=person,
                duration=rng.choice(["20s", "30s", "45s"]),
                start_after=rng.uniform(0, span),
                action=action,
                revoke_after=rng.uniform(3, 15),
                targets=("prod", "dr") if rng.random() < BOTH_SHARE else ("prod",),
            )
        )
    return sorted(planned, key=lambda p: p.start_after)


async def retrying(call, what: str, deadline: float = 120.0):
    """Front doors retry while Temporal restarts; a refusal is an answer, not a fault."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            return await call()
        except (RPCError, ConnectionError, OSError, RuntimeError) as err:
            if time.monotonic() > give_up:
                raise RuntimeError(f"{what}: Temporal did not answer for {deadline:.0f}s") from err
            await asyncio.sleep(1)


async def drive(keycard: KeycardClient, item: Planned, started: float) -> None:
    await asyncio.sleep(max(0.0, started + item.start_after - time.monotonic()))
    item.request_id = f"req-chaos-{item.index:03d}-{os.urandom(3).hex()}"
    try:
        await retrying(
            lambda: keycard.request(
                flow="chaos",
                target=list(item.targets) if len(item.targets) > 1 else item.targets[0],
                duration=item.duration,
                reason="",
                requester=Requester(email=item.person),
                request_id=item.request_id,
            ),
            f"ask {item.request_id}",
        )
        if item.action == "cancel":
            await retrying(
                lambda: keycard.cancel(item.request_id, Actor(email=item.person)),
                f"cancel {item.request_id}",
            )
            return
        await retrying(lambda: keycard.approve(item.request_id, APPROVER), "approve")
        if item.action == "revoke":
            await asyncio.sleep(item.revoke_after)
            view = await retrying(lambda: keycard.get(item.request_id), "get")
            while view.state in (RequestState.PENDING, RequestState.GRANTING):
                await asyncio.sleep(0.5)
                view = await retrying(lambda: keycard.get(item.request_id), "get")
            if view.state is RequestState.ACTIVE:
                item.revoke_called = datetime.now(UTC)
                await retrying(lambda: keycard.revoke(item.request_id, APPROVER), "revoke")
    except Exception as err:  # a refusal (say, revoking after expiry) is recorded, not fatal
        item.error = f"{type(err).__name__}: {err}"


async def chaos_monkey(
    workers: list[Worker], temporal: Temporal, rng: random.Random, kills: int, span: float
) -> list[str]:
    """SIGKILL workers at random moments (each back 1-3 s later); restart Temporal once."""
    moments = sorted(rng.uniform(2, span) for _ in range(kills))
    restart_at = span * 0.45
    started, log = time.monotonic(), []
    for moment in moments:
        await asyncio.sleep(max(0.0, started + moment - time.monotonic()))
        if restart_at is not None and moment >= restart_at:
            log.append(f"{moment:6.1f}s restart Temporal")
            await asyncio.to_thread(temporal.stop)
            await asyncio.sleep(1)
            temporal.start()
            restart_at = None
        worker = rng.choice(workers)
        log.append(f"{moment:6.1f}s SIGKILL {worker.name}")
        worker.kill()
        await asyncio.sleep(rng.uniform(1, 3))
        worker.start()
    if restart_at is not None:  # fewer kills than needed to reach it
        await asyncio.to_thread(temporal.stop)
        temporal.start()
        log.append("restart Temporal")
    return log


# --- checks ----------------------------------------------------------------------------------


@dataclass
class Report:
    rows: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def add(self, name: str, value: object) -> None:
        self.rows.append((name, str(value)))

    def check(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def print(self) -> None:
        width = max(len(name) for name, _ in self.rows)
        for name, value in self.rows:
            print(f"| {name.ljust(width)} | {value}")
        print("\nPASS" if not self.problems else "\nFAIL:\n  " + "\n  ".join(self.problems))


def active_window(item: Planned, target: str = "prod") -> tuple[datetime, datetime] | None:
    """When the request held `target`: from its grant (that target's, of a request naming
    several) to its end, or the moment an early revoke was asked for."""
    view = item.final
    if target not in item.targets:
        return None
    if view is None or view.granted_at is None or view.expires_at is None:
        return None
    start = view.granted_at
    if view.targets:
        status = next((t for t in view.targets if t.name == target), None)
        if status is None or status.granted_at is None:
            return None  # this target failed: it was never held
        start = status.granted_at
    end = view.expires_at
    if item.revoke_called is not None:
        end = min(end, item.revoke_called)
    return start, end


def gaps_while_active(items: list[Planned], samples, target: str = "prod") -> list[str]:
    """Each request during whose ACTIVE window a sample shows its person without the access."""
    gaps = []
    for item in items:
        window = active_window(item, target)
        if window is None:
            continue
        start, end = window
        for at, holders in samples:
            if start <= at <= end and item.person not in holders:
                gaps.append(
                    f"{item.person} lacked the assignment in {target} at {at:%H:%M:%S.%f} while "
                    f"{item.request_id} was ACTIVE ({start:%H:%M:%S.%f} to {end:%H:%M:%S.%f})"
                )
                break
    return gaps


def late_by(windows: list[tuple[datetime, datetime]], samples, person: str):
    """(end, seconds) per group of overlapping ACTIVE windows: how long the person still held the
    access after the group's end. A group that began before the access was gone took it over: the
    access outlived the earlier group until then, not until its own removal."""
    merged: list[list[datetime]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    result = []
    for (_, end), following in zip(merged, [*merged[1:], None], strict=True):
        gone = next((at for at, h in samples if at > end and person not in h), None)
        if following is not None and (gone is None or following[0] < gone):
            gone = max(following[0], end)
        if gone is not None:
            result.append((end, (gone - end).total_seconds()))
    return result


def lease_returns(histories) -> dict[tuple[str, str], datetime]:
    """When each request's grant took in its lease's return, by (account, request id), from the
    grants' histories: the workflow task that handled the signal, which may come well after the
    signal arrived (no worker free, or none alive), and may take in a new lease in the same
    breath."""
    returned: dict[tuple[str, str], datetime] = {}
    for history in histories:
        if not history.workflow_id.startswith("grant:"):
            continue
        account = history.workflow_id.split(":")[2]  # grant:aws_sso:<account>:<ps>:<principal>
        arrived: list[str] = []
        for event in history.events:
            if event.HasField("workflow_task_completed_event_attributes"):
                for request_id in arrived:
                    at = event.event_time.ToDatetime(tzinfo=UTC)
                    returned.setdefault((account, request_id), at)
                arrived = []
            if not event.HasField("workflow_execution_signaled_event_attributes"):
                continue
            signal = event.workflow_execution_signaled_event_attributes
            if signal.signal_name == names.LEASE_RETURN:
                [lease] = pydantic_data_converter.payload_converter.from_payloads(
                    list(signal.input.payloads), [LeaseReturn]
                )
                arrived.append(lease.request_id)
    return returned


def grants_made(histories) -> dict[tuple[str, str], int]:
    """Per (account, principal id): how many times its grants created the assignment (grant
    activities that completed; a retried attempt inside one activity is one create)."""
    made: dict[tuple[str, str], int] = {}
    for history in histories:
        if not history.workflow_id.startswith("grant:"):
            continue
        parts = history.workflow_id.split(":")
        key = (parts[2], parts[-1])
        scheduled = {}
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = name
            if event.HasField("activity_task_completed_event_attributes"):
                done = event.activity_task_completed_event_attributes.scheduled_event_id
                if scheduled.get(done, "").endswith(".grant"):
                    made[key] = made.get(key, 0) + 1
    return made


def lease_groups(windows: list[tuple[datetime, datetime]]) -> int:
    return len(_merged(windows))


def sampled_groups(windows: list[tuple[datetime, datetime]], samples) -> int:
    """How many lease groups a sample fell inside: the ones the samples must show. A group
    shorter than the time between two samples (granted, then revoked at once) may be missed."""
    times = [at for at, _ in samples]
    return sum(any(start <= at <= end for at in times) for start, end in _merged(windows))


def _merged(windows: list[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    merged: list[list[datetime]] = []
    for start, end in sorted(windows):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(start, end) for start, end in merged]


def appearances(samples, person: str) -> int:
    count, held = 0, False
    for _, holders in samples:
        now = person in holders
        if now and not held:
            count += 1
        held = now
    return count


async def verify(
    report: Report,
    client: Client,
    planned: list[Planned],
    sampler: Sampler,
    audit_path: Path,
    outage_seconds: float,
) -> None:
    approved = [p for p in planned if p.action != "cancel"]
    for item in planned:
        view = item.final
        wanted = RequestState.CANCELLED if item.action == "cancel" else RequestState.ENDED
        report.check(
            view is not None and view.state is wanted,
            f"{item.request_id} ({item.action}) ended {view.state if view else 'open'}, "
            f"not {wanted}: {view.end_reason if view else item.error}",
        )
        if item.action != "cancel":
            report.check(
                view is not None and view.granted_at is not None,
                f"{item.request_id} was approved but never ACTIVE",
            )
            # Several targets: each granted (AWS fails only for a while here) and each ended.
            states = [(t.name, t.state) for t in view.targets] if view is not None else []
            report.check(
                len(item.targets) == 1 or states == [(t, "ended") for t in item.targets],
                f"{item.request_id}: its targets ended as {states}, not all granted and ended",
            )
    report.add("requests naming both targets", sum(len(p.targets) > 1 for p in planned))

    # No moment without the assignment while a request of theirs was ACTIVE.
    gaps = [
        gap
        for target in ACCOUNTS
        for gap in gaps_while_active(approved, sampler.by_target[target], target)
    ]
    report.problems.extend(gaps)
    report.add("moments without access while ACTIVE", len(gaps))

    histories = [
        await client.get_workflow_handle(execution.id, run_id=execution.run_id).fetch_history()
        async for execution in client.list_workflows()
    ]
    returned = lease_returns(histories)
    creates = {
        (account, sampler.people_by_id.get(principal, principal)): count
        for (account, principal), count in grants_made(histories).items()
    }

    def held(person: str, target: str) -> list[tuple[datetime, datetime]]:
        """A person's leases on a target: each from its grant until the grant had its return (a
        request that ends late may have returned it long before)."""
        account = ACCOUNTS[target]
        return [
            (w[0], returned.get((account, item.request_id)) or item.final.ended_at or w[1])  # type: ignore[union-attr]
            for item in approved
            if item.person == person and (w := active_window(item, target)) is not None
        ]

    # One create per group of overlapping leases; standing access (in prod) never created anew.
    for target, account in ACCOUNTS.items():
        for person in [*PEOPLE, STANDING]:
            standing = person == STANDING and target == "prod"
            windows = held(person, target)
            groups = lease_groups(windows)
            samples = sampler.by_target[target]
            # Each group the samples caught appears once; none appears twice (no flapping).
            at_least = 1 if standing else sampled_groups(windows, samples)
            at_most = 1 if standing else groups
            expected_creates = 0 if standing else groups
            seen = appearances(samples, person)
            made = creates.get((account, person), 0)
            report.add(
                f"lease groups / creates / appearances: {person} in {target}",
                f"{groups} / {made} / {seen}",
            )
            report.check(
                made == expected_creates,
                f"{person} in {target}: {made} creates, {groups} lease groups",
            )
            report.check(
                at_least <= seen <= at_most,
                f"{person} in {target}: assignment appeared {seen}x, expected "
                + (f"{at_most}" if at_least == at_most else f"{at_least} to {at_most}"),
            )

    # Revocation lateness: end of the last overlapping ACTIVE window to the assignment gone.
    lateness = []
    for target in ACCOUNTS:
        for person in PEOPLE if target == "prod" else [*PEOPLE, STANDING]:
            windows = [
                w
                for item in approved
                if item.person == person and (w := active_window(item, target))
            ]
            lateness += [
                (late, f"{person} in {target} after {end:%H:%M:%S}")
                for end, late in late_by(windows, sampler.by_target[target], person)
            ]
    if lateness:
        ordered = sorted(lateness)
        p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))][0]
        report.add(
            "revocation lateness p50 / p99 / max",
            f"{statistics.median(s for s, _ in ordered):.1f} / {p99:.1f} / {ordered[-1][0]:.1f} s"
            f" (worst: {ordered[-1][1]})",
        )
        report.check(
            p99 <= LATENESS_LIMIT + outage_seconds,
            f"revocation lateness p99 {p99:.1f}s > {LATENESS_LIMIT:.0f}s + {outage_seconds:.0f}s",
        )

    for target in ACCOUNTS:
        samples = sampler.by_target[target]
        final_holders = samples[-1][1] if samples else frozenset()
        expected = {STANDING} if target == "prod" else set()
        report.add(f"left in AWS at the end: {target}", ", ".join(sorted(final_holders)) or "-")
        report.check(
            final_holders == expected, f"left in {target} at the end: {set(final_holders)}"
        )

    # Audit trails: complete, and no id names two different events.
    events: dict[str, dict] = {}
    clashes, duplicates = 0, 0
    trail_text = await asyncio.to_thread(audit_path.read_text)
    for line in trail_text.splitlines():
        event = json.loads(line)
        known = events.get(event["id"])
        if known is not None:
            duplicates += 1
            clashes += known != event
        events[event["id"]] = event
    incomplete = 0
    for item in planned:
        trail = sorted(
            (e for e in events.values() if e["request_id"] == item.request_id),
            key=lambda e: int(e["id"].rsplit("/", 1)[1]),
        )
        sequence = [int(e["id"].rsplit("/", 1)[1]) for e in trail]
        complete = (
            bool(trail)
            and sequence == list(range(1, len(trail) + 1))
            and trail[0]["type"] == "request.created"
            and ended_as_it_should(trail)
        )
        if complete and len(item.targets) > 1 and item.action != "cancel":
            # Each target's own events end as they should too (its sessions cut after removal).
            for target in item.targets:
                own = [
                    e
                    for e in trail
                    if e["type"] in PER_TARGET_EVENTS and e["target"]["name"] == target
                ]
                complete = complete and bool(own) and ended_as_it_should(own)
        if not complete:
            incomplete += 1
            report.problems.append(
                f"{item.request_id}: audit trail {[e['type'] for e in trail]} ids {sequence}"
            )
    report.add(
        "audit events / redelivered / id clashes", f"{len(events)} / {duplicates} / {clashes}"
    )
    report.add("incomplete audit trails", incomplete)
    report.check(clashes == 0, f"{clashes} audit ids name two different events")
    # Each request's hash chain holds, though its events were made across killed workers and
    # replays: every hash recomputed on replay must be the one first delivered.
    ours = {item.request_id for item in planned}
    chains = verify_chain(
        sorted(
            (e for e in events.values() if e["request_id"] in ours),
            key=lambda e: (e["request_id"], int(e["id"].rsplit("/", 1)[1])),
        )
    )
    report.add("audit chains checked / broken", f"{chains.requests} / {len(chains.findings)}")
    report.problems.extend(str(finding) for finding in chains.findings)
    report.check(chains.chained == chains.events, "some audit events carry no hash chain")

    # Sessions: the permission set's inline policy in AWS denies each person's sessions from
    # their last lease group, up to when the grant took the last lease back.
    policy = sampler.sso.get_inline_policy_for_permission_set(  # type: ignore[attr-defined]
        InstanceArn=sampler.instance_arn, PermissionSetArn=sampler.permission_set_arn
    ).get("InlinePolicy")
    ids = {email: user for user, email in sampler.people_by_id.items()}
    uncovered = 0
    for target, account in ACCOUNTS.items():
        for person in PEOPLE if target == "prod" else [*PEOPLE, STANDING]:
            windows = held(person, target)
            if not windows:
                continue
            start, end = max(windows, key=lambda w: w[1])
            if not (
                session_policy.denies(policy, ids[person], account, start)
                and session_policy.denies(policy, ids[person], account, end - timedelta(seconds=1))
            ):
                uncovered += 1
                report.problems.append(
                    f"{person} in {target}: sessions of the grant ending {end} are not denied"
                )
    report.add("people whose last grant's sessions are not denied", uncovered)
    may_be_denied = {(ids[p], ACCOUNT) for p in PEOPLE}
    may_be_denied |= {(ids[p], ACCOUNTS["dr"]) for p in [*PEOPLE, STANDING]}
    report.check(
        session_policy.entries(policy).keys() <= may_be_denied,
        "the inline policy denies someone who never had a grant (standing access?)",
    )

    # Every workflow closed (but the session-policy writer, a scheduled drift sweep and the config
    # record), and every history replays.
    open_workflows = 0
    long_lived = (names.SESSION_POLICY_WORKFLOW, names.DRIFT_SWEEP_WORKFLOW, names.CONFIG_WORKFLOW)
    async for execution in client.list_workflows("ExecutionStatus='Running'"):
        if execution.workflow_type in long_lived:
            # The writer: every removal heard `sessions.ended` (the trails say so), it holds its
            # entries for the session duration. A sweep the schedule started may be running.
            # The config record lives as long as the task queue.
            continue
        open_workflows += 1
        report.problems.append(f"left open: {execution.id}")
    report.add("workflows left open", open_workflows)
    replayer = keycard_replayer()
    failures = 0
    for history in histories:
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failures += 1
            report.problems.append(
                f"{history.workflow_id} does not replay: {result.replay_failure}"
            )
    report.add("histories replayed / failed", f"{len(histories)} / {failures}")


# --- the run ---------------------------------------------------------------------------------


async def run_chaos(
    seed: int,
    requests: int,
    kills: int,
    span: float,
    fault_rate: float = 0.2,
    outage: float = 10.0,
    root: Path | None = None,
    settle: float = 600.0,
) -> Report:
    """One chaos run; `settle` bounds how long requests may take to end after the last starts."""
    rng = random.Random(seed)
    root = root or Path(tempfile.mkdtemp(prefix=f"keycard-chaos-{seed}-"))
    audit_path = root / "audit.jsonl"
    config_path = root / "keycard.yaml"
    config_path.write_text(CONFIG.replace("{audit_path}", str(audit_path)))
    config = parse_config(config_path.read_text())
    report = Report()
    report.add("seed / requests / planned kills", f"{seed} / {requests} / {kills}")
    report.add("run directory (logs)", root)

    moto, moto_url = start_moto_server()
    summary = seed_demo(config, moto_url, REGION)
    sso = boto3.client("sso-admin", endpoint_url=moto_url, region_name=REGION, **DEMO_CREDENTIALS)
    permission_set_arn = summary.permission_sets["PowerUserAccess"]
    sso.create_account_assignment(
        InstanceArn=summary.instance_arn,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=permission_set_arn,
        PrincipalType="USER",
        PrincipalId=summary.users[STANDING],
    )
    sampler = Sampler(
        sso, summary.instance_arn, permission_set_arn, {v: k for k, v in summary.users.items()}
    )

    aws = FaultyAws(moto=moto_url, rng=random.Random(seed + 1), fault_rate=fault_rate)
    proxy_port = free_port()
    proxy = await aws.serve(proxy_port)

    temporal = Temporal(root)
    temporal.start()
    client = await retrying(
        lambda: Client.connect(temporal.address, data_converter=pydantic_data_converter),
        "connect to Temporal",
        deadline=60,
    )
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "PAGERDUTY_"))},
        **_aws_env(f"http://127.0.0.1:{proxy_port}"),
        "TEMPORAL_ADDRESS": temporal.address,
        "TEMPORAL_NAMESPACE": "default",
        "KEYCARD_TASK_QUEUE": "keycard-chaos",
        "KEYCARD_WORKER_HEALTH_HOST": "127.0.0.1",
        "KEYCARD_WORKER_SHUTDOWN_GRACE": "5s",
    }
    workers = [Worker(f"worker-{n}", root, env, config_path) for n in (1, 2)]
    for worker in workers:
        worker.start()

    keycard = KeycardClient(client, config, "keycard-chaos")
    planned = plan(rng, requests, span)
    stop_sampling = asyncio.Event()
    sampling = asyncio.create_task(sampler.run(stop_sampling))
    started = time.monotonic()
    outage_at = started + span * 0.6
    aws.outage = (outage_at, outage_at + outage)
    try:
        monkey = asyncio.create_task(chaos_monkey(workers, temporal, rng, kills, span))
        await asyncio.gather(*(drive(keycard, item, started) for item in planned))
        for line in await monkey:
            print(line)
        settled_by = time.monotonic() + settle
        for item in planned:
            if not item.request_id:
                continue
            handle = client.get_workflow_handle(item.request_id, result_type=RequestView)
            left = max(1.0, settled_by - time.monotonic())
            try:
                item.final = await retrying(
                    lambda h=handle, left=left: asyncio.wait_for(h.result(), left),
                    "result",
                    deadline=left,
                )
            except Exception as err:
                item.error = f"{type(err).__name__}: {err}"
        await _until_grants_close(client, max(1.0, settled_by - time.monotonic()))
        await asyncio.sleep(1)  # a last few samples after the end
    finally:
        stop_sampling.set()
        await sampling
        for worker in workers:
            worker.stop()

    report.add("approved / revoked early / cancelled", _counts(planned))
    report.add("workers SIGKILLed / Temporal restarts", f"{sum(w.kills for w in workers)} / 1")
    report.add("AWS calls forwarded / failed on purpose", f"{aws.forwarded} / {aws.faults}")
    report.add("AWS outage (503 to everything)", f"{outage:.0f} s")
    report.add("AWS samples", len(sampler.samples))
    try:
        await verify(report, client, planned, sampler, audit_path, outage)
    finally:
        temporal.stop()
        await proxy.cleanup()
        if aws.session is not None:
            await aws.session.close()
        moto.stop()
    return report


def _aws_env(endpoint: str) -> dict[str, str]:
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": DEMO_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DEMO_CREDENTIALS["aws_secret_access_key"],
        "AWS_REGION": REGION,
        "AWS_DEFAULT_REGION": REGION,
    }


def _counts(planned: list[Planned]) -> str:
    approved = sum(p.action != "cancel" for p in planned)
    revoked = sum(p.revoke_called is not None for p in planned)
    cancelled = sum(p.action == "cancel" for p in planned)
    return f"{approved} / {revoked} / {cancelled}"


async def _until_grants_close(client: Client, deadline: float = 300) -> None:
    """Until every request and grant has closed (the session-policy writer keeps its entries for
    the session duration, and a drift sweep may be running: neither is waited for)."""
    give_up = time.monotonic() + deadline
    query = (
        f"ExecutionStatus='Running' AND WorkflowType IN "
        f"('{names.ACCESS_REQUEST_WORKFLOW}', '{names.GRANT_WORKFLOW}')"
    )
    while time.monotonic() < give_up:
        running = [e async for e in client.list_workflows(query)]
        if not running:
            return
        await asyncio.sleep(2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--kills", type=int, default=30)
    parser.add_argument("--span", type=float, default=240, help="seconds over which requests start")
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--outage", type=float, default=10, help="seconds of AWS answering 503")
    args = parser.parse_args()
    report = asyncio.run(
        run_chaos(args.seed, args.requests, args.kills, args.span, args.fault_rate, args.outage)
    )
    report.print()
    # Temporal's runtime threads can abort interpreter teardown (see starter.cli.main).
    sys.stdout.flush()
    os._exit(0 if not report.problems else 1)


if __name__ == "__main__":
    main()
