"""`keycard doctor` against a real dev stack (Temporal dev server + seeded moto) and broken ones."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import boto3
import pytest
from aiohttp import web
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import (
    DescribeTaskQueueRequest,
    RegisterNamespaceRequest,
)
from typer.testing import CliRunner

from activities.aws_sessions import MANAGED_POLICY_ACTIONS
from keycard.codec import new_key
from keycard.config import parse_config
from keycard.session_policy import PLACEHOLDER
from main import app
from starter.doctor import diagnose
from starter.doctor.iam_policy import IAM_POLICY, iam_policy_json
from starter.doctor.report import Finding, Level, Report
from starter.run.demo_aws import demo_environment, seed_demo, start_moto_server
from worker import keycard_worker
from workflows.access_request import AccessRequestWorkflow
from workflows.grant import GrantWorkflow

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"

# Every strategy, every shortest duration at least AWS's 1h session: nothing to warn about.
HEALTHY = """
approver_groups:
  sre-leads: [bob@example.com, carol@example.com]
flows:
  - name: prod-power-user
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: PowerUserAccess}
      - {name: staging, account_id: "222222222222", permission_set: PowerUserAccess}
    durations: [1h, 4h]
    approvers: {groups: [sre-leads]}
  - name: on-call
    strategy: aws_sso_group
    targets:
      - {name: responders, group: incident-responders}
    durations: [2h]
    approvers: {users: [bob@example.com, carol@example.com]}
  - name: legacy-deploy
    strategy: aws_iam_group
    targets:
      - {name: deployers, group: legacy-deployers}
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server, endpoint = start_moto_server()
    seed_demo(parse_config(HEALTHY), endpoint, REGION)
    yield endpoint
    server.stop()


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch) -> str:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in demo_environment(moto_endpoint, REGION).items():
        monkeypatch.setenv(name, value)
    return moto_endpoint


