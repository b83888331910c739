"""Which AWS failures retry and which fail the request, and how worker.py gets every activity."""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
)
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws import STRATEGY_ACTIVITY_NAMES, strategy_activities
from activities.aws_errors import call_aws, classify, is_conflict, is_not_found
from keycard.config import AwsSettings
from keycard.failures import root_message
from keycard.strategies import NON_RETRYABLE_ERRORS


def client_error(code: str, status: int = 400, message: str = "it went wrong") -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": "rid-1"},
        },
        "CreateAccountAssignment",
    )


@pytest.mark.parametrize(
    ("code", "status", "expected_type"),
    [
        ("ThrottlingException", 400, "AwsThrottled"),
        ("TooManyRequestsException", 429, "AwsThrottled"),
        ("Throttling", 400, "AwsThrottled"),
        ("RequestLimitExceeded", 400, "AwsThrottled"),
        ("ConflictException", 409, "AwsConflict"),
        ("InternalServerException", 500, "AwsUnavailable"),
        ("ServiceUnavailable", 503, "AwsUnavailable"),
        ("SomethingNew", 502, "AwsUnavailable"),
        ("ExpiredTokenException", 400, "AwsCredentials"),
        ("SomethingNew", 400, "SomethingNew"),
    ],
)
def test_passing_trouble_is_retryable(code: str, status: int, expected_type: str) -> None:
    error = classify(client_error(code, status), "sso:CreateAccountAssignment")

    assert (error.type, error.non_retryable) == (expected_type, False)
    assert "sso:CreateAccountAssignment" in error.message


@pytest.mark.parametrize(
    ("code", "expected_type"),
    [
        ("AccessDeniedException", "AccessDenied"),
        ("AccessDenied", "AccessDenied"),
        ("UnrecognizedClientException", "AccessDenied"),
        ("ValidationException", "InvalidTarget"),
        ("ResourceNotFoundException", "InvalidTarget"),
        ("NoSuchEntity", "InvalidTarget"),
        ("ServiceQuotaExceededException", "InvalidTarget"),
    ],
)
def test_what_a_retry_cannot_fix_is_final(code: str, expected_type: str) -> None:
    error = classify(client_error(code, message="details from AWS"), "sso:CreateAccountAssignment")

    assert (error.type, error.non_retryable) == (expected_type, True)
    assert expected_type in NON_RETRYABLE_ERRORS
    assert "details from AWS" in error.message


@pytest.mark.parametrize(
    ("error", "expected_type", "non_retryable"),
    [
        (
            EndpointConnectionError(endpoint_url="https://sso.us-east-1.amazonaws.com"),
            "AwsUnreachable",
            False,
        ),
        (
            ConnectTimeoutError(endpoint_url="https://sso.us-east-1.amazonaws.com"),
            "AwsUnreachable",
            False,
        ),
        (NoCredentialsError(), "AwsCredentials", False),
        (ParamValidationError(report="AccountId must be 12 digits"), "InvalidTarget", True),
    ],
)
def test_errors_raised_before_aws_answers(
    error: Exception, expected_type: str, non_retryable: bool
) -> None:
    classified = classify(error, "sso:ListInstances")

    assert (classified.type, classified.non_retryable) == (expected_type, non_retryable)


def test_details_carry_the_aws_request_id_for_support_cases() -> None:
    error = classify(client_error("ThrottlingException"), "sso:CreateAccountAssignment")

    assert error.details == (
        {
            "action": "sso:CreateAccountAssignment",
            "aws_error_code": "ThrottlingException",
            "aws_message": "it went wrong",
            "aws_request_id": "rid-1",
        },
    )


async def test_the_workflow_reads_our_message_not_botocores_yet_call_sites_see_the_code(
    stubbed,
) -> None:
    identitystore, stub = stubbed("identitystore")
    stub.add_client_error("get_user_id", "ResourceNotFoundException", "USER not found.")
    stub.add_client_error("get_user_id", "ThrottlingException", "Rate exceeded")
    no_such_user = ApplicationError("no user", type="NoSuchUser", non_retryable=True)
    kwargs = {
        "IdentityStoreId": "d-1234567890",
        "AlternateIdentifier": {
            "UniqueAttribute": {"AttributePath": "emails.value", "AttributeValue": "d@x.io"}
        },
    }

    for expected in ("no user", "AWS is throttling identitystore:GetUserId"):
        with pytest.raises(ApplicationError) as caught:
            await call_aws(identitystore.get_user_id, if_not_found=no_such_user, **kwargs)
        # Temporal sends __cause__ to the workflow, whose messages read the innermost cause.
        assert root_message(caught.value).startswith(expected)
    assert is_not_found(no_such_user)
    assert is_conflict(classify(client_error("ConflictException"), "sso:X"))


def test_worker_gets_every_strategy_activity_under_its_contract_name(aws_env) -> None:
    session = boto3.Session(region_name="eu-west-1")

    activities = strategy_activities(session, AwsSettings(region="us-east-1"))

    names = [activity._Definition.must_from_callable(fn).name for fn in activities]
    assert names == list(STRATEGY_ACTIVITY_NAMES)
    assert len(set(names)) == 12
    sso_admin = activities[0].__self__._sso_admin
    assert sso_admin.meta.region_name == "us-east-1"  # keycard.yaml's region wins
