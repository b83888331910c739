"""Builds every AWS strategy activity from one boto3 Session and keycard.yaml's `aws` settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config

from activities.aws_iam import AwsIamGroupStrategy
from activities.aws_sessions import SessionPolicies
from activities.aws_sso import AwsSsoGroupStrategy, AwsSsoStrategy
from keycard.config import AwsSettings
from keycard.strategies import OPERATIONS, activity_name
from keycard.strategies import STRATEGIES as REGISTRY

STRATEGIES = tuple(name for name, info in REGISTRY.items() if info.aws)
# Every activity name the AWS strategies register, e.g. for fakes registered under the real names.
STRATEGY_ACTIVITY_NAMES = tuple(activity_name(s, op) for s in STRATEGIES for op in OPERATIONS)

# botocore retries throttling and 5xx a few times quickly inside one activity attempt; Temporal's
# retry policy does the patient retrying across attempts. Timeouts keep a hung connection from
# holding an activity until its start-to-close timeout.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4},
    connect_timeout=5,
    read_timeout=30,
    user_agent_extra="keycard",
)


def strategy_activities(
    session: boto3.Session, settings: AwsSettings, *, config: Config = CLIENT_CONFIG
) -> list[Callable[..., Any]]:
    """The bound activity methods of all three strategies, ready for `Worker(activities=...)`.

    Endpoint and credentials come from the usual AWS settings (AWS_PROFILE, AWS_ENDPOINT_URL, ...);
    the region from keycard.yaml's `aws.region`, else the session's.
    """
    region = settings.region or session.region_name
    sso_admin = session.client("sso-admin", region_name=region, config=config)
    identitystore = session.client("identitystore", region_name=region, config=config)
    iam = session.client("iam", region_name=region, config=config)
    instance = {
        "instance_arn": settings.sso_instance_arn,
        "identity_store_id": settings.identity_store_id,
    }
    return [
        *AwsSsoStrategy(sso_admin, identitystore, **instance).activities(),
        *AwsSsoGroupStrategy(sso_admin, identitystore, **instance).activities(),
        *AwsIamGroupStrategy(iam).activities(),
    ]


# The registry's factories (keycard/strategies.py `implementation`): each builds one strategy's
# activities from the worker's StrategyContext (its boto3 session and keycard.yaml).


def _clients(context: Any, *services: str) -> list[Any]:
    settings: AwsSettings = context.config.aws
    region = settings.region or context.session.region_name
    return [
        context.session.client(service, region_name=region, config=CLIENT_CONFIG)
        for service in services
    ]


def _instance(context: Any) -> dict[str, str | None]:
    settings: AwsSettings = context.config.aws
    return {
        "instance_arn": settings.sso_instance_arn,
        "identity_store_id": settings.identity_store_id,
    }


def aws_sso_activities(context: Any) -> list[Callable[..., Any]]:
    sso_admin, identitystore = _clients(context, "sso-admin", "identitystore")
    return AwsSsoStrategy(sso_admin, identitystore, **_instance(context)).activities()


def aws_sso_group_activities(context: Any) -> list[Callable[..., Any]]:
    sso_admin, identitystore = _clients(context, "sso-admin", "identitystore")
    return AwsSsoGroupStrategy(sso_admin, identitystore, **_instance(context)).activities()


def aws_iam_group_activities(context: Any) -> list[Callable[..., Any]]:
    [iam] = _clients(context, "iam")
    return AwsIamGroupStrategy(iam).activities()


def session_activities(
    session: boto3.Session, settings: AwsSettings, *, config: Config = CLIENT_CONFIG
) -> list[Callable[..., Any]]:
    """end_sessions' policy writes (activities/aws_sessions.py): the permission set's inline policy,
    or a flow's customer-managed policy through the role it names in each account."""
    region = settings.region or session.region_name
    sso_admin = session.client("sso-admin", region_name=region, config=config)
    sts = session.client("sts", region_name=region, config=config)

    def iam_client(credentials: dict[str, Any]) -> Any:
        return session.client(
            "iam",
            region_name=region,
            config=config,
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )

    return SessionPolicies(sso_admin, sts=sts, iam_client=iam_client).activities()


def activity_readers(
    session: boto3.Session, settings: AwsSettings, *, config: Config = CLIENT_CONFIG
) -> list[Callable[..., Any]]:
    """`aws.activity` (activities/aws_activity.py): a grant's CloudTrail events, for flows with
    `activity: cloudtrail`; through the flow's role in the target's account when it names one."""
    from activities.aws_activity import ActivityReader

    region = settings.region or session.region_name

    def cloudtrail(in_region: str, credentials: dict[str, Any] | None) -> Any:
        keys = {}
        if credentials is not None:
            keys = {
                "aws_access_key_id": credentials["AccessKeyId"],
                "aws_secret_access_key": credentials["SecretAccessKey"],
                "aws_session_token": credentials["SessionToken"],
            }
        return session.client("cloudtrail", region_name=in_region, config=config, **keys)

    return ActivityReader(
        session.client("sso-admin", region_name=region, config=config),
        session.client("identitystore", region_name=region, config=config),
        session.client("sts", region_name=region, config=config),
        cloudtrail,
        default_region=region,
    ).activities()


def drift_activities(
    client: Any,
    session: boto3.Session,
    settings: AwsSettings,
    task_queue: str | None = None,
    *,
    config: Config = CLIENT_CONFIG,
) -> list[Callable[..., Any]]:
    """The drift sweep's activities (activities/drift.py), on the aws_sso strategy's lookups."""
    from activities.drift import DriftActivities

    region = settings.region or session.region_name
    sso = AwsSsoStrategy(
        session.client("sso-admin", region_name=region, config=config),
        session.client("identitystore", region_name=region, config=config),
        instance_arn=settings.sso_instance_arn,
        identity_store_id=settings.identity_store_id,
    )
    return DriftActivities(client, sso, task_queue).activities()


def region_problem(settings: AwsSettings) -> str | None:
    """Why the strategies could not make their AWS clients, or None: boto3 has no default region,
    and without one the worker would die at its first client."""
    if settings.region or boto3.session.Session().region_name:
        return None
    return "no AWS region: set aws.region in keycard.yaml or AWS_REGION in the environment"