class FakeSlack:
    """Slack's auth.test, answering per token like the real Web API."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def app(self) -> web.Application:
        async def auth_test(request: web.Request) -> web.Response:
            token = request.headers.get("Authorization", "").removeprefix("Bearer ")
            self.calls.append(token)
            if token == "xoxb-good":
                return web.json_response(
                    {"ok": True, "user": "keycard", "team": "Example Inc", "user_id": "U1"}
                )
            return web.json_response({"ok": False, "error": "invalid_auth"})

        application = web.Application()
        application.router.add_post("/api/auth.test", auth_test)
        return application


@pytest.fixture
async def slack_url() -> AsyncIterator[tuple[str, FakeSlack]]:
    fake = FakeSlack()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/api/", fake
    await runner.cleanup()


@pytest.fixture
async def stack(dev_env, aws_env, slack_url, monkeypatch, tmp_path) -> AsyncIterator[Path]:
    """A healthy deployment: Temporal with a worker polling, seeded AWS, Slack, a valid config."""
    url, _ = slack_url
    task_queue = f"doctor-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("KEYCARD_TASK_QUEUE", task_queue)
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-good")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "s3cret")
    monkeypatch.setenv("SLACK_API_URL", url)
    config = tmp_path / "keycard.yaml"
    config.write_text(HEALTHY)
    async with keycard_worker(
        dev_env.client, task_queue=task_queue, workflows=[AccessRequestWorkflow, GrantWorkflow]
    ):
        await _until_polled(dev_env.client, task_queue)
        yield config


async def _until_polled(client, task_queue: str) -> None:
    deadline = time.monotonic() + 30
    request = DescribeTaskQueueRequest(
        namespace="default",
        task_queue=TaskQueue(name=task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    while not (await client.workflow_service.describe_task_queue(request)).pollers:
        assert time.monotonic() < deadline, "the worker never polled its task queue"
        await asyncio.sleep(0.05)


def lines(report: Report, level: Level) -> list[str]:
    return [f"{f.check}: {f.message}" for f in report.of(level)]


def only(report: Report, check: str) -> Finding:
    found = [f for f in report.findings if f.check == check]
    assert len(found) == 1, report.findings
    return found[0]


# --- all green -----------------------------------------------------------------------------


async def test_a_healthy_stack_is_all_green(stack):
    report = await diagnose(stack)

    assert lines(report, Level.FAIL) == []
    assert lines(report, Level.WARN) == []
    checks = {f.check for f in report.findings}
    assert {
        "keycard.yaml",
        "temporal",
        "namespace",
        "search attributes",
        "workers",
        "aws credentials",
        "identity center",
        "identity store",
        "target prod-power-user/prod",
        "target prod-power-user/staging",
        "target on-call/responders",
        "target legacy-deploy/deployers",
        "slack",
    } <= checks
    assert (
        "KeycardRequester (Keyword), KeycardFlow (Keyword), KeycardTarget (Keyword), "
        "KeycardState (Keyword), KeycardApprovers (KeywordList), KeycardSubmittedBy (Keyword)"
        in only(report, "search attributes").message
    )
    assert "bot keycard in team Example Inc" in only(report, "slack").message


async def test_the_command_prints_each_check_and_exits_zero_when_green(stack):
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["doctor", "--config", str(stack)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"^OK\s+temporal\s+connected to ", result.output, re.MULTILINE)
    assert "0 FAIL" in result.output
    assert "FAIL " not in result.output


# --- broken set-ups, each named ------------------------------------------------------------


async def test_wrong_temporal_endpoint_fails_clearly(stack, monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("TEMPORAL_ADDRESS", f"127.0.0.1:{port}")

    report = await diagnose(stack)

    temporal = only(report, "temporal")
    assert temporal.level is Level.FAIL
    assert f"cannot reach Temporal at 127.0.0.1:{port} (connection refused)" in temporal.message
    assert "TEMPORAL_ADDRESS" in temporal.message
    # The rest of the deployment is still checked, so one run shows every problem.
    assert only(report, "aws credentials").level is Level.OK
    assert only(report, "slack").level is Level.OK

    result = await asyncio.to_thread(CliRunner().invoke, app, ["doctor", "--config", str(stack)])
    assert result.exit_code == 1
    assert re.search(r"^FAIL\s+temporal\s+cannot reach Temporal", result.output, re.MULTILINE)


async def test_unknown_namespace_fails_clearly(stack, monkeypatch):
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "no-such-namespace")
    report = await diagnose(stack)
    namespace = only(report, "namespace")
    assert namespace.level is Level.FAIL
    assert "namespace 'no-such-namespace' does not exist" in namespace.message
    assert "temporal operator namespace create --namespace no-such-namespace" in namespace.message


async def test_missing_search_attributes_fail_with_the_command_that_creates_them(
    stack, dev_env, monkeypatch
):
    # A namespace created without Keycard's search attributes, like a server set up by hand.
    bare = f"bare-{uuid.uuid4().hex[:8]}"
    await dev_env.client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=bare, workflow_execution_retention_period=_days(1))
    )
    monkeypatch.setenv("TEMPORAL_NAMESPACE", bare)

    report = await diagnose(stack)

    attributes = only(report, "search attributes")
    assert attributes.level is Level.FAIL
    assert (
        "KeycardRequester, KeycardFlow, KeycardTarget, KeycardState, KeycardApprovers, "
        "KeycardSubmittedBy" in attributes.message
    )
    assert (
        f"temporal operator search-attribute create --namespace {bare} "
        "--name KeycardRequester --type Keyword" in attributes.message
    )
    assert "--name KeycardApprovers --type KeywordList" in attributes.message
    assert only(report, "workers").level is Level.WARN  # nobody polls in the new namespace


async def test_unknown_permission_set_fails_naming_the_target(stack):
    stack.write_text(
        HEALTHY.replace(
            "permission_set: PowerUserAccess}\n      - {name: staging",
            "permission_set: PowerUserAcess}\n      - {name: staging",
        )
    )
    report = await diagnose(stack)

    target = only(report, "target prod-power-user/prod")
    assert target.level is Level.FAIL
    assert "permission set 'PowerUserAcess' does not exist" in target.message
    assert "known: " in target.message and "PowerUserAccess" in target.message
    assert only(report, "target prod-power-user/staging").level is Level.OK


async def test_session_longer_than_the_shortest_grant_warns_without_end_sessions(stack, aws_env):
    sso = boto3.client("sso-admin", endpoint_url=aws_env, region_name=REGION)
    instance = sso.list_instances()["Instances"][0]["InstanceArn"]
    sso.create_permission_set(
        Name="BreakGlass", InstanceArn=instance, SessionDuration="PT8H", Description="doctor test"
    )
    flow = """
  - name: break-glass
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: BreakGlass}
    durations: [30m, 2h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""
    stack.write_text(HEALTHY + flow + "    end_sessions: false\n")
    report = await diagnose(stack)

    assert lines(report, Level.FAIL) == []
    [warning] = report.of(Level.WARN)
    assert warning.check == "session duration"
    assert "permission set BreakGlass lets a session last 8h" in warning.message
    assert "longer than flow break-glass's shortest grant (30m)" in warning.message
    assert "outlive the grant by up to 7h30m" in warning.message
    assert "Turn end_sessions on for the flow" in warning.message
    assert "Lower its session duration to 1h, or make the flow's durations at least 8h" in (
        warning.message
    )

    # With end_sessions (the default for aws_sso) the gap is closed: a note, and the check that
    # the deny entries have somewhere to go.
    stack.write_text(HEALTHY + flow)
    report = await diagnose(stack)
    assert report.of(Level.WARN) == [] and lines(report, Level.FAIL) == []
    note = next(f for f in report.findings if f.check == "session duration")
    assert note.level is Level.OK and "end_sessions is on" in note.message
    inline = only(report, "end sessions: BreakGlass")
    assert inline.level is Level.OK
    assert "0 held now" in inline.message and "sso:PutInlinePolicyToPermissionSet" in inline.message


async def test_an_inline_policy_keycard_cannot_add_to_fails(stack, aws_env):
    sso = boto3.client("sso-admin", endpoint_url=aws_env, region_name=REGION)
    instance = sso.list_instances()["Instances"][0]["InstanceArn"]
    arn = next(
        p
        for p in sso.list_permission_sets(InstanceArn=instance)["PermissionSets"]
        if sso.describe_permission_set(InstanceArn=instance, PermissionSetArn=p)["PermissionSet"][
            "Name"
        ]
        == "PowerUserAccess"
    )
    sso.put_inline_policy_to_permission_set(
        InstanceArn=instance, PermissionSetArn=arn, InlinePolicy='["not", "a", "policy"]'
    )
    report = await diagnose(stack)

    failed = only(report, "end sessions: PowerUserAccess")
    assert failed.level is Level.FAIL
    assert "not a policy Keycard can add deny entries to" in failed.message


async def test_a_customer_managed_session_policy_is_checked_in_each_account(stack, aws_env):
    sso = boto3.client("sso-admin", endpoint_url=aws_env, region_name=REGION)
    instance = sso.list_instances()["Instances"][0]["InstanceArn"]
    arn = sso.create_permission_set(Name="Managed", InstanceArn=instance)["PermissionSet"][
        "PermissionSetArn"
    ]
    flow = """
  - name: managed
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: Managed}
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
    end_sessions_policy: {name: KeycardEndSessions, path: /keycard/, role: KeycardSessions}
"""
    stack.write_text(HEALTHY + flow)
    check = "end sessions: managed/prod"

    unreferenced = only(await diagnose(stack), check)
    assert unreferenced.level is Level.FAIL
    assert "does not reference customer-managed policy /keycard/KeycardEndSessions" in (
        unreferenced.message
    )

    sso.attach_customer_managed_policy_reference_to_permission_set(
        InstanceArn=instance,
        PermissionSetArn=arn,
        CustomerManagedPolicyReference={"Name": "KeycardEndSessions", "Path": "/keycard/"},
    )
    missing = only(await diagnose(stack), check)
    assert missing.level is Level.FAIL
    policy_arn = "arn:aws:iam::111111111111:policy/keycard/KeycardEndSessions"
    assert f"customer-managed policy {policy_arn} does not exist" in missing.message

    credentials = boto3.client("sts", endpoint_url=aws_env, region_name=REGION).assume_role(
        RoleArn="arn:aws:iam::111111111111:role/KeycardSessions", RoleSessionName="test"
    )["Credentials"]
    boto3.client(
        "iam",
        endpoint_url=aws_env,
        region_name=REGION,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    ).create_policy(
        PolicyName="KeycardEndSessions",
        Path="/keycard/",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [PLACEHOLDER]}),
    )
    report = await diagnose(stack)
    ready = only(report, check)
    assert ready.level is Level.OK, ready.message
    assert f"deny entries in {policy_arn}" in ready.message and "0 held now" in ready.message
    assert "end sessions: Managed" not in {f.check for f in report.findings}  # not the inline one


