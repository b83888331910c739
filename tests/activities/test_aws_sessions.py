"""end_sessions' inline-policy writes against moto (which lacks only the provisioning status call:
that wait is tested under Stubber), held to the evaluation the statements stand for."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws_sessions import SessionPolicies
from keycard import session_policy
from keycard.config import SessionsPolicy
from keycard.models import AssignmentSpec, EndSessions, ResolvedAssignment, SessionPolicyWrite

ACCOUNT, OTHER_ACCOUNT = "111111111111", "222222222222"
T0 = datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC)
CUSTOMER = {"Sid": "TheirOwn", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}


def revocation(user_id: str, account: str = ACCOUNT, at: datetime = T0) -> EndSessions:
    return EndSessions(
        token=f"{user_id}-{account}", reply_to="grant:x", user_id=user_id, account_id=account,
        denied_before=at,
    )  # fmt: skip


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def permission_set(aws) -> str:
    return aws.sso_admin.create_permission_set(
        Name="PowerUserAccess", InstanceArn=aws.instance_arn, SessionDuration="PT2H"
    )["PermissionSet"]["PermissionSetArn"]


def inline_policy(aws, arn: str) -> str | None:
    response = aws.sso_admin.get_inline_policy_for_permission_set(
        InstanceArn=aws.instance_arn, PermissionSetArn=arn
    )
    return response.get("InlinePolicy") or None


def write(aws, arn: str, *revocations: EndSessions) -> SessionPolicyWrite:
    return SessionPolicyWrite(
        instance_arn=aws.instance_arn, permission_set_arn=arn, revocations=list(revocations)
    )


async def test_one_write_denies_every_ended_session_and_keeps_the_customers_statements(
    aws, permission_set
) -> None:
    aws.sso_admin.put_inline_policy_to_permission_set(
        InstanceArn=aws.instance_arn,
        PermissionSetArn=permission_set,
        InlinePolicy=json.dumps({"Version": "2012-10-17", "Statement": [CUSTOMER]}),
    )
    policies = SessionPolicies(aws.sso_admin, poll_interval=0, clock=Clock(T0))

    result = await ActivityEnvironment().run(
        policies.end_sessions,
        write(aws, permission_set, revocation("u-alice"), revocation("u-bob", OTHER_ACCOUNT)),
    )

    policy = inline_policy(aws, permission_set)
    assert json.loads(policy)["Statement"][0] == CUSTOMER
    assert session_policy.denies(policy, "u-alice", ACCOUNT, T0 - timedelta(hours=1))
    assert not session_policy.denies(policy, "u-alice", ACCOUNT, T0)  # her next grant's
    assert not session_policy.denies(policy, "u-alice", OTHER_ACCOUNT, T0 - timedelta(hours=1))
    assert session_policy.denies(policy, "u-bob", OTHER_ACCOUNT, T0 - timedelta(hours=1))
    assert result.session_duration == timedelta(hours=2)
    assert result.denied == {f"u-alice:{ACCOUNT}": T0, f"u-bob:{OTHER_ACCOUNT}": T0}
    assert result.provisioned == [ACCOUNT, OTHER_ACCOUNT]


async def test_entries_are_pruned_only_after_the_session_duration_and_an_empty_policy_goes(
    aws, permission_set
) -> None:
    clock = Clock(T0)
    policies = SessionPolicies(aws.sso_admin, poll_interval=0, clock=clock)
    env = ActivityEnvironment()
    await env.run(policies.end_sessions, write(aws, permission_set, revocation("u-alice")))

    clock.now = T0 + timedelta(hours=2) - timedelta(seconds=1)  # a 2h session could still be open
    kept = await env.run(policies.prune_sessions, write(aws, permission_set))
    assert kept.denied == {f"u-alice:{ACCOUNT}": T0} and kept.provisioned == []

    clock.now = T0 + timedelta(hours=2)
    pruned = await env.run(policies.prune_sessions, write(aws, permission_set))
    assert pruned.denied == {} and pruned.provisioned == [ACCOUNT]
    assert inline_policy(aws, permission_set) is None


async def test_pruning_waits_for_the_longest_session_duration_the_writer_saw(
    aws, permission_set
) -> None:
    clock = Clock(T0)
    policies = SessionPolicies(aws.sso_admin, poll_interval=0, clock=clock)
    env = ActivityEnvironment()
    await env.run(policies.end_sessions, write(aws, permission_set, revocation("u-alice")))
    # Someone shortens the permission set's sessions to 1h; sessions opened before keep 2h... or
    # the 12h they had: the writer remembers the longest it saw.
    aws.sso_admin.update_permission_set(
        InstanceArn=aws.instance_arn, PermissionSetArn=permission_set, SessionDuration="PT1H"
    )
    clock.now = T0 + timedelta(hours=1, minutes=30)
    remembered = write(aws, permission_set).model_copy(
        update={"session_duration": timedelta(hours=2)}
    )

    kept = await env.run(policies.prune_sessions, remembered)

    assert kept.denied == {f"u-alice:{ACCOUNT}": T0}


async def test_a_policy_too_large_is_refused_and_nothing_changes(aws, permission_set) -> None:
    policies = SessionPolicies(aws.sso_admin, poll_interval=0, clock=Clock(T0))
    many = [revocation(f"u-{n:036d}") for n in range(200)]

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(policies.end_sessions, write(aws, permission_set, *many))

    assert refused.value.type == "PolicyTooLarge" and refused.value.non_retryable
    assert inline_policy(aws, permission_set) is None


# --- provisioning: waiting for AWS, and resuming (Stubber: moto has no provisioning status) -------

INSTANCE = "arn:aws:sso:::instance/ssoins-1111111111111111"
PERMISSION_SET = "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-2222222222222222"
ARNS = {"InstanceArn": INSTANCE, "PermissionSetArn": PERMISSION_SET}
PROVISIONING = "b0000000-0000-4000-8000-000000000001"  # AWS's request id


def stub_write(stub) -> None:
    stub.add_response(
        "describe_permission_set", {"PermissionSet": {"SessionDuration": "PT1H"}}, ARNS
    )
    stub.add_response("get_inline_policy_for_permission_set", {}, ARNS)
    stub.add_response("put_inline_policy_to_permission_set", {}, {**ARNS, "InlinePolicy": mock.ANY})


async def test_provisioning_is_waited_on_with_heartbeats(stubbed) -> None:
    sso_admin, stub = stubbed("sso-admin")
    stub_write(stub)
    provisioning = {"Status": "IN_PROGRESS", "RequestId": PROVISIONING}
    stub.add_response(
        "provision_permission_set",
        {"PermissionSetProvisioningStatus": provisioning},
        {**ARNS, "TargetType": "AWS_ACCOUNT", "TargetId": ACCOUNT},
    )
    for state in ("IN_PROGRESS", "SUCCEEDED"):
        stub.add_response(
            "describe_permission_set_provisioning_status",
            {"PermissionSetProvisioningStatus": {"Status": state, "RequestId": PROVISIONING}},
            {"InstanceArn": INSTANCE, "ProvisionPermissionSetRequestId": PROVISIONING},
        )
    env = ActivityEnvironment()
    beats: list = []
    env.on_heartbeat = lambda *details: beats.append(details)
    policies = SessionPolicies(sso_admin, poll_interval=0, clock=Clock(T0))

    result = await env.run(
        policies.end_sessions,
        SessionPolicyWrite(instance_arn=INSTANCE, permission_set_arn=PERMISSION_SET,
                           revocations=[revocation("u-alice")]),
    )  # fmt: skip

    assert result.provisioned == [ACCOUNT]
    assert beats and beats[-1] == (f"provisioning request {ACCOUNT} {PROVISIONING}",)


async def test_a_failed_provisioning_is_retried(stubbed) -> None:
    sso_admin, stub = stubbed("sso-admin")
    stub_write(stub)
    stub.add_response(
        "provision_permission_set",
        {"PermissionSetProvisioningStatus": {"Status": "FAILED", "RequestId": PROVISIONING,
                                             "FailureReason": "role is being updated"}},
        {**ARNS, "TargetType": "AWS_ACCOUNT", "TargetId": ACCOUNT},
    )  # fmt: skip
    policies = SessionPolicies(sso_admin, poll_interval=0, clock=Clock(T0))

    with pytest.raises(ApplicationError) as failed:
        await ActivityEnvironment().run(
            policies.end_sessions,
            SessionPolicyWrite(instance_arn=INSTANCE, permission_set_arn=PERMISSION_SET,
                               revocations=[revocation("u-alice")]),
        )  # fmt: skip

    assert failed.value.type == "ProvisioningFailed" and not failed.value.non_retryable
    assert "role is being updated" in failed.value.message


async def test_access_denied_says_which_permission_to_add(stubbed) -> None:
    sso_admin, stub = stubbed("sso-admin")
    stub.add_response("describe_permission_set", {"PermissionSet": {}}, ARNS)
    stub.add_client_error(
        "get_inline_policy_for_permission_set",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform sso:GetInlinePolicyForPermissionSet",
        http_status_code=403,
    )
    policies = SessionPolicies(sso_admin, poll_interval=0, clock=Clock(T0))

    with pytest.raises(ApplicationError) as denied:
        await ActivityEnvironment().run(
            policies.end_sessions,
            SessionPolicyWrite(instance_arn=INSTANCE, permission_set_arn=PERMISSION_SET,
                               revocations=[revocation("u-alice")]),
        )  # fmt: skip

    assert denied.value.type == "AccessDenied" and denied.value.non_retryable
    assert "GetInlinePolicyForPermissionSet" in denied.value.message


async def test_a_groups_sessions_come_from_every_permission_set_it_is_assigned(
    aws, permission_set
) -> None:
    group_id = aws.add_group("Operators")
    other = aws.add_permission_set("ReadOnlyAccess")
    for arn, account in ((permission_set, ACCOUNT), (other, OTHER_ACCOUNT)):
        aws.sso_admin.create_account_assignment(
            InstanceArn=aws.instance_arn,
            TargetId=account,
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=arn,
            PrincipalType="GROUP",
            PrincipalId=group_id,
        )
    member = ResolvedAssignment(
        spec=AssignmentSpec(
            strategy="aws_sso_group", principal_email="alice@example.com", group="Operators"
        ),
        principal_id="u-alice",
        instance_arn=aws.instance_arn,
        group_id=group_id,
    )
    policies = SessionPolicies(aws.sso_admin, poll_interval=0, clock=Clock(T0))

    scopes = await ActivityEnvironment().run(policies.group_session_scopes, member)

    assert {(s.permission_set_arn, s.account_id) for s in scopes} == {
        (permission_set, ACCOUNT),
        (other, OTHER_ACCOUNT),
    }
    assert {s.instance_arn for s in scopes} == {aws.instance_arn}


# --- a customer-managed policy in each account, written through the flow's role -----------------

MANAGED = SessionsPolicy(name="KeycardEndSessions", path="/keycard/", role="KeycardSessionWriter")


def as_role(aws, account: str):
    """An IAM client in `account`, as the flow's role there (moto honours assumed accounts)."""
    credentials = aws.session.client("sts").assume_role(
        RoleArn=MANAGED.role_arn(account), RoleSessionName="test"
    )["Credentials"]
    return iam_client(aws)(credentials)


