"""`leases.grant` (PATCH_V9): the activity that makes the access tells the waiting requests itself,
and the grant records the same lease ends; each way telling can go wrong (dev server)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError

from activities.leases import GrantActivities
from activities.notify import ConsoleNotifier
from keycard import temporal as names
from keycard.models import Actor, GrantAndTell, GrantTold, GrantView, RequestState
from tests.fakes import FakeCloud
from tests.harness import BOB, ask, running_stack, state_is
from tests.polling import eventually


def grant_id(cloud: FakeCloud, email: str = "alice@example.com") -> str:
    principal = f"u-{email.split('@')[0]}-{cloud.salt}"
    return f"grant:aws_sso:111111111111:ps-PowerUserAccess:{principal}"


async def grant_view(stack) -> GrantView:
    handle = stack.client.get_workflow_handle(grant_id(stack.cloud))
    return await handle.query(names.REQUEST_STATUS, result_type=GrantView)


async def signals_sent(stack, workflow_id: str) -> list[str]:
    handle = stack.client.get_workflow_handle(workflow_id)
    return [
        event.signal_external_workflow_execution_initiated_event_attributes.signal_name
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_SIGNAL_EXTERNAL_WORKFLOW_EXECUTION_INITIATED
    ]


def cloud_grant(cloud: FakeCloud):
    return next(a for a in cloud.activities("aws_sso") if a.__name__ == "grant")


def gated_grant_and_tell(client, cloud: FakeCloud, gate: asyncio.Event, started: asyncio.Event):
    """The real leases.grant, which then waits for `gate` before it returns to the grant."""
    real = GrantActivities(client, {"aws_sso.grant": cloud_grant(cloud)})

    @activity.defn(name=names.GRANT_AND_TELL)
    async def grant_and_tell(input: GrantAndTell) -> GrantTold:
        started.set()
        await gate.wait()
        return await real.grant_and_tell(input)

    return grant_and_tell


async def test_the_activity_that_makes_the_access_tells_the_request(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        active = await state_is(stack, view.id, RequestState.ACTIVE)

        assert stack.cloud.has("alice@example.com")
        grant = await grant_view(stack)
        # One moment, carried by the activity's result and its signal: the ends agree exactly.
        assert grant.leases == {view.id: active.expires_at}
        assert grant.assigned_at == active.granted_at
        assert await signals_sent(stack, grant_id(stack.cloud)) == []  # the grant told no one

        await stack.keycard.revoke(view.id, BOB)
        await state_is(stack, view.id, RequestState.ENDED)
        assert not stack.cloud.has("alice@example.com")


async def test_a_request_the_activity_could_not_tell_is_told_by_the_grant(dev_env):
    cloud = FakeCloud()
    grant = cloud_grant(cloud)

    @activity.defn(name=names.GRANT_AND_TELL)
    async def grant_but_tell_no_one(input: GrantAndTell) -> GrantTold:
        await grant(input.assignment)
        return GrantTold(granted_at=datetime.now(UTC))  # every signal failed, say

    extra = [ConsoleNotifier().send, grant_but_tell_no_one]
    async with running_stack(dev_env.client, cloud=cloud, extra_activities=extra) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        active = await state_is(stack, view.id, RequestState.ACTIVE)

        assert await signals_sent(stack, grant_id(cloud)) == [names.LEASE_GRANTED]
        assert (await grant_view(stack)).leases == {view.id: active.expires_at}


async def test_a_lease_whose_request_is_gone_is_dropped_and_its_access_removed(dev_env):
    cloud = FakeCloud()
    gate, started = asyncio.Event(), asyncio.Event()
    extra = [ConsoleNotifier().send, gated_grant_and_tell(dev_env.client, cloud, gate, started)]
    async with running_stack(dev_env.client, cloud=cloud, extra_activities=extra) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        await asyncio.wait_for(started.wait(), timeout=30)
        await stack.client.get_workflow_handle(view.id).terminate("gone before its grant")
        gate.set()  # the activity makes the access, and finds no request to tell

        async def removed():
            grant = await grant_view(stack)
            return not grant.leases and not grant.assigned and not cloud.has("alice@example.com")

        await eventually(removed)
        assert ("grant", "alice@example.com") in cloud.calls
        assert ("revoke", "alice@example.com") in cloud.calls


async def test_a_grant_that_fails_after_making_the_access_removes_it(dev_env):
    cloud = FakeCloud()
    grant = cloud_grant(cloud)

    @activity.defn(name=names.GRANT_AND_TELL)
    async def made_then_failed(input: GrantAndTell) -> GrantTold:
        await grant(input.assignment)
        raise ApplicationError("lost after the change", type="InvalidTarget", non_retryable=True)

    extra = [ConsoleNotifier().send, made_then_failed]
    async with running_stack(dev_env.client, cloud=cloud, extra_activities=extra) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        failed = await state_is(stack, view.id, RequestState.FAILED)

        assert "lost after the change" in (failed.end_reason or "")

        async def removed():
            return not cloud.has("alice@example.com")

        await eventually(removed)
        assert cloud.calls[-1] == ("revoke", "alice@example.com")


async def test_an_extension_before_the_grant_has_recorded_the_lease_keeps_its_new_end(dev_env):
    cloud = FakeCloud()
    gate, started = asyncio.Event(), asyncio.Event()
    real = GrantActivities(dev_env.client, {"aws_sso.grant": cloud_grant(cloud)})

    @activity.defn(name=names.GRANT_AND_TELL)
    async def told_then_slow(input: GrantAndTell) -> GrantTold:
        told = await real.grant_and_tell(input)  # the request hears now...
        started.set()
        await gate.wait()  # ...the grant only once the test lets the activity return
        return told

    extra = [ConsoleNotifier().send, told_then_slow]
    async with running_stack(dev_env.client, cloud=cloud, extra_activities=extra) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        await asyncio.wait_for(started.wait(), timeout=30)
        await state_is(stack, view.id, RequestState.ACTIVE)
        extended = await stack.keycard.extend(view.id, Actor(email="alice@example.com"), "30m")

        async def renewal_waits():
            waiting = (await grant_view(stack)).waiting.get(view.id)
            return waiting is not None and waiting.expires_at == extended.expires_at

        await eventually(renewal_waits)
        gate.set()

        async def recorded():
            return (await grant_view(stack)).leases.get(view.id) == extended.expires_at

        await eventually(recorded)
        assert stack.cloud.has("alice@example.com")