async def test_the_example_config_notes_that_sessions_end_with_one_minute_grants(stack):
    stack.write_text((ROOT / "keycard.example.yaml").read_text())
    report = await diagnose(stack)
    notes = [f.message for f in report.findings if f.check == "session duration"]
    assert any(
        "PowerUserAccess lets a session last 1h" in n
        and "shortest grant (1m)" in n
        and "end_sessions is on" in n
        for n in notes
    ), notes


async def test_bad_slack_token_fails(stack, slack_url, monkeypatch):
    _, fake = slack_url
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-revoked")
    report = await diagnose(stack)
    slack = only(report, "slack")
    assert slack.level is Level.FAIL
    assert "Slack rejected SLACK_BOT_TOKEN (invalid_auth)" in slack.message
    assert fake.calls == ["xoxb-revoked"]


async def test_invalid_config_fails_with_its_problems(stack):
    stack.write_text(HEALTHY.replace('"111111111111"', '"1111"'))
    report = await diagnose(stack)
    config = only(report, "keycard.yaml")
    assert config.level is Level.FAIL
    assert "flows[0].targets[0].account_id: must be 12 digits" in config.message
    assert not any(f.check.startswith("target ") for f in report.findings)


async def test_hooks_files_are_loaded_as_the_worker_will(stack):
    (stack.parent / "hooks").mkdir()
    (stack.parent / "hooks" / "prod.py").write_text("import no_such_module_for_keycard\n")
    stack.write_text(
        HEALTHY.replace(
            "    durations: [1h, 4h]\n", "    durations: [1h, 4h]\n    hooks: hooks/prod.py\n"
        )
    )

    report = await diagnose(stack)

    hooks = only(report, "hooks")
    assert hooks.level is Level.FAIL
    assert "hooks/prod.py cannot be used" in hooks.message
    assert "no_such_module_for_keycard" in hooks.message
    assert "keycard hooks check hooks/prod.py" in hooks.message