def iam_client(aws):
    def make(credentials):
        return aws.session.client(
            "iam",
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    return make


def managed_policies(aws, clock: Clock) -> SessionPolicies:
    return SessionPolicies(
        aws.sso_admin, sts=aws.session.client("sts"), iam_client=iam_client(aws), clock=clock
    )


def create_managed(aws, account: str, *statements) -> None:
    as_role(aws, account).create_policy(
        PolicyName=MANAGED.name,
        Path=MANAGED.path,
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": list(statements)}),
    )


def managed_policy(aws, account: str) -> str:
    iam = as_role(aws, account)
    arn = MANAGED.policy_arn(account)
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return json.dumps(
        iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    )


def scoped(revoked: EndSessions, permission_set_arn: str) -> EndSessions:
    return revoked.model_copy(update={"permission_set_arn": permission_set_arn})


def role(account: str, permission_set: str) -> str:
    return (
        f"arn:aws:iam::{account}:role/aws-reserved/sso.amazonaws.com/"
        f"AWSReservedSSO_{permission_set}_0123456789abcdef"
    )


async def test_a_customer_managed_policy_holds_each_accounts_entries_scoped_to_the_permission_set(
    aws, permission_set
) -> None:
    other_set = aws.add_permission_set("ReadOnlyAccess")
    for account in (ACCOUNT, OTHER_ACCOUNT):
        create_managed(aws, account, CUSTOMER)
    policies = managed_policies(aws, Clock(T0))
    before = T0 - timedelta(hours=1)

    result = await ActivityEnvironment().run(
        policies.end_sessions,
        write(
            aws,
            permission_set,
            scoped(revocation("u-alice"), permission_set),
            scoped(revocation("u-bob", OTHER_ACCOUNT), other_set),
        ).model_copy(update={"policy": MANAGED, "permission_sets": [other_set]}),
    )

    here, there = managed_policy(aws, ACCOUNT), managed_policy(aws, OTHER_ACCOUNT)
    assert json.loads(here)["Statement"][0] == CUSTOMER
    assert session_policy.denies(here, "u-alice", ACCOUNT, before, role(ACCOUNT, "PowerUserAccess"))
    # Her grant of another permission set in the account is not touched.
    assert not session_policy.denies(here, "u-alice", ACCOUNT, before, role(ACCOUNT, "Other"))
    assert not session_policy.denies(
        here, "u-bob", OTHER_ACCOUNT, before, role(OTHER_ACCOUNT, "ReadOnlyAccess")
    )
    assert session_policy.denies(
        there, "u-bob", OTHER_ACCOUNT, before, role(OTHER_ACCOUNT, "ReadOnlyAccess")
    )
    assert result.denied == {
        f"u-alice:{ACCOUNT}:PowerUserAccess": T0,
        f"u-bob:{OTHER_ACCOUNT}:ReadOnlyAccess": T0,
    }
    assert result.accounts == [ACCOUNT, OTHER_ACCOUNT] and result.provisioned == []
    assert inline_policy(aws, permission_set) is None  # the inline policy is left alone


async def test_a_customer_managed_policy_keeps_iams_five_versions_and_never_goes_empty(
    aws, permission_set
) -> None:
    create_managed(aws, ACCOUNT, session_policy.PLACEHOLDER)
    clock = Clock(T0)
    policies = managed_policies(aws, clock)
    env = ActivityEnvironment()
    managed = write(aws, permission_set).model_copy(update={"policy": MANAGED})

    for n in range(6):  # six writes: IAM keeps five versions, so the oldest others make room
        revoked = scoped(revocation(f"u-{n}"), permission_set)
        await env.run(policies.end_sessions, managed.model_copy(update={"revocations": [revoked]}))

    iam = as_role(aws, ACCOUNT)
    versions = iam.list_policy_versions(PolicyArn=MANAGED.policy_arn(ACCOUNT))["Versions"]
    assert len(versions) == 5
    assert len(session_policy.entries(managed_policy(aws, ACCOUNT))) == 6

    clock.now = T0 + timedelta(hours=2)  # the permission set's sessions last 2h
    pruned = await env.run(
        policies.prune_sessions, managed.model_copy(update={"accounts": [ACCOUNT]})
    )

    assert pruned.denied == {} and pruned.accounts == []
    assert json.loads(managed_policy(aws, ACCOUNT))["Statement"] == [session_policy.PLACEHOLDER]


async def test_a_missing_customer_managed_policy_says_to_create_it(aws, permission_set) -> None:
    policies = managed_policies(aws, Clock(T0))
    managed = write(aws, permission_set, scoped(revocation("u-alice"), permission_set))

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            policies.end_sessions, managed.model_copy(update={"policy": MANAGED})
        )

    assert refused.value.type == "PolicyMissing" and refused.value.non_retryable
    assert f"{MANAGED.policy_arn(ACCOUNT)} does not exist" in refused.value.message
    assert "create it in that account" in refused.value.message
