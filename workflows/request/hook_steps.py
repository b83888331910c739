"""The flow's hook steps, each failing closed: its request hooks and auto_approve rules (which may
decide or route a request), its on_approve veto, and its after_* observers; and what a failing
hook leaves behind (`hook.failed`, a note for the requester)."""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.calls import count
from workflows.request import calls
from workflows.request.deciding import Deciding
from workflows.request.record import requester_actor
from workflows.waiting import wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import hooks, policy
    from keycard import temporal as names
    from keycard.failures import root_message
    from keycard.hooks import (
        ApprovalHookInput,
        ApprovalHookResult,
        HookFailure,
        ObserveInput,
        ObserveResult,
        RequestHooksInput,
        RequestHooksResult,
    )
    from keycard.models import ApproveInput, RequestState
    from keycard.sdk.events import hook_event


class HookSteps(Deciding):
    """The hook steps: the layer between deciding and asking."""

    async def _evaluate_request_hooks(self) -> None:
        """Let the flow's on_request hook and auto_approve rules decide at once, and its
        get_approvers reducer name the approvers. Fails closed: whatever fails decides nothing,
        the failure is recorded and shown to the requester, and the request waits for people."""
        flow = self._flow
        if hooks.evaluates_requests(flow):
            event = hook_event(
                "on_request",
                self._s.view,
                self._s.input.submitted_by or requester_actor(self._s.input),
            )
            try:
                result = await calls.evaluate_request_hooks(
                    RequestHooksInput(hooks=flow.hooks, auto_approve=flow.auto_approve, event=event)
                )
            except ActivityError as err:
                failure = HookFailure(hook="on_request", error=root_message(err))
                result = RequestHooksResult(failures=[failure])
            for failure in result.failures:
                self._hook_failed(failure, hooks.request_failure_outcome(failure))
            # Approvals wait for this step (see _screen_approval), but a cancel may not have.
            if self._state is RequestState.PENDING:
                if result.approvers is not None:
                    self._route_to(
                        result.approvers, explained=hooks.routing_failed(result.failures)
                    )
                if result.decision is not None:
                    self._decide_automatically(result.decision)
        if self._v10 and self._state is RequestState.PENDING:
            self._refuse_if_unmeetable()
        self._s.hooks_evaluated = True

    def _refuse_if_unmeetable(self) -> None:
        """Now that its approvers are known: refuse at once a request whose steps can never be
        met because its requester may not approve it, rather than let it wait and expire."""
        view, flow = self._s.view, self._flow
        if flow.allow_self_approval or policy.approvals_complete(view):
            return
        if flow.escalation is not None and flow.escalation.approvers.slack_groups:
            return  # its backups are only known when it escalates
        backups = policy.escalation_people(flow, self._s.input.approver_groups)
        why = policy.unmeetable_for_requester(view, backups)
        if why is None:
            return
        self._s.refused_at_start = True
        self._s.failure_type = "ApprovalUnmeetable"
        self._finish(RequestState.FAILED, why)
        self._emit("access.grant_failed", None, error=why, stage="approvers")

    async def _screen_approval(self, input: ApproveInput) -> policy.PolicyError | None:
        """Let an approval the rules allow wait until on_request and get_approvers have had their
        say, ask the flow's on_approve hook, then check the rules again (the request may have
        been routed, decided or vetoed meanwhile). Returns why the approval is refused (already
        audited), or None. A failing on_approve refuses it too (fails closed), except for
        break-glass: the way around broken automation, announced loudly."""
        if hooks.evaluates_requests(self._flow):
            await wait_until(lambda: self._s.hooks_evaluated or self._state.finished)
        refusal = await self._on_approve_refusal(input) if self._flow.hooks else None
        if refusal is None:
            try:
                self._approval_rule(input)
            except policy.PolicyError as changed:
                refusal = changed
        if refusal is not None:
            self._record_refusal("approve", input, refusal)
        return refusal

    async def _on_approve_refusal(self, input: ApproveInput) -> policy.PolicyError | None:
        assert self._flow.hooks is not None
        event = hook_event("on_approve", self._s.view, input.actor, input.comment)
        if input.break_glass:
            event = event.model_copy(update={"break_glass": True})
        try:
            result = await calls.check_approval_hook(
                ApprovalHookInput(hooks=self._flow.hooks, event=event)
            )
        except ActivityError as err:
            failure = HookFailure(hook="on_approve", error=root_message(err))
            result = ApprovalHookResult(failures=[failure])
        refusal: policy.PolicyError | None = None
        if result.veto is not None:
            refusal = policy.DecisionRefused(
                "ApprovalVetoed",
                f"the flow's on_approve hook refused this approval: {result.veto}",
                policy.Refusal.FORBIDDEN,
            )
        elif result.failures:
            outcome = (
                "the break-glass approval went ahead without it"
                if input.break_glass
                else f"the approval by {input.actor.display} was refused"
            )
            for failure in result.failures:
                self._hook_failed(failure, outcome)
            if not input.break_glass:
                errors = "; ".join(f"{f.hook}: {f.error}" for f in result.failures)
                refusal = policy.DecisionRefused(
                    "ApprovalHookFailed",
                    f"the flow's on_approve hook failed, so this approval was not recorded "
                    f"({errors}); try again, or ask an admin to fix the hook",
                    policy.Refusal.CONFLICT,
                )
        return refusal

    async def _deliver_to_observers(self) -> None:
        """Hand each event to the flow's after_* hooks, in order. They run beside the lifecycle,
        so a slow or broken observer never delays a grant or a revocation."""
        hooks_file = self._flow.hooks
        assert hooks_file is not None
        while True:
            await wait_until(lambda: self._s.observed < len(self._s.outbox))
            index = self._s.observed
            event = self._s.outbox[index]
            observers = hooks.observers_for(event.type, event.state)
            if observers:
                comment = str(event.detail.get("comment") or event.detail.get("reason") or "")
                try:
                    result = await calls.run_observer_hooks(
                        ObserveInput(
                            hooks=hooks_file,
                            names=observers,
                            event=hook_event(
                                observers[0], self._s.views[index], event.actor, comment
                            ),
                        )
                    )
                except ActivityError as err:
                    failure = HookFailure(hook=", ".join(observers), error=root_message(err))
                    result = ObserveResult(failures=[failure])
                for failure in result.failures:
                    self._hook_failed(failure, f"observing {event.type}", tell=False)
            self._s.observed += 1

    def _hook_failed(self, failure: HookFailure, consequence: str, tell: bool = True) -> None:
        """Record a hook that raised, timed out or could not load; `tell` shows it to the
        requester (in the view's notes)."""
        if tell:
            self._s.view.notes.append(f"{failure.hook} failed: {failure.error} ({consequence})")
            self._publish()
        self._emit("hook.failed", None, hook=failure.hook, error=failure.error, outcome=consequence)
        count(
            names.METRIC_HOOK_FAILURES, "hooks that failed", flow=self._flow.name, hook=failure.hook
        )
