"""Record the golden workflow histories replayed in CI: `python -m tests.histories.record`.

Run it after a workflow change has shipped behind `workflow.patched`, with a new --tag: the old
files must keep replaying, so new files are added beside them (`request_denied_v2.json`) and
existing ones are never replaced unless --overwrite says so. Each scenario runs the real workflows on
the time-skipping server with the fake cloud, and writes the histories of the request and of its
grant.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.aws_activity import ActivityReader
from activities.drift import DriftActivities
from activities.notify import ConsoleNotifier
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import (
    AccessRequestInput,
    Actor,
    ConfigHistoryInput,
    ConfigLoaded,
    DriftFinding,
    DriftReport,
    DriftSweepInput,
    SlackApproversInput,
    SlackApproversResult,
)
from keycard.policy import PolicyError
from starter.protocol import Ask
from starter.run.drift import sweep_input
from tests.conftest import _binary, register_search_attributes
from tests.fake_cloudtrail import FakeCloudTrail, FakeDirectory
from tests.fakes import FakeCloud
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    CONFIG,
    HeldSink,
    MemorySink,
    Stack,
    cancel_heard,
    running_stack,
)
from worker import announce_config
from workflows.config import ConfigWorkflow

HERE = Path(__file__).parent
Scenario = Callable[[WorkflowEnvironment, Stack], Awaitable[list[str]]]


async def _run_until_closed(env: WorkflowEnvironment, workflow_id: str) -> None:
    handle = env.client.get_workflow_handle(workflow_id)
    for _ in range(24 * 60):
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return
        await env.sleep(timedelta(minutes=1))
    raise RuntimeError(f"{workflow_id} did not close")


def _grant_id(stack: Stack) -> str:
    return f"grant:aws_sso:111111111111:ps-PowerUserAccess:u-alice-{stack.cloud.salt}"


async def _ask(stack: Stack, request_id: str, **overrides):
    args = dict(
        flow="prod-power-user",
        target="prod",
        duration="1h",
        reason="incident 4312",
        requester=ALICE,
        request_id=request_id,
        fields={"incident": "4312"},
    )
    args.update(overrides)
    return await stack.keycard.request(**args)


async def approved_then_expired(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    view = await _ask(stack, "req-golden-expired")
    await stack.keycard.approve(view.id, BOB, "go")
    await _run_until_closed(env, view.id)
    await _run_until_closed(env, _grant_id(stack))
    # The grant ended the access's sessions (end_sessions): the permission set's writer holds the
    # deny entry until the session duration has passed, then prunes it and ends.
    [writer] = stack.cloud.writers
    await _run_until_closed(env, writer)
    return [view.id, _grant_id(stack), writer]


async def managed_policy_expired(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """end_sessions_policy: the deny entry goes to the customer-managed policy's writer."""
    view = await _ask(stack, "req-golden-managed-policy")
    await stack.keycard.approve(view.id, BOB, "go")
    await _run_until_closed(env, view.id)
    await _run_until_closed(env, _grant_id(stack))
    [writer] = stack.cloud.writers
    await _run_until_closed(env, writer)
    return [view.id, _grant_id(stack), writer]


