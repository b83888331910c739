"""aws_sso and aws_sso_group activities against moto, and their waiting and errors under Stubber."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any
from unittest import mock

import pytest
from botocore.exceptions import ClientError
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws_sso import AwsSsoGroupStrategy, AwsSsoStrategy
from keycard.models import AssignmentSpec, ResolvedAssignment, ResolveInput
from keycard.strategies import NON_RETRYABLE_ERRORS

ACCOUNT = "111111111111"


def sso_spec(
    email: str = "alice@example.com", permission_set: str = "PowerUserAccess"
) -> ResolveInput:
    return ResolveInput(
        spec=AssignmentSpec(
            strategy="aws_sso",
            principal_email=email,
            account_id=ACCOUNT,
            permission_set=permission_set,
        )
    )


def group_spec(email: str = "alice@example.com", group: str = "oncall") -> ResolveInput:
    return ResolveInput(
        spec=AssignmentSpec(strategy="aws_sso_group", principal_email=email, group=group)
    )


async def failure(env: ActivityEnvironment, fn: Any, arg: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await env.run(fn, arg)
    return caught.value


def assert_final(error: ApplicationError, type: str) -> None:
    assert error.type == type
    assert error.non_retryable
    assert type in NON_RETRYABLE_ERRORS


# --- aws_sso against moto ----------------------------------------------------------------------


@pytest.fixture
def sso(aws) -> AwsSsoStrategy:
    return AwsSsoStrategy(aws.sso_admin, aws.identitystore, poll_interval=0)


async def test_resolve_finds_user_instance_and_permission_set_by_name(aws, sso) -> None:
    user_id = aws.add_user("alice@example.com")
    aws.add_permission_set("ReadOnlyAccess")
    arn = aws.add_permission_set("PowerUserAccess")

    resolved = await ActivityEnvironment().run(sso.resolve, sso_spec())

    assert resolved.principal_id == user_id
    assert resolved.permission_set_arn == arn
    assert resolved.instance_arn == aws.instance_arn
    assert resolved.identity_store_id == aws.identity_store_id
    assert resolved.grant_key == f"aws_sso:{ACCOUNT}:{arn.rsplit('/', 1)[-1]}:{user_id}"


async def test_resolve_accepts_a_permission_set_arn(aws, sso) -> None:
    aws.add_user("alice@example.com")
    arn = aws.add_permission_set("PowerUserAccess")

    resolved = await ActivityEnvironment().run(sso.resolve, sso_spec(permission_set=arn))

    assert resolved.permission_set_arn == arn


async def test_a_permission_set_recreated_under_the_same_name_resolves_to_the_new_arn(
    aws, sso
) -> None:
    aws.add_user("alice@example.com")
    old = aws.add_permission_set("PowerUserAccess")
    env = ActivityEnvironment()
    assert (await env.run(sso.resolve, sso_spec())).permission_set_arn == old
    aws.sso_admin.delete_permission_set(InstanceArn=aws.instance_arn, PermissionSetArn=old)
    new = aws.add_permission_set("PowerUserAccess")

    assert (await env.run(sso.resolve, sso_spec())).permission_set_arn == new


async def test_a_burst_of_first_requests_lists_instances_and_permission_sets_once(aws) -> None:
    aws.add_user("alice@example.com")
    aws.add_user("bob@example.com")
    aws.add_permission_set("ReadOnlyAccess")
    arn = aws.add_permission_set("PowerUserAccess")
    sso = AwsSsoStrategy(aws.sso_admin, aws.identitystore, poll_interval=0)  # nothing known yet
    calls: list[str] = []
    aws.sso_admin.meta.events.register(
        "before-call.sso-admin.*", lambda model, **_: calls.append(model.name)
    )
    env = ActivityEnvironment()

    resolved = await asyncio.gather(
        *(env.run(sso.resolve, sso_spec(f"{who}@example.com")) for who in ["alice", "bob"] * 5)
    )

    assert {r.permission_set_arn for r in resolved} == {arn}
    assert calls.count("ListInstances") == 1
    assert calls.count("ListPermissionSets") == 1


async def test_when_both_lookups_fail_the_person_is_named_first(aws, sso) -> None:
    aws.add_permission_set("ReadOnlyAccess")

    error = await failure(
        ActivityEnvironment(), sso.resolve, sso_spec("dave@example.com", "PowerUser")
    )

    assert error.type == "NoSuchUser"


async def test_unknown_permission_set_arn_is_final(aws, sso) -> None:
    aws.add_user("alice@example.com")
    missing = aws.add_permission_set("PowerUserAccess")[:-4] + "0000"

    error = await failure(ActivityEnvironment(), sso.resolve, sso_spec(permission_set=missing))

    assert_final(error, "NoSuchPermissionSet")
    assert missing in error.message


async def test_unknown_permission_set_name_is_final_and_lists_the_known_ones(aws, sso) -> None:
    aws.add_user("alice@example.com")
    aws.add_permission_set("PowerUserAccess")

    error = await failure(ActivityEnvironment(), sso.resolve, sso_spec(permission_set="PowerUser"))

    assert_final(error, "NoSuchPermissionSet")
    assert "no permission set named PowerUser" in error.message
    assert "PowerUserAccess" in error.message


async def test_unknown_email_is_final_with_a_message_a_person_understands(aws, sso) -> None:
    aws.add_user("alice@example.com")
    aws.add_permission_set("PowerUserAccess")

    error = await failure(ActivityEnvironment(), sso.resolve, sso_spec("dave@example.com"))

    assert_final(error, "NoSuchUser")
    assert error.message == "no Identity Center user has the email dave@example.com"


async def test_grant_then_revoke_and_both_are_idempotent(aws, sso) -> None:
    user_id = aws.add_user("alice@example.com")
    arn = aws.add_permission_set("PowerUserAccess")
    env = ActivityEnvironment()
    assignment = await env.run(sso.resolve, sso_spec())
    assert await env.run(sso.exists, assignment) is False

    await env.run(sso.grant, assignment)
    assert await env.run(sso.exists, assignment) is True
    await retried().run(sso.grant, assignment)
    assert aws.user_assignments(arn) == [user_id]  # the retried grant created nothing

    await env.run(sso.revoke, assignment)
    assert await env.run(sso.exists, assignment) is False
    await env.run(sso.revoke, assignment)  # not there: AWS says so, and a look confirms it
    await retried().run(sso.revoke, assignment)
    assert aws.user_assignments(arn) == []


async def test_exists_sees_only_this_users_assignment_across_pages(aws, sso) -> None:
    arn = aws.add_permission_set("PowerUserAccess")
    aws.add_user("alice@example.com")
    env = ActivityEnvironment()
    assignment = await env.run(sso.resolve, sso_spec())
    for n in range(120):  # other people's assignments of the same permission set
        aws.sso_admin.create_account_assignment(
            InstanceArn=aws.instance_arn,
            TargetId=ACCOUNT,
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=arn,
            PrincipalType="USER",
            PrincipalId=f"other-{n}",
        )
    assert await env.run(sso.exists, assignment) is False

    aws.sso_admin.create_account_assignment(
        InstanceArn=aws.instance_arn,
        TargetId=ACCOUNT,
        TargetType="AWS_ACCOUNT",
        PermissionSetArn=arn,
        PrincipalType="USER",
        PrincipalId=assignment.principal_id,
    )
    assert await env.run(sso.exists, assignment) is True


async def test_exists_wants_this_permission_set_in_this_account(aws, sso) -> None:
    aws.add_user("alice@example.com")
    aws.add_permission_set("PowerUserAccess")
    other_set = aws.add_permission_set("ReadOnlyAccess")
    env = ActivityEnvironment()
    assignment = await env.run(sso.resolve, sso_spec())
    for account, permission_set in (
        (ACCOUNT, other_set),
        ("222222222222", assignment.permission_set_arn),
    ):
        aws.sso_admin.create_account_assignment(
            InstanceArn=aws.instance_arn,
            TargetId=account,
            TargetType="AWS_ACCOUNT",
            PermissionSetArn=permission_set,
            PrincipalType="USER",
            PrincipalId=assignment.principal_id,
        )

    assert await env.run(sso.exists, assignment) is False


async def test_a_configured_instance_that_does_not_exist_is_final(aws) -> None:
    aws.add_user("alice@example.com")
    wrong = aws.instance_arn[:-4] + "0000"
    sso = AwsSsoStrategy(aws.sso_admin, aws.identitystore, instance_arn=wrong)

    error = await failure(ActivityEnvironment(), sso.resolve, sso_spec())

    assert_final(error, "NoSuchInstance")
    assert "aws.sso_instance_arn" in error.message


async def test_a_configured_identity_store_must_belong_to_the_instance(aws) -> None:
    sso = AwsSsoStrategy(aws.sso_admin, aws.identitystore, identity_store_id="d-0000000000")

    error = await failure(ActivityEnvironment(), sso.resolve, sso_spec())

    assert_final(error, "NoSuchInstance")
    assert aws.identity_store_id in error.message


@pytest.mark.parametrize("count", [0, 2])
async def test_without_exactly_one_instance_the_operator_is_told_to_configure_it(
    stubbed, count: int
) -> None:
    sso_admin, stub = stubbed("sso-admin")
    identitystore, _ = stubbed("identitystore")
    instances = [
        {
            "InstanceArn": f"arn:aws:sso:::instance/ssoins-{n:016x}",
            "IdentityStoreId": f"d-{n:010x}",
        }
        for n in range(count)
    ]
    stub.add_response("list_instances", {"Instances": instances})
    sso = AwsSsoStrategy(sso_admin, identitystore)

    error = await failure(ActivityEnvironment(), sso.resolve, sso_spec())

    assert_final(error, "NoSuchInstance")
    assert "set aws.sso_instance_arn" in error.message
    assert f"found {'none' if count == 0 else count}" in error.message


# --- aws_sso: waiting for AWS, resuming, conflicts, classification (Stubber) --------------------

INSTANCE = "arn:aws:sso:::instance/ssoins-1111111111111111"
PERMISSION_SET = "arn:aws:sso:::permissionSet/ssoins-1111111111111111/ps-2222222222222222"
USER_ID = "90676d2a-0051-70a8-1fd6-6b1e0a3c3d4e"
CREATE_REQUEST = "c0000000-0000-4000-8000-000000000001"
DELETE_REQUEST = "d0000000-0000-4000-8000-000000000001"
EARLIER_REQUEST = "c0000000-0000-4000-8000-000000000000"
FORGOTTEN_REQUEST = "c0000000-0000-4000-8000-0000000000ff"


def resolved() -> ResolvedAssignment:
    return ResolvedAssignment(
        spec=sso_spec().spec,
        principal_id=USER_ID,
        instance_arn=INSTANCE,
        identity_store_id="d-1234567890",
        permission_set_arn=PERMISSION_SET,
    )


def target() -> dict[str, str]:
    return {
        "InstanceArn": INSTANCE,
        "TargetId": ACCOUNT,
        "TargetType": "AWS_ACCOUNT",
        "PermissionSetArn": PERMISSION_SET,
        "PrincipalType": "USER",
        "PrincipalId": USER_ID,
    }


def assignments(*principals: str) -> dict[str, Any]:
    """A ListAccountAssignmentsForPrincipal page: the permission set, when the user is given."""
    return {
        "AccountAssignments": [
            {
                "AccountId": ACCOUNT,
                "PermissionSetArn": PERMISSION_SET,
                "PrincipalType": "USER",
                "PrincipalId": p,
            }
            for p in principals
        ]
    }


def status(
    state: str, request_id: str = CREATE_REQUEST, reason: str | None = None
) -> dict[str, Any]:
    value: dict[str, Any] = {"Status": state, "RequestId": request_id}
    if reason:
        value["FailureReason"] = reason
    return value


LIST_PARAMS = {
    "InstanceArn": INSTANCE,
    "PrincipalId": USER_ID,
    "PrincipalType": "USER",
    "Filter": {"AccountId": ACCOUNT},
}
LIST = "list_account_assignments_for_principal"


def retried() -> ActivityEnvironment:
    """An activity environment for a second attempt (a retry looks before it changes)."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2)
    return env