async def test_bad_process_settings_fail_and_the_rest_is_still_checked(stack, monkeypatch):
    monkeypatch.setenv("KEYCARD_WORKER_SHUTDOWN_GRACE", "30")
    report = await diagnose(stack)
    settings = only(report, "settings")
    assert settings.level is Level.FAIL
    assert "KEYCARD_WORKER_SHUTDOWN_GRACE: '30' is not a duration" in settings.message
    assert only(report, "temporal").level is Level.OK


async def test_the_payload_key_is_checked_and_named_but_never_shown(stack, monkeypatch):
    assert "plain text" in only(await diagnose(stack), "payload key").message

    monkeypatch.setenv("KEYCARD_PAYLOAD_KEY", "k1:c2hvcnQ=")
    short = only(await diagnose(stack), "payload key")
    assert short.level is Level.FAIL and "5 bytes; AES-256 needs 32" in short.message
    assert "c2hvcnQ" not in short.message

    monkeypatch.setenv("KEYCARD_PAYLOAD_KEY", f"{new_key('k2')},{new_key('k1')}")
    good = only(await diagnose(stack), "payload key")
    assert good.level is Level.OK and "key 'k2'; 1 older key(s) still decrypt" in good.message


# --- the IAM policy ------------------------------------------------------------------------


def test_shipped_policy_file_is_the_one_doctor_prints():
    assert (ROOT / "deploy" / "iam-policy.json").read_text() == iam_policy_json()
    result = CliRunner().invoke(app, ["doctor", "--iam-policy"])
    assert result.exit_code == 0
    assert json.loads(result.output) == IAM_POLICY


def test_policy_allows_every_aws_call_keycard_makes_and_nothing_else():
    """Every boto3 operation in the strategy activities and the doctor, as IAM actions."""
    prefixes = {
        "sso-admin": "sso",
        "identitystore": "identitystore",
        "iam": "iam",
        "cloudtrail": "cloudtrail",
    }
    # Which AWS services each module talks to; names like list_users exist in several.
    modules = {
        "activities/aws_sso.py": ["sso-admin", "identitystore"],
        "activities/aws_sessions.py": ["sso-admin"],
        "activities/aws_iam.py": ["iam"],
        "activities/aws_activity.py": ["sso-admin", "identitystore", "cloudtrail"],
        "starter/doctor/aws.py": ["sso-admin", "identitystore", "iam"],
    }
    session = boto3.session.Session(region_name=REGION)
    called: set[str] = set()
    for module, services in modules.items():
        code = (ROOT / module).read_text()
        for service in services:
            client = session.client(service, aws_access_key_id="x", aws_secret_access_key="x")
            for method, operation in client.meta.method_to_api_mapping.items():
                # Calls (client.get_user_id), and operations named for paginators ("list_users").
                if re.search(rf"\.{method}\b|[\"']{method}[\"']", code):
                    called.add(f"{prefixes[service]}:{operation}")
    # The IAM calls on a customer-managed policy (end_sessions_policy) are made as the flow's role
    # in each account, not as Keycard's own: that role's policy is MANAGED_POLICY_ACTIONS.
    as_writer = {
        f"iam:{operation}"
        for method, operation in session.client(
            "iam", aws_access_key_id="x", aws_secret_access_key="x"
        ).meta.method_to_api_mapping.items()
        if re.search(rf"\._iam\.{method}\b", (ROOT / "activities/aws_sessions.py").read_text())
    }
    assert as_writer == set(MANAGED_POLICY_ACTIONS)
    called -= {"iam:GetPolicy", "iam:GetPolicyVersion"}  # the doctor's reads, as the writer role
    allowed = {action for statement in IAM_POLICY["Statement"] for action in statement["Action"]}
    assert called - allowed == set(), "Keycard calls these but the policy does not allow them"
    assert allowed - called == set(), "the policy allows these but Keycard never calls them"


def _days(n: int):
    from google.protobuf.duration_pb2 import Duration

    return Duration(seconds=int(timedelta(days=n).total_seconds()))
