"""What was done with an ended Identity Center grant: its role session's CloudTrail events.

A person's access through a permission set is an assumed-role session of the role Identity Center
made for it in the account, `AWSReservedSSO_<permission set>_<suffix>`, named after the person's
Identity Center user name. `LookupEvents` (CloudTrail's event history: 90 days of management
events, per account and region, no trail or CloudTrail Lake needed) finds that session's calls by
user name; the calls of that role in that account are the grant's. Calls made after the grant
ended (up to when this reads) are counted apart: a session outliving its grant, whose calls
end_sessions should have had denied.

IAM: the worker needs identitystore:DescribeUser and sso:DescribePermissionSet to name the
session, and cloudtrail:LookupEvents in the target's account: its own, or through the flow's
`activity.role`, which it assumes there (sts:AssumeRole). LookupEvents allows two calls a second
per account and region; boto3 and the activity's retries wait out throttling.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from temporalio import activity

from activities.aws_errors import (
    call_aws,
    classify,
    require_resolved,
    require_spec,
    run_blocking,
)
from keycard import temporal as names
from keycard.models import AccessActivity, ActivityCall, ActivityQuery

# Read at most this many of the session's events per region (50 a page, two pages a second):
# beyond, the counts are a floor and the summary says so.
MAX_EVENTS = 2000
ROLE_PREFIX = "AWSReservedSSO_"

ClientFor = Callable[[str, dict[str, Any] | None], Any]  # (region, credentials) -> cloudtrail


class ActivityReader:
    """`aws.activity`: the summary of one ended grant's calls (keycard/models.py AccessActivity)."""

    def __init__(
        self,
        sso_admin: Any,
        identitystore: Any,
        sts: Any,
        cloudtrail: ClientFor,
        default_region: str | None,
        partition: str = "aws",
    ) -> None:
        self._sso_admin = sso_admin
        self._identitystore = identitystore
        self._sts = sts
        self._cloudtrail = cloudtrail
        self._default_region = default_region
        self._partition = partition

    def activities(self) -> list[Callable[..., Any]]:
        return [self.read]

    @activity.defn(name=names.READ_ACTIVITY)
    async def read(self, query: ActivityQuery) -> AccessActivity:
        assignment = query.assignment
        require_spec(assignment.spec, "aws_sso", "account_id")
        require_resolved(assignment, "identity_store_id", "instance_arn", "permission_set_arn")
        account = assignment.spec.account_id or ""
        user_name = await self._user_name(
            assignment.identity_store_id or "", assignment.principal_id
        )
        permission_set = await self._permission_set_name(
            assignment.instance_arn or "", assignment.permission_set_arn or ""
        )
        session = _session_pattern(account, permission_set, user_name)
        regions = query.settings.regions or [self._default_region or "us-east-1"]
        credentials = await self._credentials(query.settings.role_arn(account, self._partition))
        read_at = datetime.now(UTC)
        calls: list[ActivityCall] = []
        truncated = False
        for region in regions:
            found, more = await self._calls(region, credentials, user_name, session, query.since)
            calls += found
            truncated = truncated or more
        return summarise(
            query,
            account=account,
            regions=regions,
            role_session=f"{ROLE_PREFIX}{permission_set}_*/{user_name}",
            calls=calls,
            read_at=read_at,
            truncated=truncated,
        )

    async def _user_name(self, identity_store_id: str, user_id: str) -> str:
        user = await call_aws(
            self._identitystore.describe_user, IdentityStoreId=identity_store_id, UserId=user_id
        )
        return str(user["UserName"])

    async def _permission_set_name(self, instance_arn: str, permission_set_arn: str) -> str:
        response = await call_aws(
            self._sso_admin.describe_permission_set,
            InstanceArn=instance_arn,
            PermissionSetArn=permission_set_arn,
        )
        return str(response["PermissionSet"]["Name"])

    async def _credentials(self, role_arn: str | None) -> dict[str, Any] | None:
        if role_arn is None:
            return None
        response = await call_aws(
            self._sts.assume_role, RoleArn=role_arn, RoleSessionName="keycard-activity"
        )
        return dict(response["Credentials"])

    async def _calls(
        self,
        region: str,
        credentials: dict[str, Any] | None,
        user_name: str,
        session: re.Pattern[str],
        since: datetime,
    ) -> tuple[list[ActivityCall], bool]:
        """The session's calls in one region from `since` on, and whether there were more than
        MAX_EVENTS events to read."""
        client = self._cloudtrail(region, credentials)
        paginator = client.get_paginator("lookup_events")
        pages = iter(
            paginator.paginate(
                LookupAttributes=[{"AttributeKey": "Username", "AttributeValue": user_name}],
                StartTime=since,  # to now: calls after the grant's end are counted apart
                PaginationConfig={"PageSize": 50},
            )
        )
        calls: list[ActivityCall] = []
        read = 0
        while True:
            try:
                page = await run_blocking(lambda: next(pages, None))
            except (ClientError, BotoCoreError) as error:
                raise classify(error, "cloudtrail:LookupEvents") from None
            if page is None:
                return calls, False
            activity.heartbeat(region, read)
            for event in page.get("Events", []):
                read += 1
                if read > MAX_EVENTS:
                    return calls, True
                call = _call(event, session, region)
                if call is not None:
                    calls.append(call)


