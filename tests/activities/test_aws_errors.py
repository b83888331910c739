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

from activities.aws import STRATEGY_ACTIVITY_NAMES, strategy_activities
from activities.aws_errors import classify, is_conflict, is_not_found
from keycard.config import AwsSettings
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
            "aws_request_id": "rid-1",
        },
    )


def test_call_sites_can_see_through_a_classified_error_to_the_aws_code() -> None:
    original = client_error("ResourceNotFoundException")
    try:
        raise classify(original, "sso:DeleteAccountAssignment") from original
    except Exception as classified:
        assert is_not_found(classified)
        assert not is_conflict(classified)


def test_worker_gets_every_strategy_activity_under_its_contract_name(aws_env) -> None:
    session = boto3.Session(region_name="eu-west-1")

    activities = strategy_activities(session, AwsSettings(region="us-east-1"))

    names = [activity._Definition.must_from_callable(fn).name for fn in activities]
    assert names == list(STRATEGY_ACTIVITY_NAMES)
    assert len(set(names)) == 12
    sso_admin = activities[0].__self__._sso_admin
    assert sso_admin.meta.region_name == "us-east-1"  # keycard.yaml's region wins
