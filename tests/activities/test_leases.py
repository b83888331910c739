"""leases.grant: once the access exists, telling the requests never fails the activity."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from unittest import mock

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.leases import GrantActivities
from keycard import temporal as names
from keycard.models import AssignmentSpec, GrantAndTell, ResolvedAssignment, WaitingLease

ASSIGNMENT = ResolvedAssignment(
    spec=AssignmentSpec(
        strategy="aws_sso",
        principal_email="alice@example.com",
        account_id="111111111111",
        permission_set="PowerUserAccess",
    ),
    principal_id="u-alice",
    instance_arn="arn:aws:sso:::instance/ssoins-1",
    permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
)


class Requests:
    """A Temporal client whose signals fail as each request id says."""

    def __init__(self) -> None:
        self.signalled: dict[str, object] = {}

    def get_workflow_handle(self, request_id: str):
        requests = self

        class Handle:
            async def signal(self, name: str, message) -> None:
                assert name == names.LEASE_GRANTED
                if request_id == "gone":
                    raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
                if request_id == "flaky":
                    raise RPCError("unavailable", RPCStatusCode.UNAVAILABLE, b"")
                if request_id == "odd":
                    raise RuntimeError("something else")
                if request_id == "hung":
                    await asyncio.sleep(3600)
                requests.signalled[request_id] = message

        return Handle()


def lease(request_id: str, **overrides) -> WaitingLease:
    return WaitingLease(request_id=request_id, duration=timedelta(hours=1), **overrides)


async def test_each_request_is_told_once_the_access_exists_and_failures_are_reported() -> None:
    made: list[ResolvedAssignment] = []

    async def grant(assignment: ResolvedAssignment) -> None:
        made.append(assignment)

    requests = Requests()
    activities = GrantActivities(requests, {"aws_sso.grant": grant})  # type: ignore[arg-type]
    renewed_to = datetime(2030, 1, 1, tzinfo=UTC)
    waiting = [lease("ok"), lease("renewed", expires_at=renewed_to), lease("gone")]
    waiting += [lease("flaky"), lease("odd"), lease("hung")]

    with mock.patch.object(names, "TELL_TIMEOUT", timedelta(milliseconds=50)):
        told = await ActivityEnvironment().run(
            activities.grant_and_tell, GrantAndTell(assignment=ASSIGNMENT, waiting=waiting)
        )

    assert made == [ASSIGNMENT]
    assert told.told == ["ok", "renewed"]
    assert told.unreachable == ["gone"]  # the grant drops it; it tells "flaky", "odd" and "hung"
    assert requests.signalled["ok"].granted_at == told.granted_at
    assert requests.signalled["ok"].expires_at == told.granted_at + timedelta(hours=1)
    assert requests.signalled["renewed"].expires_at == renewed_to


async def test_the_moment_is_never_before_the_attempt_began_by_temporal_clock() -> None:
    async def grant(assignment: ResolvedAssignment) -> None:
        return None

    env = ActivityEnvironment()
    ahead = datetime.now(UTC) + timedelta(minutes=5)  # a worker clock running behind Temporal's
    env.info = dataclasses.replace(env.info, started_time=ahead)
    activities = GrantActivities(Requests(), {"aws_sso.grant": grant})  # type: ignore[arg-type]

    told = await env.run(activities.grant_and_tell, GrantAndTell(assignment=ASSIGNMENT))

    assert told.granted_at == ahead


async def test_a_failed_grant_tells_no_one() -> None:
    async def grant(assignment: ResolvedAssignment) -> None:
        raise ApplicationError("no such permission set", type="NoSuchPermissionSet")

    requests = Requests()
    activities = GrantActivities(requests, {"aws_sso.grant": grant})  # type: ignore[arg-type]

    with pytest.raises(ApplicationError, match="no such permission set"):
        await ActivityEnvironment().run(
            activities.grant_and_tell, GrantAndTell(assignment=ASSIGNMENT, waiting=[lease("ok")])
        )
    assert requests.signalled == {}
