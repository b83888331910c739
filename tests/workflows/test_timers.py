"""Timer paths on the time-skipping server: approval timeout, expiry, extension, leases, retries."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import RetryPolicy

from keycard import temporal as names
from keycard.models import Actor, GrantView, RequestState, RequestView
from tests.fakes import FakeCloud, terminate_when_idle
from tests.harness import BOB, ask, running_stack
from tests.polling import eventually

ALICE_ACTOR = Actor(email="alice@example.com")


async def start(stack, duration="1h", **overrides):
    return await ask(stack, duration=duration, **overrides)


async def approved(stack, duration="1h", **overrides) -> RequestView:
    view = await start(stack, duration, **overrides)
    await stack.keycard.approve(view.id, BOB)
    return view


async def closed(env, workflow_id: str, result_type=None, step=timedelta(minutes=1)):
    """Advance the test server's clock a step at a time until the workflow closes (bounded)."""
    handle = env.client.get_workflow_handle(workflow_id, result_type=result_type)
    for _ in range(24 * 60):
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return await handle.result()
        await env.sleep(step)
    raise AssertionError(f"{workflow_id} still running after a simulated day")


async def outcome(env, request_id: str, step=timedelta(minutes=1)) -> RequestView:
    return await closed(env, request_id, RequestView, step)


async def grant_view(env, stack) -> GrantView:
    grant_id = f"grant:aws_sso:111111111111:ps-PowerUserAccess:u-alice-{stack.cloud.salt}"
    return await env.client.get_workflow_handle(grant_id).query("status", result_type=GrantView)


async def test_no_decision_in_time_expires_the_request(time_env):
    async with running_stack(time_env.client) as stack:
        view = await start(stack)
        final = await outcome(time_env, view.id)  # waiting on the result skips time
        assert final.state is RequestState.EXPIRED
        assert final.end_reason == "no decision within 1h"
        assert final.ended_at - final.requested_at >= timedelta(hours=1)
        assert stack.cloud.calls == [("resolve", "alice@example.com")]
        assert stack.audit.types(view.id) == [
            "request.created",
            "request.pending",
            "request.expired",
        ]


async def test_access_ends_exactly_when_the_duration_is_up(time_env):
    async with running_stack(time_env.client) as stack:
        view = await approved(stack, duration="1m")
        final = await outcome(time_env, view.id)
        assert final.state is RequestState.ENDED
        assert final.end_reason == "expired"
        assert final.expires_at - final.granted_at == timedelta(minutes=1)
        assert final.ended_at >= final.expires_at
        assert not stack.cloud.has("alice@example.com")
        assert [c for c in stack.cloud.calls if c[0] != "end_sessions"][-1] == (
            "revoke",
            "alice@example.com",
        )
        assert stack.audit.types(view.id) == [
            "request.created",
            "request.pending",
            "request.approved",
            "access.granted",
            "access.ended",
            "access.sessions_ended",
        ]


async def test_extension_moves_the_expiry(time_env):
    async with running_stack(time_env.client) as stack:
        view = await approved(stack, duration="1h")
        await time_env.sleep(timedelta(minutes=30))
        extended = await stack.keycard.extend(view.id, ALICE_ACTOR, "2h")
        assert extended.expires_at - extended.granted_at == timedelta(hours=3)
        await time_env.sleep(timedelta(hours=2))  # past the original expiry
        assert stack.cloud.has("alice@example.com")
        final = await outcome(time_env, view.id)
        assert final.ended_at >= extended.expires_at
        assert not stack.cloud.has("alice@example.com")
        assert "access.extended" in stack.audit.types(view.id)


async def test_overlapping_requests_share_the_assignment_until_the_last_lease(time_env):
    async with running_stack(time_env.client) as stack:
        first = await approved(stack, duration="1h")
        second = await approved(stack, duration="2h")
        await time_env.sleep(timedelta(minutes=5))
        assert (await grant_view(time_env, stack)).leases.keys() == {first.id, second.id}

        ended_first = await outcome(time_env, first.id)
        assert ended_first.state is RequestState.ENDED
        assert stack.cloud.has("alice@example.com"), "B's lease still holds the access"
        assert [c for c in stack.cloud.calls if c[0] == "grant"] == [("grant", "alice@example.com")]

        ended_second = await outcome(time_env, second.id)
        assert ended_second.state is RequestState.ENDED
        assert not stack.cloud.has("alice@example.com")
        assert [c[0] for c in stack.cloud.calls].count("revoke") == 1


