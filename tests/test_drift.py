"""The drift sweep against moto and the dev server, through the production worker wiring: an
assignment Keycard granted and no lease holds is removed through its GrantWorkflow and audited, one
Keycard never granted is reported (removed only with remove_unmanaged), standing access is left
alone; the worker makes the Schedule, and `keycard drift` shows the last sweep."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest
from temporalio.client import Client
from temporalio.service import RPCError
from typer.testing import CliRunner

from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import Actor, DriftReport, RequestState, RequestView
from keycard.settings import Settings
from main import app
from starter.cli.drift import render
from starter.client import KeycardClient
from starter.run.demo_aws import DEMO_CREDENTIALS, assignments_for, seed_demo, user_id_of
from starter.run.drift import ensure_drift_schedule, last_sweep, sweep_input
from tests.harness import ALICE
from tests.polling import eventually
from worker import build_worker, run_worker

REGION = "us-east-1"
CONFIG = """
flows:
  - name: prod-power-user
    strategy: aws_sso
    targets:
      - {name: prod, label: Production, account_id: "ACCOUNT", permission_set: PowerUserAccess}
    durations: [1h, 3s]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


class Aws:
    def __init__(self, endpoint: str, account: str) -> None:
        self.endpoint, self.account = endpoint, account
        self.sso = boto3.client(
            "sso-admin", endpoint_url=endpoint, region_name=REGION, **DEMO_CREDENTIALS
        )
        self.instance = self.sso.list_instances()["Instances"][0]["InstanceArn"]
        arns = self.sso.list_permission_sets(InstanceArn=self.instance)["PermissionSets"]
        self.permission_set = next(
            arn
            for arn in arns
            if self.sso.describe_permission_set(InstanceArn=self.instance, PermissionSetArn=arn)[
                "PermissionSet"
            ]["Name"]
            == "PowerUserAccess"
        )

    def assign_by_hand(self, email: str) -> None:
        self.sso.create_account_assignment(
            InstanceArn=self.instance,
            TargetId=self.account,
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=self.permission_set,
            PrincipalType="USER",
            PrincipalId=user_id_of(self.endpoint, REGION, email),
        )

    def holds(self, email: str) -> bool:
        return any(
            s.permission_set == "PowerUserAccess" and s.account_id == self.account
            for s in assignments_for(self.endpoint, REGION, email)
        )


@pytest.fixture
async def deployment(dev_env, aws, tmp_path: Path):
    account = f"{uuid.uuid4().int % 10**12:012d}"
    text = CONFIG.replace("ACCOUNT", account)
    config = parse_config(text)
    seed_demo(config, aws, REGION)
    settings = Settings(
        task_queue=f"drift-{uuid.uuid4()}",
        audit_jsonl=tmp_path / "audit.jsonl",
        audit_stdout=False,
        state_dir=tmp_path,
    )
    async with build_worker(dev_env.client, config, settings):
        yield (
            KeycardClient(dev_env.client, config, settings.task_queue),
            Aws(aws, account),
            settings,
            text,
        )


async def sweep(client: Client, config_text: str, task_queue: str) -> DriftReport:
    return await client.execute_workflow(
        names.DRIFT_SWEEP_WORKFLOW,
        sweep_input(parse_config(config_text)),
        id=f"drift-test-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=DriftReport,
    )


def audited(settings: Settings, type: str) -> list[dict]:
    lines = settings.audit_jsonl.read_text().splitlines() if settings.audit_jsonl.exists() else []
    return [event for event in map(json.loads, lines) if event["type"] == type]


async def ended(keycard: KeycardClient, client: Client, request_id: str) -> RequestView:
    handle = client.get_workflow_handle(request_id, result_type=RequestView)
    return await asyncio.wait_for(handle.result(), 60)