async def drift_sweep(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """A sweep that finds alice's access with no lease behind it (removed through her grant, which
    ends her sessions) and bob's that Keycard never granted (reported)."""
    stack.cloud.give("alice@example.com", ps="PowerUserAccess")
    sweep = await env.client.execute_workflow(
        names.DRIFT_SWEEP_WORKFLOW,
        sweep_input(parse_config(CONFIG)),
        id="drift:golden",
        task_queue=stack.task_queue,
        result_type=DriftReport,
    )
    assert [f.action for f in sweep.findings] == ["removed", "reported"], sweep
    await _run_until_closed(env, _grant_id(stack))
    [writer] = stack.cloud.writers
    await _run_until_closed(env, writer)
    return ["drift:golden", _grant_id(stack), writer]


async def config_loads(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Workers starting with the harness's config, again with it (no event), then with an edited
    flow; the record continues as new after two loads, so both runs are kept."""
    original = parse_config(CONFIG)
    edited = parse_config(CONFIG.replace("max_duration: 4h", "max_duration: 8h"))
    workflow_id = names.config_workflow_id(stack.task_queue)
    await env.client.start_workflow(
        ConfigWorkflow.run,
        ConfigHistoryInput(task_queue=stack.task_queue, continue_after=2),
        id=workflow_id,
        task_queue=stack.task_queue,
    )
    handle = env.client.get_workflow_handle(workflow_id)
    first_run = (await handle.describe()).run_id
    for config in (original, original):
        await announce_config(env.client, config, stack.task_queue)

    async def run_id() -> str | None:
        return (await env.client.get_workflow_handle(workflow_id).describe()).run_id

    await _until(run_id, lambda run: run != first_run)  # continued as new after two loads
    await announce_config(env.client, edited, stack.task_queue)
    want = edited.policy().digest

    async def current() -> str | None:
        loaded = await env.client.get_workflow_handle(workflow_id).query(
            names.CONFIG_CURRENT, result_type=ConfigLoaded
        )
        return loaded.policy.digest if loaded else None

    await _until(current, lambda digest: digest == want)
    assert first_run is not None
    return [f"{workflow_id}@{first_run}", workflow_id]


async def config_cancelled(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """A cancel request from Temporal while the record's first event is being delivered: the
    delivery finishes, the record goes on, and hears an edited config (PATCH_V15)."""
    original = parse_config(CONFIG)
    edited = parse_config(CONFIG.replace("max_duration: 4h", "max_duration: 8h"))
    sink: HeldSink = stack.extra["audit"]
    workflow_id = names.config_workflow_id(stack.task_queue)
    handle = env.client.get_workflow_handle(workflow_id)
    await announce_config(env.client, original, stack.task_queue)
    await asyncio.wait_for(sink.writing.wait(), timeout=20)
    await handle.cancel()
    await _until(lambda: cancel_heard(handle), bool)
    sink.released.set()
    await announce_config(env.client, edited, stack.task_queue)
    await _until(lambda: _loaded(sink, workflow_id), lambda n: n == 2)
    return [workflow_id]


async def _loaded(sink: MemorySink, workflow_id: str) -> int:
    return len(sink.of(workflow_id, "config.loaded"))


async def activity_read(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """A flow with `activity: cloudtrail`: approved, expired, and its CloudTrail events read
    once the delay is up (PATCH_V14)."""
    view = await _ask(stack, "req-golden-activity")
    await stack.keycard.approve(view.id, BOB, "go")
    await _until(lambda: stack.keycard.get(view.id), lambda v: v.state.value == "ACTIVE")
    active = await stack.keycard.get(view.id)
    assert active.granted_at is not None
    for minute, name, read_only in ((1, "DescribeInstances", True), (2, "StopInstances", False)):
        TRAIL.call(
            active.granted_at + timedelta(minutes=minute),
            name,
            user="alice@example.com",
            account="111111111111",
            permission_set="PowerUserAccess",
            read_only=read_only,
        )
    await _run_until_closed(env, view.id)
    return [view.id]


async def break_glass_reviewed(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Break-glass; the access expires; the request waits for its review, which carol makes an
    hour later (PATCH_V14)."""
    view = await _ask(stack, "req-golden-glass-reviewed")
    await stack.keycard.break_glass(view.id, ALICE_ACTOR, "the primary is down, nobody answers")
    await _until(lambda: stack.keycard.get(view.id), lambda v: v.state.value == "ACTIVE")
    await env.sleep(timedelta(hours=2))
    await stack.keycard.review(view.id, CAROL, "justified", "INC-4312")
    await _run_until_closed(env, view.id)
    return [view.id]


async def break_glass_review_overdue(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Break-glass, never reviewed: the window closes (PATCH_V14)."""
    view = await _ask(stack, "req-golden-glass-overdue")
    await stack.keycard.break_glass(view.id, ALICE_ACTOR, "the primary is down, nobody answers")
    await _until(lambda: stack.keycard.get(view.id), lambda v: v.state.value == "ACTIVE")
    await env.sleep(timedelta(hours=23))
    await _run_until_closed(env, view.id)
    return [view.id]


TRAIL = FakeCloudTrail()


def _activity_reader(client: Client, cloud: FakeCloud, task_queue: str) -> list:
    reader = ActivityReader(FakeDirectory(), FakeDirectory(), None, TRAIL.client, "us-east-1")
    return [*reader.activities(), ConsoleNotifier().send]


def _drift_activities(client: Client, cloud: FakeCloud, task_queue: str) -> list:
    """drift.inspect as the fake cloud would answer it; drift.reconcile for real."""

    @activity.defn(name=names.INSPECT_DRIFT)
    async def inspect(input: DriftSweepInput) -> DriftReport:
        target = next(t for t in input.targets if t.permission_set == "PowerUserAccess")
        instance = f"arn:aws:sso:::instance/ssoins-{cloud.salt}"
        found = {
            "flow": target.flow,
            "target": target.target.name,
            "account_id": target.account_id,
            "permission_set": target.permission_set,
            "permission_set_arn": f"arn:aws:sso:::permissionSet/ssoins-{cloud.salt}/ps-PowerUserAccess",
            "instance_arn": instance,
            "principal_type": "USER",
        }
        return DriftReport(
            started_at=datetime.now(UTC),
            finished_at=datetime.now(UTC),
            targets=1,
            assignments=2,
            findings=[
                DriftFinding(
                    kind="orphan",
                    action="removed",
                    principal_id=f"u-alice-{cloud.salt}",
                    principal_email="alice@example.com",
                    why="Keycard granted it and no lease holds it",
                    **found,
                ),
                DriftFinding(
                    kind="unmanaged",
                    action="reported",
                    principal_id=f"u-bob-{cloud.salt}",
                    principal_email="bob@example.com",
                    why="Keycard never granted it",
                    **found,
                ),
            ],
            instance_arn=instance,
        )

    reconcile = DriftActivities(client, None, task_queue).reconcile  # type: ignore[arg-type]
    return [inspect, reconcile, ConsoleNotifier().send]


async def extended_then_revoked(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    view = await _ask(stack, "req-golden-revoked")
    await stack.keycard.approve(view.id, CAROL)
    await env.sleep(timedelta(minutes=10))
    await stack.keycard.extend(view.id, Actor(email="alice@example.com"), "1h", "still on it")
    await env.sleep(timedelta(minutes=10))
    await stack.keycard.revoke(view.id, Actor(email="alice@example.com"), "done")
    await _run_until_closed(env, view.id)
    return [view.id]


async def denied(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    view = await _ask(stack, "req-golden-denied")
    await stack.keycard.deny(view.id, BOB, "not in the freeze")
    await _run_until_closed(env, view.id)
    return [view.id]


async def no_decision(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    view = await _ask(stack, "req-golden-no-decision")
    await _run_until_closed(env, view.id)
    return [view.id]


async def two_approvals_and_a_refused_signal(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    view = await _ask(stack, "req-golden-two-approvals", flow="prod-admin", fields={})
    handle = env.client.get_workflow_handle(view.id)
    from keycard.models import ApproveInput

    await handle.signal("approve", ApproveInput(actor=Actor(email="alice@example.com")))
    await stack.keycard.approve(view.id, BOB)
    await stack.keycard.approve(view.id, CAROL)
    await _run_until_closed(env, view.id)
    return [view.id]


async def cancelled_through_temporal(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    view = await _ask(stack, "req-golden-cancelled-in-temporal")
    await stack.keycard.approve(view.id, BOB)
    await env.sleep(timedelta(minutes=5))
    await env.client.get_workflow_handle(view.id).cancel(reason="incident over")
    await _run_until_closed(env, view.id)
    await _run_until_closed(env, _grant_id(stack))
    return [view.id, _grant_id(stack)]


async def overlapping_leases(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Two requests share one grant; the second's history and the grant's are kept."""
    first = await _ask(stack, "req-golden-overlap-first")
    await stack.keycard.approve(first.id, BOB)
    await env.sleep(timedelta(minutes=5))
    second = await _ask(stack, "req-golden-overlap-second", duration="2h")
    await stack.keycard.approve(second.id, CAROL)
    await _run_until_closed(env, first.id)
    await _run_until_closed(env, second.id)
    await _run_until_closed(env, _grant_id(stack))
    return [second.id, _grant_id(stack)]


async def terminated_request(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """A request terminated by hand: its grant drops the lease after its end, and audits that."""
    view = await _ask(stack, "req-golden-terminated", duration="1m")
    await stack.keycard.approve(view.id, BOB)
    await env.sleep(timedelta(seconds=20))
    await env.client.get_workflow_handle(view.id).terminate("operator mistake")
    await _run_until_closed(env, _grant_id(stack))
    return [view.id, _grant_id(stack)]


async def approval_steps(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Two steps met out of order: carol (in both) first, then bob (sre only), so carol moves to
    security; a second approval by bob is refused; access granted, then it expires."""
    view = await _ask(stack, "req-golden-steps", flow="stepped", fields={})
    await stack.keycard.approve(view.id, CAROL)
    with contextlib.suppress(PolicyError):
        await stack.keycard.approve(view.id, CAROL)
    await stack.keycard.approve(view.id, BOB)
    await _run_until_closed(env, view.id)
    return [view.id]


async def unmeetable_request(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """A step whose only approver (from a Slack user group) is the requester: refused at once."""
    with contextlib.suppress(PolicyError):
        await _ask(stack, "req-golden-unmeetable", flow="stepped-slack", fields={})
    await _run_until_closed(env, "req-golden-unmeetable")
    return ["req-golden-unmeetable"]


async def scheduled_start(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Approved at once for a start two hours ahead: SCHEDULED, granted then, expired an hour
    later. (First of the scenarios: the client checks start_at against the real clock.)"""
    start_at = (await env.get_current_time()).astimezone(UTC) + timedelta(hours=2)
    view = await _ask(stack, "req-golden-scheduled", start_at=start_at)
    await stack.keycard.approve(view.id, BOB)
    await _run_until_closed(env, view.id)
    return [view.id]


async def reminded_then_escalated(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Nobody decides: two reminders and an escalation fire, the backup approver approves, and
    the reminder still ahead is cancelled; the access then expires."""
    view = await _ask(stack, "req-golden-nudged", flow="nudged", fields={})
    await env.sleep(timedelta(minutes=40))
    await stack.keycard.approve(view.id, Actor(email="dave@example.com"))
    await _run_until_closed(env, view.id)
    return [view.id]


async def many_targets(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """Three targets: sandbox does not resolve (reported at once), staging's grant fails, prod is
    granted; an extension moves its lease, and it expires."""
    view = await _ask(
        stack, "req-golden-many", flow="fleet", target=["prod", "staging", "sandbox"], fields={}
    )
    await stack.keycard.approve(view.id, BOB)
    for _ in range(600):
        if (await stack.keycard.get(view.id)).state.value == "ACTIVE":
            break
        await asyncio.sleep(0.05)
    await stack.keycard.extend(view.id, BOB, "30m", "more")
    await _run_until_closed(env, view.id)
    return [view.id]


async def lease_during_session_end(env: WorkflowEnvironment, stack: Stack) -> list[str]:
    """A removal still ending sessions (the writer held) when a second lease arrives: the access
    is made afresh after, and the second removal ends its sessions too. The grant's history."""
    first = await _ask(stack, "req-golden-held-first")
    await stack.keycard.approve(first.id, BOB)
    await _until(lambda: stack.keycard.get(first.id), lambda v: v.state.value == "ACTIVE")
    await stack.keycard.revoke(first.id, BOB, "done")
    await _until(
        lambda: _nothing(), lambda _: any(c[0] == "end_sessions" for c in stack.cloud.calls)
    )
    second = await _ask(stack, "req-golden-held-second")
    await stack.keycard.approve(second.id, CAROL)
    grant = stack.client.get_workflow_handle(_grant_id(stack))
    await _until(lambda: grant.query("status"), lambda v: second.id in v["waiting"])
    assert stack.cloud.session_gate is not None
    stack.cloud.session_gate.set()
    await _run_until_closed(env, second.id)
    await _run_until_closed(env, _grant_id(stack))
    return [_grant_id(stack)]


async def _nothing() -> None:
    return None


async def _until(read, done, tries: int = 600) -> None:
    for _ in range(tries):
        if done(await read()):
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("the scenario did not reach its next step")


def _held_writer() -> FakeCloud:
    return FakeCloud(session_gate=asyncio.Event())


def _failing_fleet() -> FakeCloud:
    return FakeCloud(
        grant_errors={"222222222222": "AccessDeniedException: not in this account"},
        missing_accounts={"333333333333"},
    )


def _slack_security_group(client: Client, cloud: FakeCloud, task_queue: str) -> list:
    @activity.defn(name=names.RESOLVE_SLACK_APPROVERS)
    async def resolve(input: SlackApproversInput) -> SlackApproversResult:
        return SlackApproversResult(emails=["alice@example.com"])

    return [ConsoleNotifier().send, resolve]


STEPPED = """
  - name: stepped
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: AdministratorAccess}
    durations: [1h]
    reason_required: false
    approval_steps:
      - {name: sre, approvers: {groups: [sre-leads]}}
      - {name: security, approvers: {users: [dave@example.com, carol@example.com]}}
  - name: nudged
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: ReadOnlyAccess}
    durations: [1h]
    reason_required: false
    approvers: {groups: [sre-leads]}
    approval_timeout: 2h
    reminders: [15m, 35m, 1h]
    escalate_after: 30m
    escalation: {approvers: {users: [dave@example.com]}}
  - name: fleet
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: PowerUserAccess}
      - {name: staging, account_id: "222222222222", permission_set: PowerUserAccess}
      - {name: sandbox, account_id: "333333333333", permission_set: PowerUserAccess}
    durations: [1h]
    max_duration: 2h
    allow_extension: true
    reason_required: false
    approvers: {groups: [sre-leads]}
  - name: stepped-slack
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: AdministratorAccess}
    durations: [1h]
    reason_required: false
    approval_steps:
      - {name: sre, approvers: {groups: [sre-leads]}}
      - {name: security, approvers: {slack_groups: [security]}}
"""


SCENARIOS: dict[str, Scenario] = {
    "scheduled_start": scheduled_start,
    "terminated_request": terminated_request,
    "cancelled_through_temporal": cancelled_through_temporal,
    "overlapping_leases": overlapping_leases,
    "approved_then_expired": approved_then_expired,
    "extended_then_revoked": extended_then_revoked,
    "denied": denied,
    "no_decision": no_decision,
    "two_approvals_and_a_refused_signal": two_approvals_and_a_refused_signal,
    "managed_policy_expired": managed_policy_expired,
    "drift_sweep": drift_sweep,
    "approval_steps": approval_steps,
    "unmeetable_request": unmeetable_request,
    "reminded_then_escalated": reminded_then_escalated,
    "many_targets": many_targets,
    "lease_during_session_end": lease_during_session_end,
    "config_loads": config_loads,
    "config_cancelled": config_cancelled,
    "activity_read": activity_read,
    "break_glass_reviewed": break_glass_reviewed,
    "break_glass_review_overdue": break_glass_review_overdue,
}
BREAK_GLASS = CONFIG.replace(
    "    allow_extension: true",
    "    allow_extension: true\n    break_glass: true\n    break_glass_review_within: 1d",
)
ALICE_ACTOR = Actor(email="alice@example.com")
# Scenarios whose cloud fails in places.
CLOUDS = {"many_targets": _failing_fleet, "lease_during_session_end": _held_writer}
# Scenarios that need activities of their own (given the client, cloud and task queue).
EXTRA = {
    "drift_sweep": _drift_activities,
    "unmeetable_request": _slack_security_group,
    "activity_read": _activity_reader,
}
# Scenarios whose audit destination is a sink of their own (in `stack.extra["audit"]`).
SINKS = {"config_cancelled": HeldSink}
# Scenarios that need another keycard.yaml than the harness's.
CONFIGS = {
    "approval_steps": CONFIG + STEPPED,
    "unmeetable_request": CONFIG + STEPPED,
    "reminded_then_escalated": CONFIG + STEPPED,
    "many_targets": CONFIG + STEPPED,
    "break_glass_reviewed": BREAK_GLASS,
    "break_glass_review_overdue": BREAK_GLASS,
    "activity_read": CONFIG.replace(
        "    allow_extension: true", "    allow_extension: true\n    activity: cloudtrail"
    ),
    "managed_policy_expired": CONFIG.replace(
        "    allow_extension: true",
        "    allow_extension: true\n    end_sessions_policy: "
        "{name: KeycardEndSessions, path: /keycard/, role: KeycardSessionWriter}",
    ),
}


@workflow.defn(name=names.ACCESS_REQUEST_WORKFLOW, sandboxed=False)
class IncompatibleAccessRequestWorkflow:
    """A deliberately incompatible variant: it sleeps before anything else. Its history must
    fail to replay on the real workflow — proof that the replay test catches a break."""

    @workflow.run
    async def run(self, input: AccessRequestInput) -> None:
        await workflow.sleep(timedelta(seconds=1))


async def _write(env: WorkflowEnvironment, workflow_id: str, path: Path, overwrite: bool) -> None:
    """`workflow_id`'s last run's history, or with `@run_id`, that run's."""
    workflow_id, _, run_id = workflow_id.partition("@")
    handle = env.client.get_workflow_handle(workflow_id, run_id=run_id or None)
    history = await handle.fetch_history()
    _save(history.to_json(), len(history.events), path, overwrite)


def _save(history_json: str, events: int, path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        print(f"kept {path.name} (exists; --overwrite replaces it)")
        return
    path.write_text(json.dumps(json.loads(history_json), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.name} ({events} events)")


async def record(tag: str, overwrite: bool, only: list[str] | None = None) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await register_search_attributes(env.client)
    try:
        for name, scenario in SCENARIOS.items():
            if only and name not in only:
                continue
            config = parse_config(CONFIGS[name]) if name in CONFIGS else None
            cloud, task_queue = CLOUDS.get(name, FakeCloud)(), f"golden-{name}"
            extra = EXTRA[name](env.client, cloud, task_queue) if name in EXTRA else None
            sink = SINKS[name]() if name in SINKS else None
            async with running_stack(
                env.client,
                config=config,
                cloud=cloud,
                task_queue=task_queue,
                extra_activities=extra,
                audit_sinks=None if sink is None else {"default": sink},
            ) as stack:
                stack.extra["audit"] = sink
                ids = await scenario(env, stack)
            for number, workflow_id in enumerate(ids):
                # grant:..., sessions:..., drift:...; a request's id has no kind before a colon
                kind = workflow_id.split(":", 1)[0] if ":" in workflow_id else "request"
                if workflow_id.startswith("keycard-config-"):
                    kind = f"config{number + 1}"  # one file per run: id@run, then the last
                await _write(env, workflow_id, HERE / f"{kind}_{name}_{tag}.json", overwrite)
        async with Worker(
            env.client, task_queue="incompatible", workflows=[IncompatibleAccessRequestWorkflow]
        ):
            handle = await env.client.start_workflow(
                IncompatibleAccessRequestWorkflow.run,
                await _sample_input(env),
                id="req-golden-incompatible",
                task_queue="incompatible",
            )
            await handle.result()
        await _write(
            env, "req-golden-incompatible", HERE / "nondeterministic_request.json", overwrite
        )
    finally:
        await env.shutdown()


async def _sample_input(env: WorkflowEnvironment) -> AccessRequestInput:
    async with running_stack(env.client) as stack:
        return stack.keycard.prepare(
            Ask(
                flow="prod-power-user",
                target="prod",
                duration="1h",
                reason="incident 4312",
                requester=ALICE,
            ),
            request_id="req-golden-incompatible",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tag", required=True, help="suffix of the new files, e.g. v3")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="record just this scenario (repeatable): the one a change added",
    )
    args = parser.parse_args()
    asyncio.run(record(args.tag, args.overwrite, args.only))


if __name__ == "__main__":
    main()
