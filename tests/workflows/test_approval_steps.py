"""Approval steps on the real workflow (time-skipping server): an AND of groups met in either
order, one person counting in one step at most, and a request whose steps the requester's own
exclusion makes impossible refused at once."""

from __future__ import annotations

import pytest
from temporalio import activity

from activities.notify import ConsoleNotifier
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import Actor, RequestState, SlackApproversInput, SlackApproversResult
from keycard.policy import DecisionRefused
from starter.client import RequestRejected
from tests.harness import ALICE, BOB, CAROL, CONFIG, ask, running_stack
from tests.polling import eventually

STEPS = (
    CONFIG
    + """
  - name: admin
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: AdministratorAccess}
    durations: [1h]
    reason_required: false
    approval_steps:
      - {name: sre, approvers: {groups: [sre-leads]}}
      - {name: security, approvers: {users: [security@example.com, carol@example.com]}}
"""
).replace(
    "sre-leads: [bob@example.com, carol@example.com]",
    "sre-leads: [bob@example.com, carol@example.com, dave@example.com]",
)
SECURITY = Actor(email="security@example.com")
DAVE = Actor(email="dave@example.com")


@pytest.mark.parametrize(
    "order", [(CAROL, BOB), (BOB, SECURITY)], ids=["carol-moves-to-security", "sre-first"]
)
async def test_both_steps_in_either_order_and_each_person_once(time_env, order):
    async with running_stack(time_env.client, parse_config(STEPS)) as stack:
        view = await ask(stack, flow="admin", reason="")
        assert [s.name for s in view.approval_steps] == ["sre", "security"]
        first, second = order
        half = await stack.keycard.approve(view.id, first)
        assert half.state is RequestState.PENDING
        assert [len(s.approved_by) for s in half.approval_steps] in ([1, 0], [0, 1])

        with pytest.raises(DecisionRefused) as twice:
            await stack.keycard.approve(view.id, first)
        assert twice.value.code == "AlreadyApproved"
        if first == BOB:  # sre is met by bob: another sre lead counts nowhere
            with pytest.raises(DecisionRefused) as spare:
                await stack.keycard.approve(view.id, DAVE)
            assert spare.value.code == "StepAlreadyMet"
            assert "still needed: step security: 1 more, from security@example.com" in (
                spare.value.message
            )

        done = await stack.keycard.approve(view.id, second)
        assert done.state in (RequestState.GRANTING, RequestState.ACTIVE)
        by_step = {s.name: s.approved_by for s in done.approval_steps}
        if first == CAROL:  # carol counted in sre, then moved to security to make room for bob
            assert by_step == {"sre": ["bob@example.com"], "security": ["carol@example.com"]}
        else:
            assert by_step == {"sre": ["bob@example.com"], "security": ["security@example.com"]}
        await eventually(lambda: _has(stack, view.id, "access.granted"))
        approved = stack.audit.of(view.id, "request.approved")
        assert [e.detail["approval_steps"][0]["count"] for e in approved] == [1, 1]
        assert approved[-1].detail["approval_steps"][1]["approved_by"] == by_step["security"]
        refused = stack.audit.of(view.id, "decision.refused")
        assert [e.detail["code"] for e in refused] == (
            ["AlreadyApproved", "StepAlreadyMet"] if first == BOB else ["AlreadyApproved"]
        )
        await stack.keycard.revoke(view.id, BOB)


async def _has(stack, request_id: str, type: str) -> bool:
    return type in stack.audit.types(request_id)


SLACK_STEP = STEPS.replace(
    "{name: security, approvers: {users: [security@example.com, carol@example.com]}}",
    "{name: security, approvers: {slack_groups: [security]}}",
)


async def test_a_request_only_its_requester_could_complete_is_refused_at_once(time_env):
    @activity.defn(name=names.RESOLVE_SLACK_APPROVERS)
    async def resolve(input: SlackApproversInput) -> SlackApproversResult:
        return SlackApproversResult(emails=["alice@example.com"])  # the requester alone

    async with running_stack(
        time_env.client,
        parse_config(SLACK_STEP),
        extra_activities=[ConsoleNotifier().send, resolve],
    ) as stack:
        with pytest.raises(RequestRejected) as refused:
            await ask(stack, flow="admin", reason="", request_id="req-unmeetable")
        assert refused.value.code == "ApprovalUnmeetable"
        assert refused.value.message == (
            "this request can never be approved: alice@example.com may not approve their own "
            "request, and step security needs 1 approver besides them, of whom only 0 can count "
            "(nobody else is named); ask an owner of the flow to name another approver"
        )
        view = await stack.keycard.get("req-unmeetable")
        assert view.state is RequestState.FAILED
        await eventually(lambda: _has(stack, view.id, "access.grant_failed"))
        [failed] = stack.audit.of(view.id, "access.grant_failed")
        assert failed.detail["stage"] == "approvers"
        assert "request.pending" not in stack.audit.types(view.id)
        assert stack.cloud.calls == [("resolve", "alice@example.com")]  # nothing granted

        # someone else asking is fine: alice can approve the security step for them
        other = await ask(
            stack,
            flow="admin",
            reason="",
            requester=ALICE.model_copy(update={"email": "dave@example.com"}),
        )
        assert other.state is RequestState.PENDING
        await stack.keycard.cancel(other.id, DAVE)