async def test_the_sweep_removes_orphans_reports_the_unmanaged_and_keeps_standing_access(
    deployment, dev_env
):
    keycard, aws, settings, config_text = deployment
    started = datetime.now(UTC)
    # alice: Keycard granted and removed it; then someone copied the JIT grant by hand.
    view = await keycard.request(
        flow="prod-power-user", target="prod", duration="3s", reason="drift", requester=ALICE
    )
    await keycard.approve(view.id, Actor(email="bob@example.com"))
    assert (await ended(keycard, dev_env.client, view.id)).state is RequestState.ENDED
    aws.assign_by_hand("alice@example.com")
    # carol: standing access, which a grant of Keycard's found and left in place.
    aws.assign_by_hand("carol@example.com")
    carol = await keycard.request(
        flow="prod-power-user",
        target="prod",
        duration="3s",
        reason="drift",
        requester=ALICE.model_copy(update={"email": "carol@example.com"}),
    )
    await keycard.approve(carol.id, Actor(email="bob@example.com"))
    assert (await ended(keycard, dev_env.client, carol.id)).standing_access
    # bob: made by hand; Keycard never granted it.
    aws.assign_by_hand("bob@example.com")

    report = await sweep(dev_env.client, config_text, settings.task_queue)

    assert (report.targets, report.assignments, report.held) == (1, 3, 1)
    by_email = {f.principal_email: f for f in report.findings}
    assert by_email.keys() == {"alice@example.com", "bob@example.com"}
    assert (by_email["alice@example.com"].kind, by_email["alice@example.com"].action) == (
        "orphan",
        "removed",
    )
    assert (by_email["bob@example.com"].kind, by_email["bob@example.com"].action) == (
        "unmanaged",
        "reported",
    )
    # The orphan goes through its GrantWorkflow, which audits the removal once AWS confirms it
    # (and ends the sessions it allowed, as a lease's end would).
    await eventually(lambda: _async(not aws.holds("alice@example.com")))
    removed = await eventually(lambda: _async(audited(settings, "drift.removed")))
    assert removed[0]["requester"]["email"] == "alice@example.com"
    assert removed[0]["detail"]["kind"] == "orphan" and removed[0]["detail"]["removed"] is True
    assert removed[0]["actor"]["rule"] == "drift-sweep" and removed[0]["actor"]["via"] == "schedule"
    [found] = audited(settings, "drift.found")
    assert found["requester"]["email"] == "bob@example.com"
    assert found["detail"]["kind"] == "unmanaged"
    assert aws.holds("bob@example.com") and aws.holds("carol@example.com")

    # A flow that says remove_unmanaged: the next sweep removes bob's too; carol's stays.
    strict = config_text + "    remove_unmanaged: true\n"
    report = await sweep(dev_env.client, strict, settings.task_queue)
    [bob] = report.findings
    assert (bob.principal_email, bob.kind, bob.action) == (
        "bob@example.com",
        "unmanaged",
        "removed",
    )
    await eventually(lambda: _async(not aws.holds("bob@example.com")))
    assert aws.holds("carol@example.com")
    await _the_sweeps_are_evidence(dev_env.client, settings, aws.account, started)

    # And a request after all this works as ever.
    again = await keycard.request(
        flow="prod-power-user", target="prod", duration="1h", reason="drift", requester=ALICE
    )
    await keycard.approve(again.id, Actor(email="bob@example.com"))
    await eventually(lambda: _async(aws.holds("alice@example.com")))
    report = await sweep(dev_env.client, strict, settings.task_queue)
    assert report.findings == [] and report.held == 2  # alice's lease, carol's standing access
    await keycard.revoke(again.id, Actor(email="alice@example.com"), "done")


