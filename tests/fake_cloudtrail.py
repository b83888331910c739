"""A small CloudTrail for tests: `LookupEvents` (which moto does not have), served over HTTP for
the real boto3 client, reached the way a user points boto3 anywhere (AWS_ENDPOINT_URL_CLOUDTRAIL,
or endpoint_url). Events are kept per region (read from each request's signature scope), filtered
by one lookup attribute and the time range, newest first, 50 a page with NextToken, as AWS does."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from tests.local_http import serving

TARGET = "com.amazonaws.cloudtrail.v20131101.CloudTrail_20131101.LookupEvents"
SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/cloudtrail/aws4_request")
ATTRIBUTES = {"Username": "Username", "EventName": "EventName", "EventSource": "EventSource"}


@dataclass
class FakeCloudTrail:
    url: str = ""
    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by region
    lookups: list[dict[str, Any]] = field(default_factory=list)  # each request, with its region
    throttle: int = 0  # answer this many requests with ThrottlingException first
    denied: bool = False  # answer AccessDeniedException
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def call(
        self,
        at: datetime,
        name: str,
        *,
        user: str,
        account: str,
        permission_set: str,
        region: str = "us-east-1",
        source: str = "ec2.amazonaws.com",
        read_only: bool = True,
        error: str | None = None,
    ) -> None:
        """One call by the Identity Center role session of `permission_set` and `user`."""
        role = f"AWSReservedSSO_{permission_set}_0123456789abcdef"
        self.record(
            region,
            at,
            name,
            source=source,
            username=user,
            identity={
                "type": "AssumedRole",
                "principalId": f"AROAEXAMPLE:{user}",
                "arn": f"arn:aws:sts::{account}:assumed-role/{role}/{user}",
                "accountId": account,
            },
            read_only=read_only,
            error=error,
        )

    def record(
        self,
        region: str,
        at: datetime,
        name: str,
        *,
        source: str,
        username: str,
        identity: dict[str, Any],
        read_only: bool = True,
        error: str | None = None,
    ) -> None:
        detail: dict[str, Any] = {
            "eventVersion": "1.09",
            "userIdentity": identity,
            "eventTime": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "eventSource": source,
            "eventName": name,
            "awsRegion": region,
            "readOnly": read_only,
        }
        if error:
            detail["errorCode"] = error
        self.events.setdefault(region, []).append(
            {
                "EventId": f"evt-{next(self._ids)}",
                "EventName": name,
                "ReadOnly": "true" if read_only else "false",
                "EventTime": at.timestamp(),
                "EventSource": source,
                "Username": username,
                "Resources": [],
                "CloudTrailEvent": json.dumps(detail),
            }
        )

    async def _lookup(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Amz-Target") != TARGET:
            return _error(400, "UnknownOperationException", "only LookupEvents is faked")
        scope = SCOPE.search(request.headers.get("Authorization", ""))
        region = scope.group(1) if scope else "?"
        body = await request.json()
        self.lookups.append({"region": region, **body})
        if self.throttle:
            self.throttle -= 1
            return _error(400, "ThrottlingException", "Rate exceeded")
        if self.denied:
            return _error(
                400,
                "AccessDeniedException",
                "User: arn:aws:sts::111111111111:assumed-role/keycard/worker is not authorized "
                "to perform: cloudtrail:LookupEvents",
            )
        return web.json_response(self.page(region, body), content_type="application/x-amz-json-1.1")

    def page(self, region: str, body: dict[str, Any]) -> dict[str, Any]:
        """One LookupEvents answer (times as epoch seconds, as on the wire)."""
        found = list(self.events.get(region, []))
        for attribute in body.get("LookupAttributes", []):
            key = ATTRIBUTES[attribute["AttributeKey"]]
            found = [e for e in found if e[key] == attribute["AttributeValue"]]
        if "StartTime" in body:
            found = [e for e in found if e["EventTime"] >= float(body["StartTime"])]
        if "EndTime" in body:
            found = [e for e in found if e["EventTime"] <= float(body["EndTime"])]
        found.sort(key=lambda e: e["EventTime"], reverse=True)
        start = int(body.get("NextToken") or 0)
        size = min(int(body.get("MaxResults") or 50), 50)
        page: dict[str, Any] = {"Events": found[start : start + size]}
        if start + size < len(found):
            page["NextToken"] = str(start + size)
        return page

    def client(self, region: str, credentials: Any = None) -> InProcessClient:
        """A stand-in for the boto3 client without HTTP (the golden histories' recorder)."""
        return InProcessClient(self, region)


@dataclass
class InProcessClient:
    trail: FakeCloudTrail
    region: str

    def get_paginator(self, operation: str) -> InProcessClient:
        assert operation == "lookup_events"
        return self

    def paginate(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        body = {key: value for key, value in kwargs.items() if key != "PaginationConfig"}
        if "StartTime" in body:
            body["StartTime"] = body["StartTime"].timestamp()
        self.trail.lookups.append({"region": self.region, **body})
        while True:
            page = self.trail.page(self.region, body)
            yield {
                **page,
                "Events": [
                    {**e, "EventTime": datetime.fromtimestamp(e["EventTime"], UTC)}
                    for e in page["Events"]
                ],
            }
            if "NextToken" not in page:
                return
            body["NextToken"] = page["NextToken"]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"__type": code, "message": message},
        status=status,
        content_type="application/x-amz-json-1.1",
    )


@asynccontextmanager
async def running_fake_cloudtrail() -> AsyncIterator[FakeCloudTrail]:
    fake = FakeCloudTrail()
    app = web.Application()
    app.router.add_post("/", fake._lookup)
    async with serving(app) as url:
        fake.url = url
        yield fake


class FakeDirectory:
    """Identity Center's names for tests.fakes.FakeCloud's ids (the sso-admin and identitystore
    calls the activity reader makes): user u-alice-<salt> is alice@example.com, permission set
    .../ps-PowerUserAccess is PowerUserAccess."""

    def describe_user(self, IdentityStoreId: str, UserId: str) -> dict[str, Any]:
        return {"UserName": f"{UserId.split('-')[1]}@example.com"}

    def describe_permission_set(self, InstanceArn: str, PermissionSetArn: str) -> dict[str, Any]:
        return {"PermissionSet": {"Name": PermissionSetArn.rsplit("/ps-", 1)[1]}}