@pytest.fixture
def stubbed_sso(stubbed) -> tuple[AwsSsoStrategy, Any]:
    sso_admin, stub = stubbed("sso-admin")
    identitystore, _ = stubbed("identitystore")
    return AwsSsoStrategy(sso_admin, identitystore, poll_interval=0), stub


def recording_env() -> tuple[ActivityEnvironment, list[tuple[Any, ...]]]:
    env = ActivityEnvironment()
    beats: list[tuple[Any, ...]] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    return env, beats


async def test_grant_waits_while_aws_reports_in_progress_and_heartbeats(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    # A first attempt creates at once: the GrantWorkflow looked just before.
    stub.add_response(
        "create_account_assignment",
        {"AccountAssignmentCreationStatus": status("IN_PROGRESS")},
        target(),
    )
    for state in ("IN_PROGRESS", "IN_PROGRESS", "SUCCEEDED"):
        stub.add_response(
            "describe_account_assignment_creation_status",
            {"AccountAssignmentCreationStatus": status(state)},
            {"InstanceArn": INSTANCE, "AccountAssignmentCreationRequestId": CREATE_REQUEST},
        )
    env, beats = recording_env()

    await env.run(sso.grant, resolved())

    assert len(beats) >= 3
    assert all(beat == ("aws_sso creation request " + CREATE_REQUEST,) for beat in beats)


async def test_grant_that_aws_reports_failed_is_final_with_aws_reason(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    reason = "Received a 404 status error: Not supported policy arn:aws:iam::aws:policy/Nope"
    stub.add_response(
        "create_account_assignment", {"AccountAssignmentCreationStatus": status("IN_PROGRESS")}
    )
    stub.add_response(
        "describe_account_assignment_creation_status",
        {"AccountAssignmentCreationStatus": status("FAILED", reason=reason)},
    )

    error = await failure(ActivityEnvironment(), sso.grant, resolved())

    assert_final(error, "InvalidTarget")
    assert reason in error.message
    assert "alice@example.com" in error.message and ACCOUNT in error.message


async def test_a_retried_grant_resumes_the_request_its_predecessor_started(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    # No ListAccountAssignmentsForPrincipal, no CreateAccountAssignment: only the pending request.
    stub.add_response(
        "describe_account_assignment_creation_status",
        {"AccountAssignmentCreationStatus": status("SUCCEEDED", EARLIER_REQUEST)},
        {"InstanceArn": INSTANCE, "AccountAssignmentCreationRequestId": EARLIER_REQUEST},
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=2, heartbeat_details=["aws_sso creation request " + EARLIER_REQUEST]
    )

    await env.run(sso.grant, resolved())


async def test_a_retried_grant_starts_over_when_aws_forgot_the_earlier_request(
    stubbed_sso,
) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error(
        "describe_account_assignment_creation_status", "ResourceNotFoundException"
    )
    stub.add_response(LIST, assignments(USER_ID), LIST_PARAMS)
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=2, heartbeat_details=["aws_sso creation request " + FORGOTTEN_REQUEST]
    )

    await env.run(sso.grant, resolved())


async def test_grant_conflict_for_an_assignment_that_now_exists_is_success(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error("create_account_assignment", "ConflictException", "already exists")
    stub.add_response(LIST, assignments(USER_ID), LIST_PARAMS)

    await ActivityEnvironment().run(sso.grant, resolved())


async def test_grant_conflict_with_a_change_in_progress_is_retried(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error("create_account_assignment", "ConflictException", "operation in progress")
    stub.add_response(LIST, assignments())

    error = await failure(ActivityEnvironment(), sso.grant, resolved())

    assert error.type == "AwsConflict"
    assert not error.non_retryable


async def test_revoke_waits_for_deletion(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_response(
        "delete_account_assignment",
        {"AccountAssignmentDeletionStatus": status("IN_PROGRESS", DELETE_REQUEST)},
        target(),
    )
    for state in ("IN_PROGRESS", "SUCCEEDED"):
        stub.add_response(
            "describe_account_assignment_deletion_status",
            {"AccountAssignmentDeletionStatus": status(state, DELETE_REQUEST)},
            {"InstanceArn": INSTANCE, "AccountAssignmentDeletionRequestId": DELETE_REQUEST},
        )
    env, beats = recording_env()

    await env.run(sso.revoke, resolved())

    assert ("aws_sso deletion request " + DELETE_REQUEST,) in beats


async def test_a_failed_deletion_is_retried_because_access_must_not_outlive_its_lease(
    stubbed_sso,
) -> None:
    sso, stub = stubbed_sso
    stub.add_response(
        "delete_account_assignment",
        {"AccountAssignmentDeletionStatus": status("IN_PROGRESS", DELETE_REQUEST)},
    )
    stub.add_response(
        "describe_account_assignment_deletion_status",
        {"AccountAssignmentDeletionStatus": status("FAILED", DELETE_REQUEST, "Request failed")},
    )

    error = await failure(ActivityEnvironment(), sso.revoke, resolved())

    assert error.type == "RevokeFailed"
    assert not error.non_retryable
    assert "Request failed" in error.message


async def test_a_retried_revoke_after_a_failed_deletion_deletes_again(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_response(
        "describe_account_assignment_deletion_status",
        {"AccountAssignmentDeletionStatus": status("FAILED", DELETE_REQUEST, "Request failed")},
    )
    stub.add_response(LIST, assignments(USER_ID), LIST_PARAMS)
    stub.add_response(
        "delete_account_assignment",
        {"AccountAssignmentDeletionStatus": status("SUCCEEDED", FORGOTTEN_REQUEST)},
        target(),
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, attempt=2, heartbeat_details=["aws_sso deletion request " + DELETE_REQUEST]
    )

    await env.run(sso.revoke, resolved())


async def test_revoke_of_an_assignment_removed_meanwhile_is_success(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error("delete_account_assignment", "ResourceNotFoundException")
    stub.add_response(LIST, assignments(), LIST_PARAMS)

    await ActivityEnvironment().run(sso.revoke, resolved())


async def test_a_retried_revoke_of_an_assignment_already_gone_deletes_nothing(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_response(LIST, assignments(), LIST_PARAMS)  # and no DeleteAccountAssignment

    await retried().run(sso.revoke, resolved())


async def test_a_retried_grant_of_an_assignment_already_there_creates_nothing(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_response(LIST, assignments(USER_ID), LIST_PARAMS)  # and no CreateAccountAssignment

    await retried().run(sso.grant, resolved())


async def test_grant_when_the_permission_set_was_deleted_is_final(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error("create_account_assignment", "ResourceNotFoundException")

    error = await failure(ActivityEnvironment(), sso.grant, resolved())

    assert_final(error, "NoSuchPermissionSet")
    assert PERMISSION_SET in error.message and USER_ID in error.message


@pytest.mark.parametrize(
    "code", ["ThrottlingException", "TooManyRequestsException", "InternalServerException"]
)
async def test_throttling_and_server_errors_are_retryable(stubbed_sso, code: str) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error(LIST, code, http_status_code=400)

    error = await failure(ActivityEnvironment(), sso.exists, resolved())

    assert not error.non_retryable
    assert error.type in {"AwsThrottled", "AwsUnavailable"}


async def test_access_denied_is_final_and_names_the_action_to_allow(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error(
        "create_account_assignment",
        "AccessDeniedException",
        "User: arn:aws:sts::1:assumed-role/keycard is not authorized",
        http_status_code=403,
    )

    error = await failure(ActivityEnvironment(), sso.grant, resolved())

    assert_final(error, "AccessDenied")
    assert "sso:CreateAccountAssignment" in error.message
    assert "not authorized" in error.message


async def test_validation_errors_are_final(stubbed_sso) -> None:
    sso, stub = stubbed_sso
    stub.add_client_error(LIST, "ValidationException", "1 validation error detected")

    error = await failure(ActivityEnvironment(), sso.exists, resolved())

    assert_final(error, "InvalidTarget")


# --- aws_sso_group -----------------------------------------------------------------------------


@pytest.fixture
def groups(aws) -> AwsSsoGroupStrategy:
    return AwsSsoGroupStrategy(aws.sso_admin, aws.identitystore)


async def test_group_membership_grant_and_revoke_are_idempotent(aws, groups) -> None:
    user_id = aws.add_user("alice@example.com")
    group_id = aws.add_group("oncall")
    env = ActivityEnvironment()

    assignment = await env.run(groups.resolve, group_spec())
    assert (assignment.principal_id, assignment.group_id) == (user_id, group_id)
    assert assignment.grant_key == f"aws_sso_group:{group_id}:{user_id}"
    assert await env.run(groups.exists, assignment) is False

    await env.run(groups.grant, assignment)
    await env.run(groups.grant, assignment)
    memberships = aws.identitystore.list_group_memberships(
        IdentityStoreId=aws.identity_store_id, GroupId=group_id
    )["GroupMemberships"]
    assert [m["MemberId"]["UserId"] for m in memberships] == [user_id]
    assert await env.run(groups.exists, assignment) is True

    await env.run(groups.revoke, assignment)
    assert await env.run(groups.exists, assignment) is False
    await env.run(groups.revoke, assignment)


async def test_unknown_identity_center_group_is_final(aws, groups) -> None:
    aws.add_user("alice@example.com")
    aws.add_group("oncall")

    error = await failure(ActivityEnvironment(), groups.resolve, group_spec(group="on-call"))

    assert_final(error, "NoSuchGroup")
    assert error.message == "there is no Identity Center group named on-call"


async def test_unknown_email_for_a_group_is_final(aws, groups) -> None:
    aws.add_group("oncall")

    error = await failure(ActivityEnvironment(), groups.resolve, group_spec("dave@example.com"))

    assert_final(error, "NoSuchUser")


async def test_group_conflict_because_already_a_member_is_success(stubbed) -> None:
    sso_admin, _ = stubbed("sso-admin")
    identitystore, stub = stubbed("identitystore")
    assignment = ResolvedAssignment(
        spec=group_spec().spec,
        principal_id=USER_ID,
        identity_store_id="d-1234567890",
        group_id="a1b2c3d4-1111-2222-3333-444455556666",
    )
    membership = {
        "MembershipId": "b1b2c3d4-1111-2222-3333-444455556666",
        "IdentityStoreId": "d-1234567890",
        "MembershipArn": "arn:aws:identitystore::123456789012:membership/d-1234567890/b1b2c3d4",
    }
    stub.add_client_error("get_group_membership_id", "ResourceNotFoundException")
    stub.add_client_error("create_group_membership", "ConflictException", "already a member")
    stub.add_response("get_group_membership_id", membership)
    groups = AwsSsoGroupStrategy(sso_admin, identitystore)

    await ActivityEnvironment().run(groups.grant, assignment)


async def test_a_spec_for_another_strategy_is_refused(aws, groups) -> None:
    error = await failure(ActivityEnvironment(), groups.resolve, sso_spec())

    assert_final(error, "InvalidTarget")


async def test_a_person_is_looked_up_once_and_forgotten_when_aws_no_longer_knows_them(aws, sso):
    """The check before PENDING costs no identitystore call for someone seen lately; a user
    deleted and made again gets no access through the old id, and the next request finds the
    new one."""
    aws.add_user("alice@example.com")
    aws.add_permission_set("PowerUserAccess")
    lookups: list[str] = []
    aws.identitystore.meta.events.register(
        "before-call.identitystore.GetUserId", lambda **_: lookups.append("GetUserId")
    )
    env = ActivityEnvironment()
    first = await env.run(sso.resolve, sso_spec())
    again = await env.run(sso.resolve, sso_spec(email="Alice@example.com"))
    assert again.principal_id == first.principal_id
    assert lookups == ["GetUserId"]

    aws.identitystore.delete_user(IdentityStoreId=aws.identity_store_id, UserId=first.principal_id)
    new_id = aws.add_user("alice@example.com")

    def unknown_principal(**_: Any) -> None:  # what AWS says; moto does not check principals
        error = {"Code": "ResourceNotFoundException", "Message": "principal not found"}
        raise ClientError({"Error": error}, "CreateAccountAssignment")

    sso._sso_admin = mock.Mock(wraps=sso._sso_admin)
    sso._sso_admin.create_account_assignment.side_effect = unknown_principal
    refused = await failure(env, sso.grant, first)
    assert refused.type == "NoSuchPermissionSet" and first.principal_id in refused.message
    assert aws.user_assignments(first.permission_set_arn) == []

    assert (await env.run(sso.resolve, sso_spec())).principal_id == new_id
    assert lookups == ["GetUserId", "GetUserId"]