async def _the_sweeps_are_evidence(
    client: Client, settings: Settings, account: str, started: datetime
) -> None:
    """The sink's file verifies against history, though the removals were written by grants,
    not by the sweeps that made them; the export and the period report have them."""
    await eventually(lambda: _async(len(audited(settings, "drift.removed")) == 2), "two removals")

    def invoke(*args: str):
        with pytest.MonkeyPatch.context() as env:
            env.setenv("TEMPORAL_ADDRESS", client.service_client.config.target_host)
            return CliRunner().invoke(app, list(args))

    async def verified():
        result = await asyncio.to_thread(invoke, "audit", "verify", str(settings.audit_jsonl))
        return result if result.exit_code == 0 else None

    result = await eventually(verified, "the sink's file to verify")
    assert "OK: nothing missing, altered or reordered." in result.output

    since = started.isoformat()
    exported = await asyncio.to_thread(invoke, "audit", "export", "--since", since)
    assert exported.exit_code == 0, exported.output
    mine = [
        json.loads(line)
        for line in exported.stdout.splitlines()
        if json.loads(line)["type"].startswith("drift.")
        and json.loads(line)["detail"]["account_id"] == account
    ]
    assert sorted(e["type"] for e in mine) == ["drift.found", "drift.removed", "drift.removed"]
    assert {e["id"] for e in mine} == {e["id"] for e in audited_drift(settings)}

    report = await asyncio.to_thread(invoke, "report", "--since", since, "--format", "json")
    assert report.exit_code == 0, report.output
    drift = [
        d for d in json.loads(report.stdout)["exceptions"]["drift"] if d["account_id"] == account
    ]
    assert sorted((d["action"], d["kind"], d["principal"]) for d in drift) == [
        ("found", "unmanaged", "bob@example.com"),
        ("removed", "orphan", "alice@example.com"),
        ("removed", "unmanaged", "bob@example.com"),
    ]
    assert not any(
        r["request_id"].startswith("keycard-drift")
        for r in json.loads(report.stdout)["exceptions"]["still_open"]
    )


def audited_drift(settings: Settings) -> list[dict]:
    return audited(settings, "drift.found") + audited(settings, "drift.removed")


async def test_the_worker_schedules_the_sweep_and_keycard_drift_shows_it(
    dev_env, aws, tmp_path, monkeypatch
):
    account = f"{uuid.uuid4().int % 10**12:012d}"
    config = parse_config(CONFIG.replace("ACCOUNT", account) + "drift: {every: 1m}\n")
    seed_demo(config, aws, REGION)
    Aws(aws, account).assign_by_hand("bob@example.com")
    settings = Settings(task_queue=f"drift-{uuid.uuid4()}", audit_stdout=False, state_dir=tmp_path)
    # The schedule's id is one per namespace: another test's worker may have left one (every 15m),
    # which would be read here before this worker replaces it.
    await _delete(dev_env.client)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(dev_env.client, config, settings, stop))
    try:
        handle = dev_env.client.get_schedule_handle(names.DRIFT_SCHEDULE_ID)
        described = await eventually(lambda: _described(handle))
        assert described.schedule.spec.intervals[0].every.total_seconds() == 60
        assert described.schedule.action.task_queue == settings.task_queue

        target = dev_env.client.service_client.config.target_host
        monkeypatch.setenv("TEMPORAL_ADDRESS", target)
        result = await asyncio.to_thread(CliRunner().invoke, app, ["drift", "--now"])
        assert result.exit_code == 0, result.output
        assert "sweeps every 1m" in result.output
        assert "REPORTED unmanaged bob@example.com in " + account in result.output

        report, about = await last_sweep(dev_env.client)
        assert report is not None and "sweeps every 1m" in render(report, about)

        # drift.every: null removes the schedule.
        await ensure_drift_schedule(
            dev_env.client,
            parse_config(CONFIG.replace("ACCOUNT", account) + "drift: {every: null}\n"),
            settings.task_queue,
        )
        result = await asyncio.to_thread(CliRunner().invoke, app, ["drift"])
        assert result.exit_code == 1 and "no drift sweep is scheduled" in result.output
    finally:
        stop.set()
        await worker
        await _delete(dev_env.client)


def test_a_sweep_more_often_than_a_minute_is_refused():
    with pytest.raises(Exception, match="must be at least 1m"):
        parse_config(CONFIG.replace("ACCOUNT", "111111111111") + "drift: {every: 30s}\n")


async def _async(value):
    return value


async def _described(handle):
    try:
        return await handle.describe()
    except Exception:
        return None


async def _delete(client: Client) -> None:
    with contextlib.suppress(RPCError):  # already gone
        await client.get_schedule_handle(names.DRIFT_SCHEDULE_ID).delete()
