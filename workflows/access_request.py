"""AccessRequestWorkflow: one access request, from asking to access gone."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.request.afterwards import Afterwards
from workflows.request.deciding import update_error
from workflows.request.record import requester_actor, target_status
from workflows.waiting import run_through_cancel, wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import policy
    from keycard import temporal as names
    from keycard.config import Flow
    from keycard.durations import format_duration
    from keycard.models import (
        AccessRequestInput,
        AccessRequestState,
        Actor,
        ApproveInput,
        CancelInput,
        DenyInput,
        ExtendInput,
        LeaseFailed,
        LeaseGranted,
        RefusedInput,
        ReleaseResult,
        RequestState,
        RequestView,
        ReviewInput,
        RevokeInput,
    )


@workflow.defn(name=names.ACCESS_REQUEST_WORKFLOW)
class AccessRequestWorkflow(Afterwards):
    """One request: PENDING → GRANTING → ACTIVE → REVOKING → ENDED (or DENIED, EXPIRED, CANCELLED,
    FAILED).

    Updates (each with a validator that refuses with a reason and leaves no trace in history):
    `approve` ApproveInput, `deny` DenyInput, `cancel` CancelInput, `revoke` RevokeInput,
    `extend` ExtendInput, `review` ReviewInput (of a break-glass use, afterwards) — each returns
    the RequestView after the decision — and `submitted`
    (no input), which returns once the request has been checked against AWS, or fails saying why.
    Signals with the same names carry the same decisions for tools that can only signal (recorded
    `via: signal`); a signal the rules refuse is recorded as `decision.refused` and otherwise
    ignored. Signal `refused` (RefusedInput) is how a front door reports an update its validator
    turned down, so that attempt is audited too: as the signal's report, naming the person under
    `attempted_by` (anyone with Temporal access could send one).
    Hooks (flows with `hooks:` or `auto_approve:`): after the AWS check, one activity lets
    on_request, the auto_approve rules and get_approvers decide or route the request; an approval
    (break-glass included) first asks on_approve, whose veto fails the update and is audited as
    `decision.refused`; after_* observers get every event from a delivery loop of their own.
    Every hook fails closed: a failure decides nothing and is recorded as `hook.failed`.
    Query: `status` → RequestView.
    """

    @workflow.init
    def __init__(self, input: AccessRequestInput) -> None:
        now = workflow.now()
        # First, before any command: one marker stands for every patch before it
        # (keycard/temporal.py, PATCH_V6 to PATCH_V13), and decides how request.created is recorded.
        self._v13 = workflow.patched(names.PATCH_V13)
        self._v10 = self._v13 or workflow.patched(names.PATCH_V10)
        self._v8 = self._v10 or workflow.patched(names.PATCH_V8)
        self._v7 = self._v8 or workflow.patched(names.PATCH_V7)
        self._v6 = self._v7 or workflow.patched(names.PATCH_V6)
        # Only a request naming several targets takes the v11 path: one lease per target.
        self._multi = len(input.targets) > 1 and workflow.patched(names.PATCH_V11)
        self._round_in_flight = False
        self._s = AccessRequestState(
            input=input,
            view=RequestView(
                id=input.request_id,
                state=RequestState.PENDING,
                requester=input.requester,
                submitted_by=input.submitted_by,
                flow=input.flow.name,
                flow_label=input.flow.display,
                strategy=input.flow.strategy,
                target=input.target.name,
                target_label=input.target.display,
                target_settings=policy.target_settings(input.target),
                targets=[target_status(t) for t in input.targets] if self._multi else [],
                duration=input.duration,
                start_at=input.start_at,
                reason=input.reason,
                ticket=policy.find_ticket(input.flow, input.reason),
                fields=input.fields,
                approvals_required=input.flow.approvals_needed,
                approvers=policy.approvers_of(input.flow, input.approver_groups),
                approval_steps=policy.steps_of(input.flow, input.approver_groups),
                requested_at=now,
                policy=input.policy,
            ),
        )
        # Here, not in `run`: a decision signalled with the start is handled before `run` begins,
        # and the trail must still open with the request.
        ticket = self._s.view.ticket
        created: dict[str, Any] = {
            "approvers": self._s.view.approvers,
            "approvals_required": self._s.view.approvals_required,
            "approval_timeout": format_duration(input.flow.approval_timeout),
        }
        if ticket is not None:
            created["ticket"] = ticket.model_dump(mode="json")
        created.update(self._steps_detail())
        if self._multi:
            created["targets"] = [t.name for t in input.targets]
        if input.policy is not None:  # which policy decides it: the flow's digest and commit
            created["policy"] = input.policy.model_dump(mode="json")
        self._emit("request.created", input.submitted_by or requester_actor(input), **created)
        # Updates wait for the work already in hand (workflows/runner.py); requests started
        # before keep the SDK's order, which their histories recorded.
        self.keycard_updates_last = self._patched(names.PATCH_UPDATES_LAST)

    @workflow.run
    async def run(self, input: AccessRequestInput) -> RequestView:
        # Created first, so it takes its first step (the AWS check) before delivery starts: the
        # order every recorded history has.
        lifecycle = asyncio.create_task(self._lifecycle())
        if self._v6:
            lanes = [*self._s.input.audit_destinations, names.NOTIFY_LANE]
            delivery = [asyncio.create_task(self._deliver_in_rounds())]
            delivery += [asyncio.create_task(self._catch_up(lane)) for lane in lanes]
        else:
            delivery = [
                asyncio.create_task(self._deliver_audit()),
                asyncio.create_task(self._deliver_notifications()),
            ]
        if self._flow.hooks:
            delivery.append(asyncio.create_task(self._deliver_to_observers()))
        self._publish()

        # A cancel request from Temporal (the UI's "Request Cancellation", `temporal workflow
        # cancel`) is a decision like any other: it never interrupts a grant or a removal
        # half-way, and the request still ends in a true state with its access gone.
        await run_through_cancel(lifecycle, self._cancelled_through_temporal)

        # One condition, so an event a late handler adds is delivered before the workflow closes.
        await wait_until(lambda: workflow.all_handlers_finished() and self._delivered())
        for task in delivery:
            task.cancel()
        return self._s.view

    async def _lifecycle(self) -> None:
        # A decision can arrive with the start (a cancel signalled at once): then there is
        # nothing to check.
        if not self._state.finished and await self._resolve():
            await self._add_slack_approvers()
            await self._evaluate_request_hooks()
            await self._wait_for_decision()
        if self._state is RequestState.GRANTING and self._s.input.start_at is not None:
            await self._wait_for_start(self._s.input.start_at)
        if self._state is RequestState.GRANTING:
            await self._grant()
        if self._state is RequestState.ACTIVE:
            await self._hold_until_expiry_or_revoke()
            await self._revoke()
            if self._reads_activity():
                await self._read_activity()
        if self._awaits_review():
            await self._await_review()

    @workflow.update
    async def submitted(self) -> RequestView:
        await wait_until(
            lambda: (self._s.resolved and self._s.hooks_evaluated) or self._state.finished
        )
        if self._state is RequestState.FAILED and (
            not self._s.resolved or self._s.refused_at_start
        ):
            raise ApplicationError(
                self._s.view.end_reason or "the request could not be checked",
                type=self._s.failure_type or "RequestFailed",
                non_retryable=True,
            )
        return self._s.view

    @workflow.update
    async def approve(self, input: ApproveInput) -> RequestView:
        refusal = await self._screen_approval(input)
        if refusal is not None:
            raise update_error(refusal)
        self._apply_approve(input)
        return self._s.view

    @approve.validator
    def _validate_approve(self, input: ApproveInput) -> None:
        self._check(lambda: self._approval_rule(input))

    @workflow.update
    def deny(self, input: DenyInput) -> RequestView:
        self._apply_deny(input)
        return self._s.view

    @deny.validator
    def _validate_deny(self, input: DenyInput) -> None:
        self._check(lambda: policy.check_deny(self._s.view, self._flow, input.actor))

    @workflow.update
    def cancel(self, input: CancelInput) -> RequestView:
        self._apply_cancel(input)
        return self._s.view

    @cancel.validator
    def _validate_cancel(self, input: CancelInput) -> None:
        self._check(lambda: policy.check_cancel(self._s.view, self._flow, input.actor))

    @workflow.update
    def revoke(self, input: RevokeInput) -> RequestView:
        self._apply_revoke(input)
        return self._s.view

    @revoke.validator
    def _validate_revoke(self, input: RevokeInput) -> None:
        self._check(lambda: policy.check_revoke(self._s.view, self._flow, input.actor))

    @workflow.update
    def extend(self, input: ExtendInput) -> RequestView:
        self._apply_extend(input)
        return self._s.view

    @extend.validator
    def _validate_extend(self, input: ExtendInput) -> None:
        self._check(
            lambda: policy.check_extend(self._s.view, self._flow, input.actor, input.duration)
        )

    @workflow.update
    def review(self, input: ReviewInput) -> RequestView:
        self._apply_review(input)
        return self._s.view

    @review.validator
    def _validate_review(self, input: ReviewInput) -> None:
        self._check(lambda: self._review_rule(input))

    @workflow.signal(name="approve")
    async def approve_signal(self, input: ApproveInput) -> None:
        input = self._as_signalled(input)
        try:
            self._approval_rule(input)
        except policy.PolicyError as refusal:
            self._record_refusal("approve", input, refusal)
            return
        if await self._screen_approval(input) is None:
            self._apply_approve(input)

    @workflow.signal(name="deny")
    def deny_signal(self, input: DenyInput) -> None:
        self._signalled("deny", input, policy.check_deny, self._apply_deny)

    @workflow.signal(name="cancel")
    def cancel_signal(self, input: CancelInput) -> None:
        self._signalled("cancel", input, policy.check_cancel, self._apply_cancel)

    @workflow.signal(name="revoke")
    def revoke_signal(self, input: RevokeInput) -> None:
        self._signalled("revoke", input, policy.check_revoke, self._apply_revoke)

    @workflow.signal(name="review")
    def review_signal(self, input: ReviewInput) -> None:
        def check(view: RequestView, flow: Flow, actor: Actor) -> None:
            policy.check_review(view, flow, actor, input.finding, input.comment)

        self._signalled("review", input, check, self._apply_review)

    @workflow.signal(name="extend")
    def extend_signal(self, input: ExtendInput) -> None:
        def check(view: RequestView, flow: Flow, actor: Actor) -> None:
            policy.check_extend(view, flow, actor, input.duration)

        self._signalled("extend", input, check, self._apply_extend)

    @workflow.signal(name=names.REQUEST_REFUSED)
    def refused(self, input: RefusedInput) -> None:
        detail: dict[str, Any] = {
            "decision": input.decision,
            "code": input.code,
            "reason": input.reason,
        }
        if input.comment:
            detail["comment"] = input.comment
        if input.duration is not None:
            detail["duration"] = format_duration(input.duration)
        actor = input.actor
        if self._v7:
            # Anyone who can signal could name anyone here: the trail says a signal reported it.
            detail["attempted_by"] = input.actor.model_dump(mode="json", exclude_none=True)
            actor = Actor(rule=names.REFUSED_SIGNAL_ACTOR, via="signal")
        self._emit("decision.refused", actor, **detail)

    @workflow.signal(name=names.LEASE_GRANTED)
    def lease_granted(self, granted: LeaseGranted) -> None:
        if self._multi and granted.grant_key is not None:
            self._s.granted_by[granted.grant_key] = granted
            return
        self._s.granted = granted

    @workflow.signal(name=names.LEASE_FAILED)
    def lease_failed(self, failed: LeaseFailed) -> None:
        if self._multi and failed.grant_key is not None:
            self._s.failed_by[failed.grant_key] = failed
            return
        self._s.grant_failed = failed

    @workflow.signal(name=names.LEASE_RETURNED)
    def lease_returned(self, outcome: ReleaseResult) -> None:
        if self._multi and outcome.grant_key is not None:
            self._s.returns_by.setdefault(outcome.grant_key, []).append(outcome)
            return
        self._s.returns.append(outcome)

    @workflow.query
    def status(self) -> RequestView:
        return self._s.view
