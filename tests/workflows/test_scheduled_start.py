"""A scheduled start on the time-skipping server: the approval is recorded at once, nothing is
granted before start_at, the access begins then and lasts its full duration; until then the
request may be cancelled (by an approver too), not revoked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keycard.models import Actor, RequestState
from keycard.policy import DecisionRefused, RequestInvalid
from tests.harness import BOB, ask, running_stack
from tests.polling import eventually

CAROL = Actor(email="carol@example.com")


async def _now(env) -> datetime:
    return await env.get_current_time()


async def test_access_begins_at_start_at_and_not_before(time_env):
    async with running_stack(time_env.client) as stack:
        start_at = (await _now(time_env)).astimezone(UTC) + timedelta(hours=3)
        view = await ask(stack, start_at=start_at)
        assert view.start_at == start_at
        approved = await stack.keycard.approve(view.id, BOB)
        assert approved.approvals[0].actor.email == "bob@example.com"  # recorded at once
        scheduled = await eventually(lambda: _in(stack, view.id, RequestState.SCHEDULED))
        assert scheduled.decided_at is not None and scheduled.granted_at is None
        [event] = await eventually(lambda: _events(stack, view.id, "access.scheduled"))
        recorded = event.detail["start_at"]
        if isinstance(recorded, str):  # as it came through the audit's JSON
            recorded = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
        assert recorded == start_at

        await time_env.sleep(timedelta(hours=2, minutes=59))
        assert not stack.cloud.has("alice@example.com")
        assert (await stack.keycard.get(view.id)).state is RequestState.SCHEDULED
        with pytest.raises(DecisionRefused) as early:
            await stack.keycard.revoke(view.id, BOB)
        assert early.value.message == (
            f"request {view.id} is SCHEDULED: its access has not begun; cancel it instead"
        )

        await time_env.sleep(timedelta(minutes=2))
        active = await eventually(lambda: _in(stack, view.id, RequestState.ACTIVE))
        assert stack.cloud.has("alice@example.com")
        assert active.granted_at >= start_at
        assert active.expires_at - active.granted_at == timedelta(hours=1)  # the whole hour
        await stack.keycard.revoke(view.id, BOB)


async def test_an_approver_may_withdraw_access_that_has_not_begun(time_env):
    async with running_stack(time_env.client) as stack:
        start_at = (await _now(time_env)).astimezone(UTC) + timedelta(days=1)
        view = await ask(stack, start_at=start_at)
        await stack.keycard.approve(view.id, BOB)
        await eventually(lambda: _in(stack, view.id, RequestState.SCHEDULED))
        cancelled = await stack.keycard.cancel(view.id, CAROL, "change freeze")
        assert cancelled.state is RequestState.CANCELLED
        await time_env.sleep(timedelta(days=2))
        assert not stack.cloud.has("alice@example.com")
        assert [c for c in stack.cloud.calls if c[0] != "resolve"] == []  # nothing was granted
        assert stack.audit.types(view.id)[-2:] == ["access.scheduled", "request.cancelled"]


async def test_a_start_at_the_flow_does_not_allow_is_refused_before_anything_starts(time_env):
    async with running_stack(time_env.client) as stack:
        now = datetime.now(UTC)
        with pytest.raises(RequestInvalid) as far:
            await ask(stack, start_at=now + timedelta(days=8))
        assert far.value.code == "StartTooFar"
        assert "more than 7d ahead, flow prod-power-user's max_start_delay" in far.value.message
        with pytest.raises(RequestInvalid) as past:
            await ask(stack, start_at=now - timedelta(hours=1))
        assert past.value.code == "StartInPast"
        assert stack.cloud.calls == []


async def _in(stack, request_id: str, state: RequestState):
    view = await stack.keycard.get(request_id)
    return view if view.state is state else None


async def _events(stack, request_id: str, type: str):
    return stack.audit.of(request_id, type) or None
