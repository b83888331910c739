"""`keycard doctor`: check a deployment before a user finds out what is wrong with it.

Every check reads only: it connects, describes and lists, and never changes Temporal, AWS or
Slack. Each finding is OK, WARN or FAIL with one sentence saying what was found and what to do.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from temporalio.api.enums.v1 import IndexedValueType, TaskQueueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.service import RPCError, RPCStatusCode

from keycard import temporal as names
from keycard.codec import KEY_ENV, PayloadKeyError, PayloadKeys
from keycard.config import (
    AwsIamGroupFlow,
    AwsSsoFlow,
    AwsSsoGroupFlow,
    ConfigError,
    KeycardConfig,
    load_config,
    unset_environment,
)
from keycard.durations import format_duration
from keycard.settings import Settings, SlackSettings
from keycard.strategies import STRATEGIES
from starter.cli.terminal import config_path_for

# --- the minimal IAM policy --------------------------------------------------------------------

# Exactly the calls the strategy activities (activities/aws_sso.py, aws_sessions.py, aws_iam.py)
# and this doctor make; tests/starter/test_doctor.py checks both ways. deploy/iam-policy.json is this, printed.
IAM_POLICY: dict[str, Any] = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "KeycardReadIdentityCenter",
            "Effect": "Allow",
            "Action": [
                "sso:DescribeAccountAssignmentCreationStatus",
                "sso:DescribeAccountAssignmentDeletionStatus",
                "sso:DescribePermissionSet",
                "sso:ListAccountAssignments",
                "sso:ListAccountAssignmentsForPrincipal",
                "sso:ListCustomerManagedPolicyReferencesInPermissionSet",
                "sso:ListInstances",
                "sso:ListPermissionSets",
            ],
            "Resource": "*",
        },
        {
            "Sid": "KeycardAssignPermissionSets",
            "Effect": "Allow",
            "Action": ["sso:CreateAccountAssignment", "sso:DeleteAccountAssignment"],
            "Resource": "*",
        },
        {
            "Sid": "KeycardEndSessions",
            "Effect": "Allow",
            "Action": [
                "sso:DeleteInlinePolicyFromPermissionSet",
                "sso:DescribePermissionSetProvisioningStatus",
                "sso:GetInlinePolicyForPermissionSet",
                "sso:ProvisionPermissionSet",
                "sso:PutInlinePolicyToPermissionSet",
            ],
            "Resource": "*",
        },
        {
            "Sid": "KeycardIdentityStore",
            "Effect": "Allow",
            "Action": [
                "identitystore:CreateGroupMembership",
                "identitystore:DeleteGroupMembership",
                "identitystore:DescribeUser",
                "identitystore:GetGroupId",
                "identitystore:GetGroupMembershipId",
                "identitystore:GetUserId",
            ],
            "Resource": "*",
        },
        {
            "Sid": "KeycardIamGroups",
            "Effect": "Allow",
            "Action": [
                "iam:AddUserToGroup",
                "iam:GetGroup",
                "iam:GetUser",
                "iam:ListGroupsForUser",
                "iam:ListUserTags",
                "iam:ListUsers",
                "iam:RemoveUserFromGroup",
            ],
            "Resource": "*",
        },
    ],
}


def iam_policy_json() -> str:
    return json.dumps(IAM_POLICY, indent=2) + "\n"


# --- findings ----------------------------------------------------------------------------------


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    message: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, check: str, message: str) -> None:
        self.findings.append(Finding(level, check, message))

    def ok(self, check: str, message: str) -> None:
        self.add(Level.OK, check, message)

    def warn(self, check: str, message: str) -> None:
        self.add(Level.WARN, check, message)

    def fail(self, check: str, message: str) -> None:
        self.add(Level.FAIL, check, message)

    @property
    def failed(self) -> bool:
        return any(f.level is Level.FAIL for f in self.findings)

    def of(self, level: Level) -> list[Finding]:
        return [f for f in self.findings if f.level is level]


POLICY_HINT = "the minimal policy is in deploy/iam-policy.json (or `keycard doctor --iam-policy`)"
CONNECT_TIMEOUT = 10.0
STRATEGY_CHECK_TIMEOUT = 20.0  # a strategy's own check (Okta: one call per target)
# AWS never lets a permission set's session be shorter than this.
AWS_MIN_SESSION = timedelta(hours=1)


# --- entry points ------------------------------------------------------------------------------


async def diagnose(config_path: Path, state_dir: Path = Path(".keycard")) -> Report:
    """Run every check with the settings the worker would use: its environment, as it is; or,
    beside a running `keycard dev` and with no AWS or Temporal settings of one's own, that dev's
    demo AWS and Temporal, which its worker uses."""
    env = dict(os.environ)
    report = Report()
    demo = _beside_keycard_dev(report, env, state_dir)
    config = _check_config(report, config_path)
    try:
        task_queue = Settings.from_env(env).task_queue
    except ValueError as err:
        report.fail("settings", f"{err}.")
        task_queue = names.DEFAULT_TASK_QUEUE
    _check_payload_key(report, env)
    await _check_sso(report, env)
    await _check_temporal(report, env, task_queue)
    if config is not None:
        if config.uses_aws:
            await asyncio.to_thread(_check_aws, report, config, demo)
        await _check_strategies(report, config, env)
    await _check_slack(report, env)
    await asyncio.to_thread(_check_pagerduty, report, env, config)
    return report


def doctor(
    config_path: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="keycard.yaml (default: $KEYCARD_CONFIG)"),
    ] = None,
    iam_policy: Annotated[
        bool, typer.Option("--iam-policy", help="print the minimal IAM policy and exit")
    ] = False,
) -> None:
    """Check Temporal, AWS Identity Center, Slack and keycard.yaml; exit 1 if anything fails."""
    if iam_policy:
        typer.echo(iam_policy_json(), nl=False)
        return

    report = asyncio.run(diagnose(config_path_for(config_path)))
    colours = {Level.OK: typer.colors.GREEN, Level.WARN: typer.colors.YELLOW}
    width = max((len(f.check) for f in report.findings), default=0)
    for finding in report.findings:
        label = typer.style(f"{finding.level.value:<4}", fg=colours.get(finding.level, "red"))
        typer.echo(f"{label}  {finding.check:<{width}}  {finding.message}")
    counts = {level: len(report.of(level)) for level in Level}
    summary = ", ".join(f"{counts[level]} {level.value}" for level in Level)
    if report.failed:
        typer.secho(f"\n{summary}: fix the FAIL lines above.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.secho(f"\n{summary}.", fg=typer.colors.GREEN)


# --- keycard.yaml ------------------------------------------------------------------------------


def _check_config(report: Report, path: Path) -> KeycardConfig | None:
    try:
        config = load_config(path)
    except ConfigError as err:
        report.fail(
            "keycard.yaml",
            f"{err.source} is not valid: {'; '.join(err.problems)}. Fix it; "
            f"`keycard flows validate {path}` shows each problem with its location.",
        )
        return None
    targets = sum(len(flow.targets) for flow in config.flows)
    report.ok("keycard.yaml", f"{path} is valid: {len(config.flows)} flows, {targets} targets.")
    for problem in unset_environment(config):
        report.fail("environment", f"{problem}.")
    _check_hooks(report, config)
    return config


def _check_hooks(report: Report, config: KeycardConfig) -> None:
    """Import each hooks file the flows name, as the worker will; report what it would reject."""
    from keycard.sdk.loader import load_hooks_file

    files = dict.fromkeys(flow.hooks for flow in config.flows if flow.hooks)
    for name in files:
        hooks = load_hooks_file(config.base_dir / name)
        if hooks.ok:
            found = ", ".join(sorted(hooks.functions)) or "no hooks"
            report.ok("hooks", f"{name} loads ({found}).")
        else:
            report.fail(
                "hooks",
                f"{name} cannot be used: {'; '.join(hooks.problems)}. Fix it and check it with "
                f"`keycard hooks check {name}`.",
            )


async def _check_strategies(report: Report, config: KeycardConfig, env: Mapping[str, str]) -> None:
    """Each flow of a strategy other than AWS's: its strategy loads, and its own `check` (Okta:
    each group exists; http: its secret and header variables are set) finds nothing wrong."""
    from activities.registry import StrategyContext, strategy_for_flow

    context = StrategyContext(config, None, config.base_dir, env)
    for flow in config.flows:
        if STRATEGIES[flow.strategy].aws:
            continue
        check = f"flow {flow.name} ({flow.strategy})"
        try:
            strategy = strategy_for_flow(flow, context)
            targets = {t.name: t.spec_settings() for t in flow.targets}
            problems = await asyncio.wait_for(strategy.check(targets), STRATEGY_CHECK_TIMEOUT)
        except Exception as err:  # the strategy's own code: whatever it raises is the finding
            report.fail(check, f"cannot be checked: {_short(err)}.")
            continue
        if problems:
            report.fail(check, "; ".join(problems) + ".")
        else:
            report.ok(check, f"{len(flow.targets)} target(s) check out.")


# --- Temporal ----------------------------------------------------------------------------------


async def _check_temporal(report: Report, env: Mapping[str, str], task_queue: str) -> None:
    try:
        connect = ClientConfig.load_client_connect_config(override_env_vars=env)
    except Exception as err:  # a malformed temporal.toml or TLS file: say which
        report.fail(
            "temporal",
            f"Temporal's client settings cannot be read ({err}). Check TEMPORAL_CONFIG_FILE, "
            "TEMPORAL_PROFILE and the TEMPORAL_TLS_* paths.",
        )
        return
    connect.setdefault("target_host", "localhost:7233")
    address, namespace = connect["target_host"], connect.get("namespace", "default")
    try:
        client = await asyncio.wait_for(Client.connect(**connect), CONNECT_TIMEOUT)
    except Exception as err:
        report.fail(
            "temporal",
            f"cannot reach Temporal at {address} ({_connect_problem(err)}). Set "
            "TEMPORAL_ADDRESS to the frontend's host:port; for Temporal Cloud also TEMPORAL_API_KEY or the "
            "TEMPORAL_TLS_CLIENT_CERT_PATH/_KEY_PATH pair (docs/deployment.md).",
        )
        return
    report.ok("temporal", f"connected to {address}.")

    try:
        await client.workflow_service.describe_namespace(
            DescribeNamespaceRequest(namespace=namespace)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            report.fail(
                "namespace",
                f"namespace {namespace!r} does not exist on {address}. Create it "
                f"(temporal operator namespace create --namespace {namespace}) or set "
                "TEMPORAL_NAMESPACE to the one Keycard should use.",
            )
            return
        report.fail("namespace", f"cannot describe namespace {namespace!r}: {_short(err)}.")
        return
    report.ok("namespace", f"namespace {namespace!r} exists.")

    await _check_search_attributes(report, client, namespace)
    await _check_pollers(report, client, namespace, task_queue)


def _type_name(value: int) -> str:
    """KEYWORD_LIST -> KeywordList: how `temporal operator search-attribute create` spells it."""
    name = IndexedValueType.Name(value).removeprefix("INDEXED_VALUE_TYPE_")
    return "".join(part.capitalize() for part in name.split("_"))


def _expected() -> str:
    return ", ".join(
        f"{k.name} ({_type_name(int(k.indexed_value_type))})" for k in names.SEARCH_ATTRIBUTES
    )


async def _check_search_attributes(report: Report, client: Client, namespace: str) -> None:
    try:
        response = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as err:
        report.warn(
            "search attributes",
            f"cannot list the search attributes of {namespace!r} ({_short(err)}); make sure "
            f"these exist: {_expected()}.",
        )
        return
    existing = dict(response.custom_attributes)
    missing = [k for k in names.SEARCH_ATTRIBUTES if k.name not in existing]
    wrong = [
        k
        for k in names.SEARCH_ATTRIBUTES
        if k.name in existing and existing[k.name] != int(k.indexed_value_type)
    ]
    if missing:
        create = " ".join(
            f"--name {k.name} --type {_type_name(int(k.indexed_value_type))}" for k in missing
        )
        report.fail(
            "search attributes",
            f"missing in namespace {namespace!r}: {', '.join(k.name for k in missing)}; new "
            f"requests cannot start without them. Create them: temporal operator "
            f"search-attribute create --namespace {namespace} {create}",
        )
    if wrong:
        report.fail(
            "search attributes",
            "; ".join(
                f"{k.name} is {_type_name(existing[k.name])} in namespace {namespace!r}, but "
                f"Keycard needs {_type_name(int(k.indexed_value_type))}"
                for k in wrong
            )
            + ". Remove and re-create them with that type.",
        )
    if not missing and not wrong:
        report.ok("search attributes", f"{_expected()} exist.")


async def _check_pollers(report: Report, client: Client, namespace: str, task_queue: str) -> None:
    try:
        response = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
            )
        )
    except RPCError as err:
        report.warn("workers", f"cannot describe task queue {task_queue!r}: {_short(err)}.")
        return
    pollers = {poller.identity for poller in response.pollers}
    if not pollers:
        report.warn(
            "workers",
            f"no worker has polled task queue {task_queue!r} in namespace {namespace!r} lately; "
            "requests will wait until one does. Start `keycard worker` with the same TEMPORAL_* "
            "settings and KEYCARD_TASK_QUEUE.",
        )
        return
    report.ok("workers", f"{len(pollers)} worker(s) polling task queue {task_queue!r}.")


# --- AWS ---------------------------------------------------------------------------------------


@dataclass
class _PermissionSet:
    name: str
    arn: str
    session: timedelta | None


def _beside_keycard_dev(
    report: Report, env: dict[str, str], state_dir: Path
) -> tuple[str, str] | None:
    """The demo AWS (endpoint, region) of a `keycard dev` running here, when this shell has no
    AWS settings of its own; its Temporal address goes into `env` unless one is set."""
    from starter.dev_state import read_dev_state
    from starter.run.dev import aws_configured

    try:
        state = read_dev_state(state_dir)
    except (FileNotFoundError, ValueError):
        return None
    if not env.get("TEMPORAL_ADDRESS") and state.get("temporal_address"):
        env["TEMPORAL_ADDRESS"] = state["temporal_address"]
    if aws_configured() or not state.get("aws_endpoint"):
        return None
    report.ok(
        "keycard dev",
        f"running here: checking its Temporal at {env.get('TEMPORAL_ADDRESS')} and its demo AWS "
        f"at {state['aws_endpoint']}.",
    )
    return state["aws_endpoint"], state.get("aws_region") or "us-east-1"


def _check_aws(report: Report, config: KeycardConfig, demo: tuple[str, str] | None = None) -> None:
    """`demo`: the (endpoint, region) of `keycard dev`'s demo AWS instead of this process's AWS."""
    import boto3  # only the doctor and the worker talk to AWS; keep `keycard --help` fast
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    strategies = {flow.strategy for flow in config.flows}
    endpoint = None
    if demo is not None:
        from starter.run.demo_aws import DEMO_CREDENTIALS

        endpoint, demo_region = demo
        session = boto3.session.Session(region_name=demo_region, **DEMO_CREDENTIALS)
    else:
        session = boto3.session.Session(region_name=config.aws.region)
    region = config.aws.region or session.region_name
    if not region:
        report.fail(
            "aws",
            "no AWS region: set aws.region in keycard.yaml or AWS_REGION in the environment.",
        )
        return
    # One quick attempt per call: the doctor reports a problem, it does not wait it out.
    quick = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5)

    def client(service: str) -> Any:
        return session.client(service, region_name=region, config=quick, endpoint_url=endpoint)

    def client_as(role_arn: str, service: str) -> Any:
        """A client acting as `role_arn` (end_sessions_policy's writer role in an account)."""
        assumed = client("sts").assume_role(RoleArn=role_arn, RoleSessionName="keycard-doctor")
        credentials = assumed["Credentials"]
        return session.client(
            service,
            region_name=region,
            config=quick,
            endpoint_url=endpoint,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    def call(check: str, action: str, fn: Callable[[], Any], not_found: str | None = None) -> Any:
        """Run one AWS call; on failure record a FAIL naming the action and return None."""
        try:
            return fn()
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code", "")
            if not_found and code in {"ResourceNotFoundException", "NoSuchEntity"}:
                report.fail(check, not_found)
            elif "AccessDenied" in code or code in {"UnauthorizedOperation", "AccessDenied"}:
                report.fail(
                    check,
                    f"the AWS credentials may not call {action} ({code}); grant it: {POLICY_HINT}.",
                )
            else:
                report.fail(check, f"{action} failed: {_short(err)}.")
        except BotoCoreError as err:
            report.fail(check, f"{action} failed: {_short(err)}. Check AWS_ENDPOINT_URL/region.")
        return None

    if session.get_credentials() is None:
        report.fail(
            "aws credentials",
            "no AWS credentials found: give the worker a role (ECS task role, EKS IRSA or Pod "
            "Identity) or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.",
        )
        return
    identity = call("aws credentials", "sts:GetCallerIdentity", client("sts").get_caller_identity)
    if identity is None:
        return
    report.ok("aws credentials", f"AWS accepts the credentials of {identity['Arn']}.")

    if strategies & {"aws_sso", "aws_sso_group"}:
        _check_identity_center(report, config, client, call, client_as)
    if "aws_iam_group" in strategies:
        iam = client("iam")
        for flow in config.flows:
            if isinstance(flow, AwsIamGroupFlow):
                for target in flow.targets:
                    where = f"target {flow.name}/{target.name}"
                    found = call(
                        where,
                        "iam:GetGroup",
                        lambda group=target.group: iam.get_group(GroupName=group, MaxItems=1),
                        not_found=f"IAM group {target.group!r} does not exist; create it or fix "
                        "the target's `group`.",
                    )
                    if found is not None:
                        report.ok(where, f"IAM group {target.group!r} exists.")


def _check_identity_center(report: Report, config: KeycardConfig, client, call, client_as) -> None:
    sso_admin, store = client("sso-admin"), client("identitystore")
    pages = call(
        "identity center",
        "sso:ListInstances",
        lambda: list(sso_admin.get_paginator("list_instances").paginate()),
    )
    if pages is None:
        return
    instances = [i for page in pages for i in page.get("Instances", [])]
    wanted = config.aws.sso_instance_arn
    chosen = [i for i in instances if not wanted or i["InstanceArn"] == wanted]
    if len(chosen) != 1:
        found = ", ".join(i["InstanceArn"] for i in instances) or "none"
        report.fail(
            "identity center",
            (
                f"instance {wanted} is not among this account's instances ({found}); fix "
                "aws.sso_instance_arn."
                if wanted
                else f"expected exactly one Identity Center instance, found {found}. Enable "
                "Identity Center, or name the instance in aws.sso_instance_arn."
            ),
        )
        return
    instance_arn = chosen[0]["InstanceArn"]
    store_id = config.aws.identity_store_id or chosen[0]["IdentityStoreId"]
    report.ok("identity center", f"instance {instance_arn}, identity store {store_id}.")

    # A lookup of an address nobody has proves identitystore:GetUserId is allowed, changing nothing.
    probe = call(
        "identity store",
        "identitystore:GetUserId",
        lambda: _user_lookup_allowed(store, store_id),
    )
    if probe is not None:
        report.ok("identity store", "users can be looked up by email (identitystore:GetUserId).")

    sets = _permission_sets(call, sso_admin, instance_arn)
    if sets is None:
        return
    ending: set[str] = set()  # permission sets whose sessions some flow ends
    for flow in config.flows:
        if isinstance(flow, AwsSsoFlow):
            _check_sso_flow(report, flow, sets, instance_arn, sso_admin, call)
            if flow.ends_sessions and flow.end_sessions_policy is None:
                ending |= {
                    sets[t.permission_set].arn for t in flow.targets if t.permission_set in sets
                }
        elif isinstance(flow, AwsSsoGroupFlow):
            for target in flow.targets:
                where = f"target {flow.name}/{target.name}"
                found = call(
                    where,
                    "identitystore:GetGroupId",
                    lambda group=target.group: store.get_group_id(
                        IdentityStoreId=store_id,
                        AlternateIdentifier={
                            "UniqueAttribute": {
                                "AttributePath": "displayName",
                                "AttributeValue": group,
                            }
                        },
                    ),
                    not_found=f"Identity Center group {target.group!r} does not exist in store "
                    f"{store_id}; create it or fix the target's `group`.",
                )
                if found is not None:
                    report.ok(where, f"Identity Center group {target.group!r} exists.")
    _check_end_sessions(report, ending, sets, instance_arn, sso_admin, call)
    for flow in config.flows:
        if isinstance(flow, AwsSsoFlow) and flow.ends_sessions and flow.end_sessions_policy:
            _check_managed_session_policy(
                report, flow, sets, instance_arn, sso_admin, call, client_as
            )


def _user_lookup_allowed(store, store_id: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        store.get_user_id(
            IdentityStoreId=store_id,
            AlternateIdentifier={
                "UniqueAttribute": {
                    "AttributePath": "emails.value",
                    "AttributeValue": "keycard-doctor-probe@invalid.example",
                }
            },
        )
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
            raise
    return True


def _permission_sets(call, sso_admin, instance_arn: str) -> dict[str, _PermissionSet] | None:
    pages = call(
        "permission sets",
        "sso:ListPermissionSets",
        lambda: list(
            sso_admin.get_paginator("list_permission_sets").paginate(InstanceArn=instance_arn)
        ),
    )
    if pages is None:
        return None
    sets: dict[str, _PermissionSet] = {}
    for arn in (a for page in pages for a in page.get("PermissionSets", [])):
        described = call(
            "permission sets",
            "sso:DescribePermissionSet",
            lambda arn=arn: sso_admin.describe_permission_set(
                InstanceArn=instance_arn, PermissionSetArn=arn
            ),
        )
        if described is None:
            return None
        details = described["PermissionSet"]
        entry = _PermissionSet(details["Name"], arn, _session_duration(details))
        sets[entry.name] = sets[entry.arn] = entry
    return sets


def _check_end_sessions(report, arns: set[str], sets, instance_arn, sso_admin, call) -> None:
    """end_sessions writes deny entries into these permission sets' inline policies: each must be
    readable (and a policy Keycard can merge into), with room left under AWS's limit."""
    from keycard import session_policy

    for arn in sorted(arns):
        name = sets[arn].name
        check = f"end sessions: {name}"
        found = call(
            check,
            "sso:GetInlinePolicyForPermissionSet",
            lambda arn=arn: sso_admin.get_inline_policy_for_permission_set(
                InstanceArn=instance_arn, PermissionSetArn=arn
            ),
        )
        if found is None:
            continue
        policy = found.get("InlinePolicy") or None
        try:
            held = session_policy.entries(policy)
        except (ValueError, KeyError, TypeError) as err:
            report.fail(
                check,
                f"the inline policy of permission set {name} is not a policy Keycard can add "
                f"deny entries to ({err}); fix it in IAM Identity Center.",
            )
            continue
        size = len(policy or "")
        room = (session_policy.INLINE_POLICY_LIMIT - size) // 260  # about one entry's size
        message = (
            f"ended grants' sessions are cut with deny entries in permission set {name}'s inline "
            f"policy ({len(held)} held now, {size} of {session_policy.INLINE_POLICY_LIMIT} "
            f"characters used, room for about {room} more). Keycard's role also needs "
            "sso:PutInlinePolicyToPermissionSet, sso:DeleteInlinePolicyFromPermissionSet, "
            "sso:ProvisionPermissionSet and sso:DescribePermissionSetProvisioningStatus, which "
            f"the doctor cannot try without changing AWS: {POLICY_HINT}."
        )
        if room < 10:
            report.warn(check, message)
        else:
            report.ok(check, message)


def _check_managed_session_policy(
    report, flow: AwsSsoFlow, sets, instance_arn, sso_admin, call, client_as
) -> None:
    """end_sessions_policy: each target's permission set must reference the policy (or the deny
    entries would apply to nobody), and the flow's role must be assumable in each account and
    able to read the policy there, with room under IAM's limit."""
    from keycard import session_policy

    managed = flow.end_sessions_policy
    assert managed is not None
    shown = f"{managed.path}{managed.name}"
    partition = session_policy.partition(instance_arn)
    checked: set[tuple[str, str]] = set()
    for target in flow.targets:
        found = sets.get(target.permission_set)
        if found is None or (found.arn, target.account_id) in checked:
            continue  # a missing permission set is the target check's failure
        checked.add((found.arn, target.account_id))
        check = f"end sessions: {flow.name}/{target.name}"
        references = call(
            check,
            "sso:ListCustomerManagedPolicyReferencesInPermissionSet",
            lambda arn=found.arn: (
                sso_admin.list_customer_managed_policy_references_in_permission_set(
                    InstanceArn=instance_arn, PermissionSetArn=arn
                )
            ),
        )
        if references is None:
            continue
        named = {
            (ref["Name"], ref.get("Path") or "/")
            for ref in references.get("CustomerManagedPolicyReferences", [])
        }
        if (managed.name, managed.path) not in named:
            report.fail(
                check,
                f"permission set {found.name} does not reference customer-managed policy {shown}, "
                "so its deny entries would apply to nobody: attach it to the permission set "
                "(AttachCustomerManagedPolicyReferenceToPermissionSet), or remove "
                "end_sessions_policy to use the inline policy.",
            )
            continue
        role_arn = managed.role_arn(target.account_id, partition)
        iam = call(
            check,
            f"sts:AssumeRole on {role_arn}",
            lambda role_arn=role_arn: client_as(role_arn, "iam"),
        )
        if iam is None:
            continue
        policy_arn = managed.policy_arn(target.account_id, partition)
        described = call(
            check,
            f"iam:GetPolicy (as {role_arn})",
            lambda iam=iam, arn=policy_arn: iam.get_policy(PolicyArn=arn),
            not_found=f"customer-managed policy {policy_arn} does not exist; create it in account "
            f"{target.account_id} (any statement will do, e.g. Allow sts:GetCallerIdentity).",
        )
        if described is None:
            continue
        version = call(
            check,
            f"iam:GetPolicyVersion (as {role_arn})",
            lambda iam=iam, arn=policy_arn, v=described["Policy"]["DefaultVersionId"]: (
                iam.get_policy_version(PolicyArn=arn, VersionId=v)
            ),
        )
        if version is None:
            continue
        document = json.dumps(version["PolicyVersion"]["Document"], separators=(",", ":"))
        held = session_policy.entries(document)
        room = (session_policy.MANAGED_POLICY_LIMIT - len(document)) // 400  # about one entry
        message = (
            f"ended grants' sessions of permission set {found.name} are cut with deny entries in "
            f"{policy_arn}, written as {role_arn} ({len(held)} held now, room for about {room} "
            "more). That role also needs iam:ListPolicyVersions, iam:CreatePolicyVersion and "
            "iam:DeletePolicyVersion on the policy, which the doctor cannot try without "
            "changing AWS."
        )
        if room < 3:
            report.warn(check, message)
        else:
            report.ok(check, message)


def _check_sso_flow(report, flow: AwsSsoFlow, sets, instance_arn, sso_admin, call) -> None:
    shortest = min(flow.durations)
    warned: set[str] = set()
    for target in flow.targets:
        where = f"target {flow.name}/{target.name}"
        if not re.fullmatch(r"\d{12}", target.account_id):
            report.fail(where, f"account id {target.account_id!r} is not 12 digits; fix it.")
            continue
        found = sets.get(target.permission_set)
        if found is None:
            known = ", ".join(sorted({s.name for s in sets.values()})) or "none"
            report.fail(
                where,
                f"permission set {target.permission_set!r} does not exist in {instance_arn} "
                f"(known: {known}); create it or fix the target's `permission_set`.",
            )
            continue
        listed = call(
            where,
            "sso:ListAccountAssignments",
            lambda found=found, account=target.account_id: sso_admin.list_account_assignments(
                InstanceArn=instance_arn,
                AccountId=account,
                PermissionSetArn=found.arn,
                MaxResults=1,
            ),
        )
        if listed is None:
            continue
        report.ok(where, f"permission set {found.name} in account {target.account_id}.")
        session = found.session or AWS_MIN_SESSION
        if session > shortest and found.arn not in warned and flow.ends_sessions:
            warned.add(found.arn)
            report.ok(
                "session duration",
                f"permission set {found.name} lets a session last {format_duration(session)}, "
                f"longer than flow {flow.name}'s shortest grant ({format_duration(shortest)}); "
                "end_sessions is on, so a grant's open sessions are denied when it ends.",
            )
        elif session > shortest and found.arn not in warned:
            warned.add(found.arn)
            longer = f"make the flow's durations at least {format_duration(session)}"
            floor = max(shortest, AWS_MIN_SESSION)
            fix = (
                f"Lower its session duration to {format_duration(floor)}, or {longer}"
                if session > floor
                else f"AWS sessions last at least {format_duration(AWS_MIN_SESSION)}: {longer}"
            )
            report.warn(
                "session duration",
                f"permission set {found.name} lets a session last {format_duration(session)}, "
                f"longer than flow {flow.name}'s shortest grant ({format_duration(shortest)}): "
                "revoking the assignment does not end a session already open, so access can "
                f"outlive the grant by up to {format_duration(session - shortest)}. Turn "
                f"end_sessions on for the flow, or: {fix} where the gap matters.",
            )


_ISO_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?$")


def _session_duration(details: Mapping[str, Any]) -> timedelta | None:
    """DescribePermissionSet's SessionDuration: ISO 8601 ("PT8H"); absent means AWS's 1h."""
    value = details.get("SessionDuration")
    if isinstance(value, int | float):  # some AWS look-alikes answer in seconds
        return timedelta(seconds=value)
    match = _ISO_DURATION.match(str(value or ""))
    if not match or not any(match.groups()):
        return None
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


# --- Slack -------------------------------------------------------------------------------------


async def _check_slack(report: Report, env: Mapping[str, str]) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    slack = SlackSettings.from_env(dict(env))  # the settings the worker and the API read
    if not slack.enabled:
        report.ok(
            "slack",
            "not configured (SLACK_BOT_TOKEN is unset): notifications go to the worker's log.",
        )
        return
    base_url = slack.api_url.rstrip("/") + "/"
    web = AsyncWebClient(token=slack.bot_token, base_url=base_url, timeout=10)
    try:
        answer = await web.auth_test()
    except SlackApiError as err:
        error = err.response.get("error", "error")
        report.fail(
            "slack",
            f"Slack rejected SLACK_BOT_TOKEN ({error}). Copy the Bot User OAuth Token (xoxb-...) "
            "from your Slack app's OAuth & Permissions page, and reinstall the app if it was "
            "revoked.",
        )
        return
    except Exception as err:
        report.fail("slack", f"cannot reach Slack at {base_url} ({_short(err)}).")
        return
    report.ok("slack", f"token works: bot {answer.get('user')} in team {answer.get('team')}.")
    if not slack.signing_secret and not slack.socket_mode:
        report.warn(
            "slack",
            "SLACK_SIGNING_SECRET is unset, so the API cannot verify requests from Slack; copy "
            "it from your Slack app's Basic Information page (or use Socket Mode: "
            "SLACK_APP_TOKEN).",
        )


# --- payload encryption --------------------------------------------------------------------------


def _check_payload_key(report: Report, env: Mapping[str, str]) -> None:
    try:
        keys = PayloadKeys.from_env(env)
    except PayloadKeyError as err:
        report.fail("payload key", f"{err}.")
        return
    if keys is None:
        report.ok(
            "payload key",
            f"not set: reasons, emails and fields are plain text in Temporal ({KEY_ENV}, "
            "docs/deployment.md).",
        )
        return
    older = len(keys.by_id) - 1
    report.ok(
        "payload key",
        f"payloads are encrypted with key {keys.current!r}"
        + (f"; {older} older key(s) still decrypt." if older else "."),
    )


# --- the console's single sign-on ---------------------------------------------------------------


async def _check_sso(report: Report, env: Mapping[str, str]) -> None:
    from starter.sso import SsoSettings, SsoSettingsError, public_url

    try:
        sso = SsoSettings.from_env(env)
        public_url(env)
    except SsoSettingsError as err:
        report.fail("single sign-on", f"{err}.")
        return
    if sso is None:
        report.ok("single sign-on", "not configured: the console signs people in with tokens.")
        return
    metadata_url = f"{sso.issuer}/.well-known/openid-configuration"
    try:
        async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT) as http:
            answer = await http.get(metadata_url)
            answer.raise_for_status()
            metadata = answer.json()
    except (httpx.HTTPError, ValueError) as err:
        report.fail(
            "single sign-on", f"{metadata_url} did not answer with metadata ({_short(err)})."
        )
        return
    if metadata.get("issuer", "").rstrip("/") != sso.issuer:
        report.fail(
            "single sign-on",
            f"the provider calls itself {metadata.get('issuer')!r}, not {sso.issuer!r}: set "
            "KEYCARD_OIDC_ISSUER to exactly that.",
        )
        return
    report.ok("single sign-on", f"{sso.issuer} answers; client {sso.client_id}.")


# --- PagerDuty ---------------------------------------------------------------------------------


def _check_pagerduty(
    report: Report, env: Mapping[str, str], config: KeycardConfig | None, verify: Any = True
) -> None:
    from activities.pagerduty import PagerDutyDirectory, settings_problem

    wanted = config is not None and any(
        flow.hooks or (flow.auto_approve and flow.auto_approve.pagerduty_on_call)
        for flow in config.flows
    )
    if not env.get("PAGERDUTY_API_KEY"):
        message = "not configured (PAGERDUTY_API_KEY is unset)"
        if wanted:
            report.warn("pagerduty", f"{message}: on-call rules and hooks that ask it decide no.")
        else:
            report.ok("pagerduty", f"{message}.")
        return
    problem = settings_problem(env)
    if problem:
        report.fail("pagerduty", f"{problem}.")
        return
    directory = PagerDutyDirectory.from_env(env, verify=verify)
    assert directory is not None
    try:
        directory.user_id("keycard-doctor@invalid.example")  # any answer proves the key works
    except Exception as err:
        report.fail(
            "pagerduty",
            f"PagerDuty refused or did not answer ({_short(err)}); check PAGERDUTY_API_KEY (a "
            "REST API key) and PAGERDUTY_API_URL.",
        )
        return
    report.ok("pagerduty", "the API key works.")


def _connect_problem(err: BaseException) -> str:
    """The useful part of a connection error, which arrives as a long transport-level dump."""
    text = str(err)
    for needle, meaning in (
        ("ConnectionRefused", "connection refused"),
        ("dns error", "the host name does not resolve"),
        ("failed to lookup address", "the host name does not resolve"),
        ("nauthenticated", "the server rejected the credentials"),
        ("certificate", "the TLS handshake failed"),
        ("InvalidContentType", "the TLS handshake failed (plain-text server, or TLS expected?)"),
    ):
        if needle in text:
            return meaning
    if isinstance(err, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g}s"
    return _short(err)


def _short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