def summarise(
    query: ActivityQuery,
    *,
    account: str,
    regions: list[str],
    role_session: str,
    calls: list[ActivityCall],
    read_at: datetime,
    truncated: bool = False,
) -> AccessActivity:
    """The counts an auditor reads: calls within the grant, and those after its end apart."""
    calls = sorted(calls, key=lambda c: c.time)
    within = [c for c in calls if c.time <= query.until]
    errors = Counter(c.error for c in within if c.error)
    return AccessActivity(
        target=query.target,
        account_id=account,
        regions=regions,
        role_session=role_session,
        since=query.since,
        until=query.until,
        read_at=read_at,
        calls=len(within),
        services=dict(Counter(c.service for c in within).most_common()),
        writes=sum(1 for c in within if c.read_only is False),
        errors=sum(errors.values()),
        error_codes=dict(errors.most_common()),
        first_call=within[0] if within else None,
        last_call=within[-1] if within else None,
        after_end=len(calls) - len(within),
        truncated=truncated,
    )


def _session_pattern(account: str, permission_set: str, user_name: str) -> re.Pattern[str]:
    """The ARN of the grant's role session: arn:aws:sts::<account>:assumed-role/
    AWSReservedSSO_<permission set>_<suffix>/<user name>."""
    return re.compile(
        rf"^arn:[\w-]+:sts::{re.escape(account)}:assumed-role/"
        rf"{ROLE_PREFIX}{re.escape(permission_set)}_[0-9A-Za-z]+/{re.escape(user_name)}$",
        re.IGNORECASE,
    )


def _call(event: dict[str, Any], session: re.Pattern[str], region: str) -> ActivityCall | None:
    """One LookupEvents event as a call of the session, or None when another session made it."""
    try:
        detail = json.loads(event.get("CloudTrailEvent") or "{}")
    except ValueError:
        return None
    identity = detail.get("userIdentity") or {}
    if not session.match(str(identity.get("arn", ""))):
        return None
    read_only = detail.get("readOnly", event.get("ReadOnly"))
    if isinstance(read_only, str):
        read_only = read_only.lower() == "true"
    time = event.get("EventTime")
    if not isinstance(time, datetime):
        time = datetime.fromisoformat(str(detail.get("eventTime")).replace("Z", "+00:00"))
    return ActivityCall(
        time=time.astimezone(UTC),
        name=str(event.get("EventName") or detail.get("eventName", "")),
        service=str(event.get("EventSource") or detail.get("eventSource", "")),
        region=str(detail.get("awsRegion") or region),
        read_only=read_only if isinstance(read_only, bool) else None,
        error=detail.get("errorCode"),
    )
