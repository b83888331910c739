"""`keycard doctor`'s AWS checks, for the flows of AWS strategies: credentials, Identity Center and
its permission sets, the IAM groups, what end_sessions needs, and `keycard dev`'s demo AWS.
(A little over the usual length: the Identity Center checks share one permission-set listing.)"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from keycard.config import (
    AwsIamGroupFlow,
    AwsSsoFlow,
    AwsSsoGroupFlow,
    KeycardConfig,
)
from keycard.durations import format_duration
from starter.doctor.report import (
    AWS_MIN_SESSION,
    POLICY_HINT,
    Report,
    short,
)


@dataclass
class _PermissionSet:
    name: str
    arn: str
    session: timedelta | None


def beside_keycard_dev(
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


def check_aws(report: Report, config: KeycardConfig, demo: tuple[str, str] | None = None) -> None:
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
                report.fail(check, f"{action} failed: {short(err)}.")
        except BotoCoreError as err:
            report.fail(check, f"{action} failed: {short(err)}. Check AWS_ENDPOINT_URL/region.")
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
