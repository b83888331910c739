"""aws_iam_group activities against moto: which IAM user a requester is, and group membership."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.aws_iam import AwsIamGroupStrategy
from keycard.models import AssignmentSpec, ResolvedAssignment, ResolveInput
from keycard.strategies import NON_RETRYABLE_ERRORS


def spec(email: str = "alice@example.com", group: str = "deployers") -> ResolveInput:
    return ResolveInput(
        spec=AssignmentSpec(strategy="aws_iam_group", principal_email=email, group=group)
    )


async def failure(fn: Any, arg: Any) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await ActivityEnvironment().run(fn, arg)
    return caught.value


def assert_final(error: ApplicationError, type: str) -> None:
    assert (error.type, error.non_retryable) == (type, True)
    assert type in NON_RETRYABLE_ERRORS


@pytest.fixture
def iam(aws) -> Any:
    aws.iam.create_group(GroupName="deployers")
    return aws.iam


@pytest.fixture
def strategy(iam) -> AwsIamGroupStrategy:
    return AwsIamGroupStrategy(iam)


def groups_of(iam: Any, user_name: str) -> list[str]:
    return [g["GroupName"] for g in iam.list_groups_for_user(UserName=user_name)["Groups"]]


async def test_the_user_named_by_the_email_is_granted_and_revoked_idempotently(
    iam, strategy
) -> None:
    iam.create_user(UserName="alice@example.com")
    env = ActivityEnvironment()

    assignment = await env.run(strategy.resolve, spec())
    assert (assignment.principal_id, assignment.group_id) == ("alice@example.com", "deployers")
    assert assignment.grant_key == "aws_iam_group:deployers:alice@example.com"
    assert await env.run(strategy.exists, assignment) is False

    await env.run(strategy.grant, assignment)
    await env.run(strategy.grant, assignment)
    assert groups_of(iam, "alice@example.com") == ["deployers"]
    assert await env.run(strategy.exists, assignment) is True

    await env.run(strategy.revoke, assignment)
    assert groups_of(iam, "alice@example.com") == []
    assert await env.run(strategy.exists, assignment) is False
    await env.run(strategy.revoke, assignment)


async def test_otherwise_the_user_tagged_with_the_email_is_used(iam, strategy) -> None:
    iam.create_user(UserName="alice", Tags=[{"Key": "email", "Value": "Alice@Example.com"}])
    iam.create_user(UserName="bob", Tags=[{"Key": "email", "Value": "bob@example.com"}])
    iam.create_user(UserName="mallory", Tags=[{"Key": "team", "Value": "alice@example.com"}])

    assignment = await ActivityEnvironment().run(strategy.resolve, spec())
    await ActivityEnvironment().run(strategy.grant, assignment)

    assert assignment.principal_id == "alice"
    assert groups_of(iam, "alice") == ["deployers"]


async def test_two_users_tagged_with_one_email_is_an_error_not_a_guess(iam, strategy) -> None:
    for name in ("alice", "alice-admin"):
        iam.create_user(UserName=name, Tags=[{"Key": "email", "Value": "alice@example.com"}])

    error = await failure(strategy.resolve, spec())

    assert_final(error, "NoSuchUser")
    assert "alice, alice-admin" in error.message


async def test_unknown_email_is_final(iam, strategy) -> None:
    iam.create_user(UserName="bob@example.com")

    error = await failure(strategy.resolve, spec("dave@example.com"))

    assert_final(error, "NoSuchUser")
    assert error.message == (
        "no IAM user is named dave@example.com or tagged email=dave@example.com"
    )


async def test_unknown_group_is_final(iam, strategy) -> None:
    iam.create_user(UserName="alice@example.com")

    error = await failure(strategy.resolve, spec(group="deployer"))

    assert_final(error, "NoSuchGroup")
    assert error.message == "there is no IAM group named deployer"


async def test_revoke_after_the_user_was_deleted_is_success(iam, strategy) -> None:
    iam.create_user(UserName="alice@example.com")
    assignment = await ActivityEnvironment().run(strategy.resolve, spec())
    iam.delete_user(UserName="alice@example.com")

    await ActivityEnvironment().run(strategy.revoke, assignment)
    error = await failure(strategy.exists, assignment)

    assert_final(error, "NoSuchUser")


async def test_grant_to_a_group_deleted_since_resolving_is_final(iam, strategy) -> None:
    iam.create_user(UserName="alice@example.com")
    assignment = await ActivityEnvironment().run(strategy.resolve, spec())
    iam.delete_group(GroupName="deployers")

    error = await failure(strategy.grant, assignment)

    assert_final(error, "NoSuchGroup")


async def test_throttling_is_retryable_and_access_denied_final(stubbed) -> None:
    iam, stub = stubbed("iam")
    stub.add_client_error("add_user_to_group", "Throttling", "Rate exceeded")
    stub.add_client_error("add_user_to_group", "AccessDenied", "not authorized", 403)
    strategy = AwsIamGroupStrategy(iam)
    assignment = ResolvedAssignment(
        spec=spec().spec, principal_id="alice@example.com", group_id="deployers"
    )

    throttled = await failure(strategy.grant, assignment)
    denied = await failure(strategy.grant, assignment)

    assert (throttled.type, throttled.non_retryable) == ("AwsThrottled", False)
    assert_final(denied, "AccessDenied")
    assert "iam:AddUserToGroup" in denied.message
