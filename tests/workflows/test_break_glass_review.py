"""The review of a break-glass use: an approver says, afterwards, whether the emergency was real
(`keycard review`); the request waits for it after its access ends, until the flow's window
closes (`break_glass.review_overdue`). On the time-skipping server."""

from __future__ import annotations

from datetime import timedelta

import pytest
from temporalio.client import WorkflowExecutionStatus

from keycard.config import parse_config
from keycard.models import Actor, RequestState, ReviewInput
from keycard.policy import DecisionRefused
from tests.harness import BOB, CAROL, CONFIG, ask, running_stack, state_is
from tests.workflows.test_timers import outcome

ALICE_ACTOR = Actor(email="alice@example.com")
BREAK_GLASS = CONFIG.replace(
    "    allow_extension: true",
    "    allow_extension: true\n    break_glass: true\n    break_glass_review_within: 1d",
)


async def used(stack, duration="1h"):
    view = await ask(stack, duration=duration)
    await stack.keycard.break_glass(view.id, ALICE_ACTOR, "the primary is down, nobody answers")
    return await state_is(stack, view.id, RequestState.ACTIVE)


async def test_a_review_while_the_access_lasts_lets_the_request_close_at_its_end(time_env):
    async with running_stack(time_env.client, parse_config(BREAK_GLASS)) as stack:
        view = await used(stack)
        reviewed = await stack.keycard.review(view.id, BOB, "justified", "INC-4312, primary down")
        assert reviewed.review is not None and reviewed.review.by.email == "bob@example.com"
        assert reviewed.review.finding == "justified"
        final = await outcome(time_env, view.id)
        assert final.state is RequestState.ENDED and final.ended_at is not None
        assert final.ended_at - final.granted_at < timedelta(hours=1, minutes=2)
        event = await stack.audit.wait_for(view.id, "break_glass.reviewed")
        assert event.actor is not None and event.actor.email == BOB.email
        assert event.detail == {"finding": "justified", "comment": "INC-4312, primary down"}
        assert "break_glass.review_overdue" not in stack.audit.types(view.id)


async def test_the_request_waits_for_its_review_after_the_access_ends(time_env):
    async with running_stack(time_env.client, parse_config(BREAK_GLASS)) as stack:
        view = await used(stack)
        await time_env.sleep(timedelta(hours=2))
        waiting = await stack.keycard.get(view.id)
        assert waiting.state is RequestState.ENDED and waiting.review is None
        assert waiting.review_due == waiting.decided_at + timedelta(days=1)
        handle = time_env.client.get_workflow_handle(view.id)
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        reviewed = await stack.keycard.review(view.id, CAROL, "unjustified", "a restart would do")
        assert reviewed.review is not None and reviewed.review.finding == "unjustified"
        final = await outcome(time_env, view.id)
        assert final.review == reviewed.review
        assert stack.audit.types(view.id)[-1] == "break_glass.reviewed"


async def test_an_unreviewed_use_is_audited_when_the_window_closes(time_env):
    async with running_stack(time_env.client, parse_config(BREAK_GLASS)) as stack:
        view = await used(stack)
        final = await outcome(time_env, view.id, step=timedelta(hours=1))
        assert final.review is None
        overdue = await stack.audit.wait_for(view.id, "break_glass.review_overdue")
        assert overdue.detail["reason"] == "not reviewed within 1d"
        assert overdue.time >= final.decided_at + timedelta(days=1)
        with pytest.raises(DecisionRefused) as closed:
            await stack.keycard.review(view.id, BOB)
        assert closed.value.code == "ReviewClosed"


@pytest.mark.parametrize(
    ("who", "finding", "comment", "code"),
    [
        (ALICE_ACTOR, "justified", "", "SelfReview"),
        (Actor(email="mallory@example.com"), "justified", "", "NotAnApprover"),
        (BOB, "unjustified", "", "ReviewNeedsComment"),
    ],
)
async def test_who_may_review_and_what_a_finding_needs(time_env, who, finding, comment, code):
    async with running_stack(time_env.client, parse_config(BREAK_GLASS)) as stack:
        view = await used(stack)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.review(view.id, who, finding, comment)
        assert refused.value.code == code
        refusal = await stack.audit.wait_for(view.id, "decision.refused")
        assert refusal.detail["decision"] == "review" and refusal.detail["code"] == code
        await stack.keycard.review(view.id, BOB)
        with pytest.raises(DecisionRefused) as again:
            await stack.keycard.review(view.id, CAROL)
        assert again.value.code == "AlreadyReviewed"
        await stack.keycard.revoke(view.id, BOB)
        await outcome(time_env, view.id)


async def test_only_break_glass_is_reviewed_and_a_signal_is_recorded_as_one(time_env):
    async with running_stack(time_env.client, parse_config(BREAK_GLASS)) as stack:
        plain = await ask(stack)
        await stack.keycard.approve(plain.id, BOB)
        await state_is(stack, plain.id, RequestState.ACTIVE)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.review(plain.id, CAROL)
        assert refused.value.code == "NotBreakGlass"
        await stack.keycard.revoke(plain.id, BOB)
        final = await outcome(time_env, plain.id)
        assert final.review_due is None  # nothing to wait for: it closed at its end

        view = await used(stack)
        handle = time_env.client.get_workflow_handle(view.id)
        await handle.signal("review", ReviewInput(actor=CAROL, comment="seen"))
        event = await stack.audit.wait_for(view.id, "break_glass.reviewed")
        assert event.actor is not None and event.actor.via == "signal"
        await stack.keycard.revoke(view.id, BOB)
        await outcome(time_env, view.id)


def test_a_review_window_needs_break_glass():
    from keycard.config import ConfigError

    text = CONFIG.replace(
        "    allow_extension: true", "    allow_extension: true\n    break_glass_review_within: 3d"
    )
    with pytest.raises(ConfigError, match="does not allow break-glass: set break_glass: true"):
        parse_config(text)
