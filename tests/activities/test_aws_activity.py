"""`aws.activity`: what was done with an ended grant, from the CloudTrail events of its Identity
Center role session, read through the real boto3 client from a fake LookupEvents (moto has none)
reached through AWS_ENDPOINT_URL_CLOUDTRAIL; the user and permission set come from moto."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.config import Config
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import aws_activity
from activities.aws import activity_readers
from keycard.config import ActivitySettings, AwsSettings
from keycard.models import ActivityQuery, AssignmentSpec, ResolvedAssignment
from tests.activities.conftest import ACCOUNT, REGION
from tests.fake_cloudtrail import running_fake_cloudtrail

GRANTED = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
ENDED = GRANTED + timedelta(hours=1)


@pytest.fixture
async def trail(aws, monkeypatch):
    async with running_fake_cloudtrail() as fake:
        monkeypatch.setenv("AWS_ENDPOINT_URL_CLOUDTRAIL", fake.url)
        yield fake


def _query(aws, settings: ActivitySettings | None = None, user="alice@example.com"):
    user_id = aws.add_user("alice@example.com", user_name=user)
    permission_set = aws.add_permission_set("PowerUserAccess")
    assignment = ResolvedAssignment(
        spec=AssignmentSpec(
            strategy="aws_sso",
            principal_email="alice@example.com",
            account_id=ACCOUNT,
            permission_set="PowerUserAccess",
        ),
        principal_id=user_id,
        instance_arn=aws.instance_arn,
        identity_store_id=aws.identity_store_id,
        permission_set_arn=permission_set,
    )
    return ActivityQuery(
        target="prod",
        assignment=assignment,
        settings=settings or ActivitySettings(),
        since=GRANTED,
        until=ENDED,
    )


def _reader(aws, **options):
    [read] = activity_readers(aws.session, AwsSettings(region=REGION), **options)
    return read


def _alice(trail, minutes: float, name: str, **options) -> None:
    options.setdefault("user", "alice@example.com")
    options.setdefault("account", ACCOUNT)
    options.setdefault("permission_set", "PowerUserAccess")
    trail.call(GRANTED + timedelta(minutes=minutes), name, **options)


async def test_the_grants_calls_are_counted_by_service_writes_and_errors(aws, trail):
    query = _query(aws)
    _alice(trail, 1, "DescribeInstances")
    _alice(trail, 5, "StopInstances", read_only=False)
    _alice(
        trail, 6, "DeleteBucket", source="s3.amazonaws.com", read_only=False, error="AccessDenied"
    )
    _alice(trail, 59, "GetObject", source="s3.amazonaws.com")
    _alice(trail, 75, "TerminateInstances", read_only=False, error="AccessDenied")  # after the end
    # Not the grant's: another permission set, another person, another account, before it.
    _alice(trail, 10, "ListUsers", permission_set="ReadOnlyAccess")
    _alice(trail, 11, "ListUsers", user="bob@example.com")
    _alice(trail, 12, "ListUsers", account="222222222222")
    _alice(trail, -5, "ListUsers")

    summary = await ActivityEnvironment().run(_reader(aws), query)

    assert (summary.calls, summary.writes, summary.errors) == (4, 2, 1)
    assert summary.services == {"ec2.amazonaws.com": 2, "s3.amazonaws.com": 2}
    assert summary.error_codes == {"AccessDenied": 1}
    assert summary.first_call and summary.first_call.name == "DescribeInstances"
    assert summary.first_call.time == GRANTED + timedelta(minutes=1)
    assert summary.last_call and summary.last_call.name == "GetObject"
    assert summary.after_end == 1 and not summary.truncated
    assert summary.role_session == "AWSReservedSSO_PowerUserAccess_*/alice@example.com"
    assert summary.regions == [REGION] and summary.account_id == ACCOUNT
    assert summary.line == (
        "4 call(s) (2 write(s), 1 error(s)) to ec2, s3; 09:01 to 09:59 UTC; 1 after the end"
    )
    # One lookup by the session's user name, from the grant on.
    [lookup] = trail.lookups
    assert lookup["LookupAttributes"] == [
        {"AttributeKey": "Username", "AttributeValue": "alice@example.com"}
    ]
    assert lookup["StartTime"] == GRANTED.timestamp() and lookup["region"] == REGION


async def test_the_session_is_named_by_the_identity_center_user_name(aws, trail):
    """Identity Center names the session after the user name, which need not be the email."""
    query = _query(aws, user="alice")
    _alice(trail, 1, "DescribeInstances", user="alice")
    _alice(trail, 2, "DescribeInstances")  # an alice@example.com session elsewhere: not hers
    summary = await ActivityEnvironment().run(_reader(aws), query)
    assert summary.calls == 1 and summary.role_session.endswith("/alice")


async def test_every_region_named_is_read_and_pages_are_followed(aws, trail):
    query = _query(aws, ActivitySettings(regions=["us-east-1", "eu-west-1"]))
    for minute in range(120):  # three pages in eu-west-1
        _alice(trail, minute * 0.25, "DescribeInstances", region="eu-west-1")
    _alice(trail, 3, "CreateUser", region="us-east-1", source="iam.amazonaws.com", read_only=False)
    summary = await ActivityEnvironment().run(_reader(aws), query)
    assert summary.calls == 121 and summary.writes == 1
    assert summary.services == {"ec2.amazonaws.com": 120, "iam.amazonaws.com": 1}
    assert summary.regions == ["us-east-1", "eu-west-1"]
    assert [lookup["region"] for lookup in trail.lookups] == ["us-east-1", *["eu-west-1"] * 3]


async def test_more_events_than_it_reads_make_the_counts_a_floor(aws, trail, monkeypatch):
    monkeypatch.setattr(aws_activity, "MAX_EVENTS", 60)
    query = _query(aws)
    for minute in range(70):
        _alice(trail, minute * 0.5, "DescribeInstances")
    summary = await ActivityEnvironment().run(_reader(aws), query)
    assert summary.truncated and summary.calls == 60
    assert summary.line.startswith("at least 60 call(s)")


async def test_the_flows_role_is_assumed_in_the_targets_account(aws, trail, monkeypatch):
    seen = []
    real_client = boto3.Session.client

    def client(session, service, *args, **kwargs):
        if service == "cloudtrail":
            seen.append(kwargs.get("aws_session_token"))
        return real_client(session, service, *args, **kwargs)

    monkeypatch.setattr(boto3.Session, "client", client)
    query = _query(aws, ActivitySettings(role="KeycardActivityReader"))
    _alice(trail, 1, "DescribeInstances")
    summary = await ActivityEnvironment().run(_reader(aws), query)
    assert summary.calls == 1
    assert seen and seen[-1]  # the cloudtrail client was made with the assumed role's session


async def test_throttling_is_retried_and_a_denial_says_what_to_allow(aws, trail):
    query = _query(aws)
    trail.throttle = 10  # past boto3's own retries: the activity's attempt fails, retryable
    once = Config(retries={"mode": "standard", "max_attempts": 1})
    with pytest.raises(ApplicationError) as throttled:
        await ActivityEnvironment().run(_reader(aws, config=once), query)
    assert not throttled.value.non_retryable and "throttling" in str(throttled.value)

    trail.throttle = 1
    assert (await ActivityEnvironment().run(_reader(aws), query)).calls == 0  # boto3 retried it
    assert trail.throttle == 0

    trail.denied = True
    with pytest.raises(ApplicationError) as denied:
        await ActivityEnvironment().run(_reader(aws), query)
    assert denied.value.non_retryable
    assert "cloudtrail:LookupEvents" in str(denied.value)
