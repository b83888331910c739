"""Decisions on a request, once checked: approvals (by people, steps, break-glass, rules and
hooks), denials, cancellations, revocations and extensions; and refusals, audited."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from workflows.request.delivery import Delivery

with workflow.unsafe.imports_passed_through():
    from keycard import hooks, policy
    from keycard import temporal as names
    from keycard.config import Flow
    from keycard.durations import format_duration
    from keycard.hooks import (
        AutomaticDecision,
    )
    from keycard.models import (
        Actor,
        Approval,
        ApproveInput,
        BreakGlassReview,
        CancelInput,
        DecisionInput,
        DenyInput,
        ExtendInput,
        Extension,
        RequestState,
        RequestView,
        ReviewInput,
        RevokeInput,
    )


D = TypeVar("D", bound=DecisionInput)


class Deciding(Delivery):
    def _apply_approve(self, input: ApproveInput) -> None:
        view = self._s.view
        view.approvals.append(Approval(actor=input.actor, at=workflow.now(), comment=input.comment))
        if input.break_glass:
            self._apply_break_glass(input)
            return
        policy.record_tally(view)
        if policy.approvals_complete(view):
            self._decide(input.actor, RequestState.GRANTING)
        else:
            self._publish()
        self._emit(
            "request.approved",
            input.actor,
            comment=input.comment,
            approvals=len(view.approvals),
            approvals_required=view.approvals_required,
            **self._steps_detail(),
        )

    def _apply_break_glass(self, input: ApproveInput) -> None:
        """The requester's own emergency approval decides at once, and is announced loudly."""
        view = self._s.view
        view.break_glass = True
        view.notes.append(f"break-glass: approved by the requester: {input.comment}")
        self._decide(input.actor, RequestState.GRANTING)
        self._emit(
            "request.approved",
            input.actor,
            comment=input.comment,
            approvals=len(view.approvals),
            approvals_required=view.approvals_required,
            break_glass=True,
        )
        self._emit(
            "break_glass.used",
            input.actor,
            justification=input.comment,
            bypassed_approvers=view.approvers,
            approvals_required=view.approvals_required,
        )

    def _decide_automatically(self, decision: AutomaticDecision) -> None:
        """A rule or hook decided; an approval only within the flow's cap on automatic ones."""
        view = self._s.view
        actor = Actor(rule=decision.by, via="rule")
        if decision.outcome == "deny":
            self._decide(actor, RequestState.DENIED, f"denied by {decision.by}: {decision.reason}")
            self._emit("request.denied", actor, rule=decision.by, comment=decision.reason)
            return
        over_cap = hooks.over_automatic_cap(self._flow, view.duration)
        if over_cap is not None:
            view.notes.append(f"{decision.by} would approve ({decision.reason}), but {over_cap}")
            self._publish()
            self._emit(
                "decision.refused",
                actor,
                decision="auto_approve",
                code="OverAutomaticCap",
                reason=over_cap,
            )
            return
        view.approvals.append(Approval(actor=actor, at=workflow.now(), comment=decision.reason))
        self._decide(actor, RequestState.GRANTING)
        self._emit("request.auto_approved", actor, rule=decision.by, reason=decision.reason)

    def _route_to(self, approvers: list[str], explained: bool = False) -> None:
        """get_approvers named who decides this request, in place of the flow's list (nobody,
        when it failed: `explained` by the failure's note already)."""
        view = self._s.view
        view.approvers = approvers
        # In place of the flow's steps too: any approvals_required of the people it named.
        view.approval_steps = []
        if len(approvers) < view.approvals_required and not explained:
            view.notes.append(
                f"get_approvers named {len(approvers)} approver(s) but this flow needs "
                f"{view.approvals_required} approvals; only an admin can complete it"
            )
        self._publish()
        self._emit("request.routed", None, approvers=approvers, by="get_approvers")

    def _approval_rule(self, input: ApproveInput) -> None:
        if input.break_glass:
            policy.check_break_glass(self._s.view, self._flow, input.actor, input.comment)
        else:
            policy.check_approve(self._s.view, self._flow, input.actor)

    def _apply_deny(self, input: DenyInput) -> None:
        self._decide(input.actor, RequestState.DENIED, f"denied by {input.actor.display}")
        self._emit("request.denied", input.actor, comment=input.comment)

    def _apply_cancel(self, input: CancelInput) -> None:
        self._decide(input.actor, RequestState.CANCELLED, f"cancelled by {input.actor.display}")
        self._emit("request.cancelled", input.actor, comment=input.comment)

    def _apply_revoke(self, input: RevokeInput) -> None:
        self._s.revoked_by = input

    def _review_rule(self, input: ReviewInput) -> None:
        policy.check_review(self._s.view, self._flow, input.actor, input.finding, input.comment)

    def _apply_review(self, input: ReviewInput) -> None:
        """An approver's look at a break-glass use; the request waits for it after its access
        ends (PATCH_V14), and it may come any time before."""
        view = self._s.view
        view.review = BreakGlassReview(
            by=input.actor, at=workflow.now(), finding=input.finding, comment=input.comment
        )
        self._publish()
        self._emit(
            "break_glass.reviewed", input.actor, finding=input.finding, comment=input.comment
        )

    def _cancelled_through_temporal(self, reason: str) -> None:
        """Temporal asked this workflow to cancel: a pending request is cancelled; access being
        granted or held is revoked now (the lifecycle removes it and records the removal)."""
        actor = Actor(rule="temporal.cancel", via="temporal")
        comment = reason or "cancellation requested through Temporal"
        workflow.logger.warning("cancellation requested through Temporal: %s", comment)
        if self._state in (RequestState.PENDING, RequestState.SCHEDULED):
            self._decide(actor, RequestState.CANCELLED, f"cancelled through Temporal: {comment}")
            self._emit("request.cancelled", actor, comment=comment, via="temporal")
        elif self._state in (RequestState.GRANTING, RequestState.ACTIVE) and not self._s.revoked_by:
            self._apply_revoke(RevokeInput(actor=actor, comment=comment))
        elif self._state is RequestState.ENDED:  # waiting to read the grants' activity: don't
            self._s.waits_cancelled = f"cancelled through Temporal: {comment}"

    def _apply_extend(self, input: ExtendInput) -> None:
        view = self._s.view
        assert view.expires_at is not None
        view.expires_at = view.expires_at + input.duration
        view.extensions.append(
            Extension(
                actor=input.actor,
                at=workflow.now(),
                duration=input.duration,
                expires_at=view.expires_at,
            )
        )
        self._emit(
            "access.extended",
            input.actor,
            comment=input.comment,
            by=format_duration(input.duration),
            expires_at=view.expires_at,
        )
        self._publish()

    def _decide(self, actor: Actor, state: RequestState, end_reason: str | None = None) -> None:
        view = self._s.view
        view.decided_by = actor
        view.decided_at = workflow.now()
        if end_reason is not None:
            self._finish(state, end_reason)
        else:
            self._set_state(state)

    def _check(self, rule: Callable[[], None]) -> None:
        try:
            rule()
        except policy.PolicyError as refusal:
            raise ApplicationError(
                refusal.message, refusal.kind.value, type=refusal.code, non_retryable=True
            ) from None

    def _as_signalled(self, input: D) -> D:
        """The decision as it arrived: by signal, whatever door its actor claims (PATCH_V7)."""
        if not self._v7:
            return input
        return input.model_copy(update={"actor": input.actor.model_copy(update={"via": "signal"})})

    def _signalled(
        self,
        decision: str,
        input: D,
        rule: Callable[[RequestView, Flow, Actor], None],
        apply: Callable[[D], None],
    ) -> None:
        input = self._as_signalled(input)
        try:
            rule(self._s.view, self._flow, input.actor)
        except policy.PolicyError as refusal:
            self._record_refusal(decision, input, refusal)
            return
        apply(input)

    def _record_refusal(
        self, decision: str, input: DecisionInput, refusal: policy.PolicyError
    ) -> None:
        workflow.logger.warning("refused %s: %s", decision, refusal.message)
        self._emit(
            "decision.refused",
            input.actor,
            decision=decision,
            code=refusal.code,
            reason=refusal.message,
        )


def update_error(refusal: policy.PolicyError) -> ApplicationError:
    """An update refused after its validator accepted it; the refusal is already in the trail,
    which the second detail tells the front door (it reports validator refusals itself)."""
    return ApplicationError(
        refusal.message,
        refusal.kind.value,
        names.REFUSAL_AUDITED,
        type=refusal.code,
        non_retryable=True,
    )