async def test_revoking_one_request_early_keeps_the_others_access(time_env):
    async with running_stack(time_env.client) as stack:
        first = await approved(stack, duration="1h")
        second = await approved(stack, duration="2h")
        await time_env.sleep(timedelta(minutes=1))
        await stack.keycard.revoke(first.id, ALICE_ACTOR, "done")
        revoked = await outcome(time_env, first.id)
        assert revoked.end_reason == "revoked early by alice@example.com"
        assert stack.cloud.has("alice@example.com")
        assert (await grant_view(time_env, stack)).leases.keys() == {second.id}
        await outcome(time_env, second.id)
        assert not stack.cloud.has("alice@example.com")


async def test_standing_access_is_never_removed(time_env):
    cloud = FakeCloud()
    async with running_stack(time_env.client, cloud=cloud) as stack:
        cloud.give("alice@example.com", ps="PowerUserAccess")
        view = await approved(stack, duration="1m")
        final = await outcome(time_env, view.id)
        assert final.state is RequestState.ENDED
        assert final.standing_access is True
        assert cloud.has("alice@example.com"), "access she had before Keycard stays"
        assert not any(call[0] in ("grant", "revoke") for call in cloud.calls)
        ended = next(e for e in stack.audit.events if e.type == "access.ended")
        assert ended.detail == {"removed": False, "standing": True, "other_leases": 0}


async def test_revocation_retries_until_it_succeeds_and_says_so(time_env, monkeypatch):
    # The test server cannot skip time while an activity is in flight, so the retry pacing is
    # shortened here; the logic under test is unchanged. RELEASE_WAIT stays as it is: the grant
    # answers every round by signal, and a shortened wait only races its own timer (which the
    # time-skipping server cannot take: "invalid history builder state for action").
    monkeypatch.setattr(
        names,
        "REVOKE_ROUND_RETRY",
        RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=5),
    )
    monkeypatch.setattr(names, "REVOKE_ROUND_PAUSE_MIN", timedelta(milliseconds=100))
    monkeypatch.setattr(names, "REVOKE_ROUND_PAUSE_MAX", timedelta(seconds=1))
    # Six failed rounds: their pauses outlast a release's (shortened) wait.
    cloud = FakeCloud(revoke_failures_left=30)
    async with running_stack(time_env.client, cloud=cloud) as stack:
        view = await approved(stack, duration="1m")
        final = await outcome(time_env, view.id, step=timedelta(seconds=1))
        assert final.state is RequestState.ENDED
        assert not cloud.has("alice@example.com")
        assert [c[0] for c in cloud.calls].count("revoke") == 31
        retrying = [e for e in stack.audit.events if e.type == "access.revoke_retrying"]
        assert retrying, "people must hear that removal keeps failing"
        assert "Rate exceeded" in retrying[0].detail["error"]
        assert retrying[0].detail["failures"] >= 1
        assert final.state is RequestState.ENDED
        assert stack.audit.types(view.id)[-2:] == ["access.ended", "access.sessions_ended"]


async def test_a_terminated_request_does_not_leave_access_behind(time_env):
    """A terminated request cannot return its lease: the grant drops it once its end has passed,
    within a minute of it, and never before it."""
    async with running_stack(time_env.client) as stack:
        view = await approved(stack, duration="1h")
        await time_env.sleep(timedelta(minutes=1))
        assert stack.cloud.has("alice@example.com")
        await terminate_when_idle(time_env.client.get_workflow_handle(view.id), "operator mistake")
        await time_env.sleep(timedelta(minutes=58))
        assert stack.cloud.has("alice@example.com")  # still within the approved hour
        await time_env.sleep(timedelta(minutes=2))  # a minute past the lease's end

        async def removed():
            return not stack.cloud.has("alice@example.com")

        await eventually(removed, timeout=10)
        dropped = await stack.audit.wait_for(view.id, "access.ended", timeout=10)
        assert dropped.id == f"{view.id}/lease-dropped"
        assert dropped.state is RequestState.ENDED
        assert "was not returned" in dropped.detail["reason"]
