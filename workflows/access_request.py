"""AccessRequestWorkflow: one access request, from asking to access gone."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.calls import count, local_call
from workflows.waiting import run_through_cancel, wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import hooks, policy
    from keycard import temporal as names
    from keycard.config import SessionsPolicy
    from keycard.durations import format_duration
    from keycard.failures import root_message, root_type
    from keycard.hooks import (
        ApprovalHookInput,
        ApprovalHookResult,
        AutomaticDecision,
        HookFailure,
        ObserveInput,
        ObserveResult,
        RequestHooksInput,
        RequestHooksResult,
    )
    from keycard.models import (
        AccessRequestInput,
        AccessRequestState,
        AcquireLeaseInput,
        Actor,
        Approval,
        ApproveInput,
        AssignmentSpec,
        AuditBatch,
        CancelInput,
        DecisionInput,
        DeliveryRound,
        DeliveryRoundResult,
        DenyInput,
        EventType,
        ExtendInput,
        Extension,
        LeaseDropNotice,
        LeaseFailed,
        LeaseGranted,
        LeaseRequest,
        LeaseResult,
        LeaseReturn,
        LifecycleEvent,
        Notification,
        NotificationResult,
        RefusedInput,
        ReleaseLeaseInput,
        ReleaseResult,
        RequestState,
        RequestView,
        ResolvedAssignment,
        ResolveInput,
        RevokeInput,
        SessionsEnded,
        SlackApproversInput,
        SlackApproversResult,
        TakeLeaseInput,
        Target,
        TargetRef,
        TargetStatus,
    )
    from keycard.sdk.events import hook_event
    from keycard.strategies import STRATEGIES, activity_name, strategy_options

D = TypeVar("D", bound=DecisionInput)


@workflow.defn(name=names.ACCESS_REQUEST_WORKFLOW)
class AccessRequestWorkflow:
    """One request: PENDING → GRANTING → ACTIVE → REVOKING → ENDED (or DENIED, EXPIRED, CANCELLED,
    FAILED).

    Updates (each with a validator that refuses with a reason and leaves no trace in history):
    `approve` ApproveInput, `deny` DenyInput, `cancel` CancelInput, `revoke` RevokeInput,
    `extend` ExtendInput — each returns the RequestView after the decision — and `submitted`
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
        # (keycard/temporal.py, PATCH_V6 to PATCH_V10), and decides how request.created is recorded.
        self._v10 = workflow.patched(names.PATCH_V10)
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
                targets=[_target_status(t) for t in input.targets] if self._multi else [],
                duration=input.duration,
                start_at=input.start_at,
                reason=input.reason,
                ticket=policy.find_ticket(input.flow, input.reason),
                fields=input.fields,
                approvals_required=input.flow.approvals_needed,
                approvers=policy.approvers_of(input.flow, input.approver_groups),
                approval_steps=policy.steps_of(input.flow, input.approver_groups),
                requested_at=now,
            ),
        )
        # Here, not in `run`: a decision signalled with the start is handled before `run` begins,
        # and the trail must still open with the request.
        ticket = self._s.view.ticket
        self._emit(
            "request.created",
            input.submitted_by or _requester_actor(input),
            approvers=self._s.view.approvers,
            approvals_required=self._s.view.approvals_required,
            approval_timeout=format_duration(input.flow.approval_timeout),
            **({"ticket": ticket.model_dump(mode="json")} if ticket is not None else {}),
            **self._steps_detail(),
            **({"targets": [t.name for t in input.targets]} if self._multi else {}),
        )
        # Updates wait for the work already in hand (workflows/runner.py); requests started
        # before keep the SDK's order, which their histories recorded.
        self.keycard_updates_last = self._patched(names.PATCH_UPDATES_LAST)

    def _patched(self, patch: str) -> bool:
        """workflow.patched, for the patches PATCH_V6 implies."""
        return self._v6 or workflow.patched(patch)

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

    # --- decisions: updates, their validators, and the same decisions as signals ---------------

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
            raise _update_error(refusal)
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

    @workflow.signal(name="extend")
    def extend_signal(self, input: ExtendInput) -> None:
        def check(view: RequestView, flow, actor: Actor) -> None:
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

    # A request naming several targets hears from each target's grant, by its grant key.

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

    # --- the lifecycle -------------------------------------------------------------------------

    async def _resolve(self) -> bool:
        """Check the requester and target exist in AWS before anyone is asked to approve."""
        if self._multi:
            return await self._resolve_each()
        outcome = await self._resolve_target(_assignment_spec(self._s.input))
        if isinstance(outcome, ActivityError):
            if self._state.finished:
                return False  # cancelled or denied meanwhile: that outcome stands
            self._s.failure_type = root_type(outcome)
            self._finish(RequestState.FAILED, root_message(outcome))
            self._emit("access.grant_failed", None, error=self._s.view.end_reason, stage="resolve")
            return False
        self._s.assignment = outcome
        self._s.resolved = True
        return True

    async def _resolve_each(self) -> bool:
        """Several targets: check each, side by side. A target that does not resolve is reported
        (`access.grant_failed`, stage resolve) and left out; the request goes on with the rest,
        and fails only if none resolves."""
        input = self._s.input
        outcomes = await asyncio.gather(
            *(self._resolve_target(_assignment_spec(input, t)) for t in input.targets)
        )
        if self._state.finished:
            return False  # cancelled or denied meanwhile: that outcome stands
        failed: list[tuple[TargetStatus, ActivityError]] = []
        for status, outcome in zip(self._s.view.targets, outcomes, strict=True):
            if isinstance(outcome, ActivityError):
                status.state, status.error = "failed", root_message(outcome)
                failed.append((status, outcome))
            else:
                self._s.assignments[status.name] = outcome
        if not self._s.assignments:
            self._s.failure_type = root_type(failed[0][1])
            self._finish(RequestState.FAILED, f"no target could be granted: {failed[0][0].error}")
        for status, _ in failed:
            self._emit("access.grant_failed", None, on=status, error=status.error, stage="resolve")
        if not self._s.assignments:
            return False
        self._s.assignment = next(iter(self._s.assignments.values()))
        self._s.resolved = True
        return True

    async def _resolve_target(self, spec: AssignmentSpec) -> ResolvedAssignment | ActivityError:
        try:
            return await self._short_call(
                activity_name(spec.strategy, "resolve"),
                ResolveInput(spec=spec),
                result_type=ResolvedAssignment,
                start_to_close_timeout=names.RESOLVE_TIMEOUT,
                retry_policy=names.RESOLVE_RETRY,
            )
        except ActivityError as err:
            return err

    async def _evaluate_request_hooks(self) -> None:
        """Let the flow's on_request hook and auto_approve rules decide at once, and its
        get_approvers reducer name the approvers. Fails closed: whatever fails decides nothing,
        the failure is recorded and shown to the requester, and the request waits for people."""
        flow = self._flow
        if hooks.evaluates_requests(flow):
            event = hook_event(
                "on_request",
                self._s.view,
                self._s.input.submitted_by or _requester_actor(self._s.input),
            )
            try:
                result = await workflow.execute_activity(
                    names.EVALUATE_REQUEST_HOOKS,
                    RequestHooksInput(
                        hooks=flow.hooks, auto_approve=flow.auto_approve, event=event
                    ),
                    result_type=RequestHooksResult,
                    start_to_close_timeout=names.HOOKS_ACTIVITY_TIMEOUT,
                    retry_policy=names.HOOKS_RETRY,
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

    async def _add_slack_approvers(self) -> None:
        """Add the members of the flow's Slack user groups to its approvers, as they are now.

        No workflow.patched: requests started before `slack_groups` existed name none, so their
        replay takes the same path. A failed lookup leaves fewer approvers, the safe side; it is
        recorded on the `request.pending` event.
        """
        view = self._s.view
        if not any(step.approvers.slack_groups for step in self._flow.steps):
            return
        looked_up = False  # a failed lookup publishes nothing, as before steps existed
        if not view.approval_steps:
            emails = await self._slack_group_members(self._flow.approvers.slack_groups)
            looked_up = emails is not None
            self._add_approvers(view.approvers, emails or [])
        else:  # each step's groups into that step (and into everyone who may approve)
            for step, declared in zip(view.approval_steps, self._flow.steps, strict=True):
                emails = await self._slack_group_members(declared.approvers.slack_groups)
                looked_up = looked_up or emails is not None
                self._add_approvers(step.approvers, emails or [])
                self._add_approvers(view.approvers, emails or [])
        if looked_up:
            self._publish()

    async def _slack_group_members(self, groups: list[str]) -> list[str] | None:
        """The members' emails; None when there are no groups or the lookup failed."""
        if not groups:
            return None
        try:
            result = await workflow.execute_activity(
                names.RESOLVE_SLACK_APPROVERS,
                SlackApproversInput(groups=groups),
                result_type=SlackApproversResult,
                start_to_close_timeout=names.RESOLVE_TIMEOUT,
                retry_policy=names.RESOLVE_RETRY,
            )
        except ActivityError as err:
            self._s.approver_lookup_error = root_message(err)
            workflow.logger.warning("Slack approver groups not resolved: %s", root_message(err))
            return None
        return result.emails

    @staticmethod
    def _add_approvers(approvers: list[str], emails: list[str]) -> None:
        for email in emails:
            if email.lower() not in approvers:
                approvers.append(email.lower())

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

    async def _wait_for_decision(self) -> None:
        flow = self._flow
        if self._state is RequestState.PENDING and self._patched("request-pending-event"):
            detail = {"approvers": list(self._s.view.approvers)}
            if self._s.approver_lookup_error:
                detail["approver_lookup_error"] = self._s.approver_lookup_error
            self._emit("request.pending", None, **detail)
        # Durable timers beside the wait, only for flows that ask for them (so no patch: no
        # earlier request had reminders or an escalation).
        nudges = [asyncio.create_task(self._remind(n, after)) for n, after in self._reminders()]
        if flow.escalate_after is not None and self._state is RequestState.PENDING:
            nudges.append(asyncio.create_task(self._escalate(flow.escalate_after)))
        try:
            await wait_until(
                lambda: self._state is not RequestState.PENDING, timeout=flow.approval_timeout
            )
        except TimeoutError:
            self._finish(
                RequestState.EXPIRED,
                f"no decision within {format_duration(flow.approval_timeout)}",
            )
            self._emit(
                "request.expired", None, approval_timeout=format_duration(flow.approval_timeout)
            )
        finally:
            for nudge in nudges:
                nudge.cancel()

    def _reminders(self) -> list[tuple[int, timedelta]]:
        if self._state is not RequestState.PENDING:
            return []
        return list(enumerate(sorted(self._flow.reminders), start=1))

    async def _remind(self, number: int, after: timedelta) -> None:
        """Ask the approvers again, `after` the request began to wait, if it still waits."""
        await workflow.sleep(after)
        if self._state is not RequestState.PENDING:
            return
        self._emit(
            "request.reminded",
            None,
            reminder=number,
            waited=format_duration(after),
            approvers=self._s.view.can_still_approve(),
            **(
                {"still_needed": policy.needed(self._s.view)} if self._s.view.approval_steps else {}
            ),
        )

    async def _escalate(self, after: timedelta) -> None:
        """Still pending `after` it began to wait: the flow's escalation approvers join (in every
        open step), and are asked; the requester is told."""
        await workflow.sleep(after)
        if self._state is not RequestState.PENDING or self._flow.escalation is None:
            return
        backup = self._flow.escalation.approvers
        people = policy.escalation_people(self._flow, self._s.input.approver_groups)
        people += await self._slack_group_members(backup.slack_groups) or []
        if self._state is not RequestState.PENDING:
            return  # decided while Slack was asked
        view = self._s.view
        added = [p.lower() for p in dict.fromkeys(people) if p.lower() not in view.approvers]
        self._add_approvers(view.approvers, added)
        for step in view.approval_steps:
            if not step.satisfied:
                self._add_approvers(step.approvers, people)
        self._publish()
        self._emit(
            "request.escalated",
            None,
            waited=format_duration(after),
            added=added,
            approvers=self._s.view.can_still_approve(),
        )

    async def _wait_for_start(self, start_at: datetime) -> None:
        """A scheduled start: approved now, granted at `start_at` and not before (a durable
        timer). Until then the request is SCHEDULED, and may be cancelled. Only requests with a
        start_at take this path, so earlier histories replay unchanged."""
        if start_at <= workflow.now():
            return
        self._set_state(RequestState.SCHEDULED)
        self._emit("access.scheduled", None, start_at=start_at)
        with contextlib.suppress(TimeoutError):
            await wait_until(
                lambda: self._state is not RequestState.SCHEDULED,
                timeout=start_at - workflow.now(),
            )
        if self._state is RequestState.SCHEDULED:
            self._set_state(RequestState.GRANTING)

    async def _grant(self) -> None:
        """Take a lease on the assignment's GrantWorkflow and wait, holding no worker slot, until
        it says the access exists. The lease (and so the access) runs from that moment."""
        assert self._s.assignment is not None
        if self._multi:
            await self._grant_each()
            return
        if not self._patched(names.PATCH_LEASE_SIGNALS):
            await self._grant_by_update()
            return
        self._s.lease_by_signal = True
        try:
            await self._take_lease()
            await wait_until(
                lambda: self._s.granted is not None or self._s.grant_failed is not None,
                timeout=names.GRANT_WAIT,
            )
        except ActivityError as err:
            self._s.grant_failed = LeaseFailed(error=root_message(err), type=root_type(err))
        except TimeoutError:
            # Whatever the grant does later, it finds the lease returned and removes the access.
            await self._send_to_grant(names.LEASE_RETURN, LeaseReturn(request_id=self._s.view.id))
            self._s.grant_failed = LeaseFailed(
                error=f"access was not granted within {format_duration(names.GRANT_WAIT)}",
                type="GrantTimedOut",
            )
        if self._s.grant_failed is not None:
            self._s.failure_type = self._s.grant_failed.type
            error = self._s.grant_failed.error
            self._finish(RequestState.FAILED, f"granting access failed: {error}")
            self._emit("access.grant_failed", None, error=error, stage="grant")
            return
        granted = self._s.granted
        assert granted is not None
        view = self._s.view
        view.granted_at = granted.granted_at
        view.expires_at = granted.expires_at
        view.standing_access = granted.standing
        self._s.lease_expires_at = granted.expires_at
        self._set_state(RequestState.ACTIVE)
        self._emit("access.granted", None, expires_at=view.expires_at, standing=granted.standing)

    async def _grant_each(self) -> None:
        """Several targets: a lease on each target's grant, all taken at once; then wait, holding
        no worker slot, until every grant has answered. A target that fails is reported and does
        not hold up the rest; the request is ACTIVE if any target was granted. Access ends for all
        of them together, at the earliest lease's end: no target outlasts the approved time."""
        self._s.lease_by_signal = True
        targets = [t for t in self._s.view.targets if t.name in self._s.assignments]
        assignments = [self._s.assignments[t.name] for t in targets]
        await asyncio.gather(*(self._take_lease_failing_softly(a) for a in assignments))

        def heard(key: str) -> bool:
            return key in self._s.granted_by or key in self._s.failed_by

        with contextlib.suppress(TimeoutError):
            await wait_until(
                lambda: all(heard(a.grant_key) for a in assignments), timeout=names.GRANT_WAIT
            )
        late = [a for a in assignments if not heard(a.grant_key)]
        # Whatever those grants do later, they find the lease returned and remove the access.
        returned = LeaseReturn(request_id=self._s.view.id)
        await asyncio.gather(*(self._send_to_grant(names.LEASE_RETURN, returned, a) for a in late))
        for assignment in late:
            self._s.failed_by[assignment.grant_key] = LeaseFailed(
                error=f"access was not granted within {format_duration(names.GRANT_WAIT)}",
                type="GrantTimedOut",
            )
        granted: list[tuple[TargetStatus, LeaseGranted]] = []
        failed: list[TargetStatus] = []
        for assignment, status in zip(assignments, targets, strict=True):
            failure = self._s.failed_by.get(assignment.grant_key)
            if failure is not None:
                status.state, status.error = "failed", failure.error
                failed.append(status)
                continue
            lease = self._s.granted_by[assignment.grant_key]
            status.state = "active"
            status.granted_at, status.standing = lease.granted_at, lease.standing
            self._s.lease_ends[assignment.grant_key] = lease.expires_at
            granted.append((status, lease))
        view = self._s.view
        if not granted:
            first = self._s.failed_by[assignments[0].grant_key]
            self._s.failure_type = first.type
            self._finish(RequestState.FAILED, f"granting access failed: {first.error}")
        else:
            view.granted_at = min(lease.granted_at for _, lease in granted)
            view.expires_at = min(lease.expires_at for _, lease in granted)
            view.standing_access = all(lease.standing for _, lease in granted)
            self._s.lease_expires_at = view.expires_at
            self._set_state(RequestState.ACTIVE)
        for status in failed:
            self._emit("access.grant_failed", None, on=status, error=status.error, stage="grant")
        for status, lease in granted:
            self._emit(
                "access.granted",
                None,
                on=status,
                expires_at=view.expires_at,
                standing=lease.standing,
            )

    def _active_targets(self) -> list[tuple[ResolvedAssignment, TargetStatus]]:
        """The targets holding a lease now, with their assignments."""
        return [
            (self._s.assignments[t.name], t) for t in self._s.view.targets if t.state == "active"
        ]

    async def _take_lease_failing_softly(self, assignment: ResolvedAssignment) -> None:
        """Take one target's lease; a failure to is that target's failure, not the request's."""
        try:
            await self._take_lease(assignment=assignment)
        except ActivityError as err:
            self._s.failed_by[assignment.grant_key] = LeaseFailed(
                error=root_message(err), type=root_type(err)
            )

    async def _take_lease(
        self, expires_at: datetime | None = None, assignment: ResolvedAssignment | None = None
    ) -> None:
        assignment = assignment or self._s.assignment
        assert assignment is not None
        await self._short_call(
            names.TAKE_LEASE,
            TakeLeaseInput(
                assignment=assignment, lease=self._lease_request(expires_at, assignment)
            ),
            start_to_close_timeout=names.TAKE_LEASE_TIMEOUT,
            retry_policy=names.TAKE_LEASE_RETRY,
        )

    def _lease_request(
        self, expires_at: datetime | None, assignment: ResolvedAssignment | None = None
    ) -> LeaseRequest:
        return LeaseRequest(
            request_id=self._s.view.id,
            duration=self._total_duration(),
            expires_at=expires_at,
            drop_notice=self._lease_drop_notice(assignment),
            end_sessions=self._ends_sessions(),
            sessions_policy=self._sessions_policy(),
        )

    async def _send_to_grant(
        self,
        signal: str,
        message: LeaseRequest | LeaseReturn,
        assignment: ResolvedAssignment | None = None,
    ) -> bool:
        """Signal the assignment's GrantWorkflow; False if none is running."""
        assignment = assignment or self._s.assignment
        assert assignment is not None
        grant_id = names.grant_workflow_id(assignment.grant_key)
        try:
            await workflow.get_external_workflow_handle(grant_id).signal(signal, message)
        except FailureError as err:
            workflow.logger.info("no grant workflow to signal %s: %s", signal, err)
            return False
        return True

    async def _grant_by_update(self) -> None:
        """Before lease signals: an activity waited on the grant's `acquire` update."""
        assert self._s.assignment is not None
        expires_at = workflow.now() + self._total_duration()
        try:
            lease = await workflow.execute_activity(
                names.ACQUIRE_LEASE,
                AcquireLeaseInput(
                    assignment=self._s.assignment,
                    request_id=self._s.view.id,
                    expires_at=expires_at,
                ),
                result_type=LeaseResult,
                start_to_close_timeout=names.LEASE_TIMEOUT,
                heartbeat_timeout=names.LEASE_HEARTBEAT,
                retry_policy=names.LEASE_RETRY,
            )
        except ActivityError as err:
            self._finish(RequestState.FAILED, f"granting access failed: {root_message(err)}")
            self._emit("access.grant_failed", None, error=root_message(err), stage="grant")
            return
        view = self._s.view
        view.granted_at = workflow.now()
        view.expires_at = view.granted_at + self._total_duration()
        view.standing_access = lease.standing
        self._s.lease_expires_at = expires_at
        self._set_state(RequestState.ACTIVE)
        self._emit("access.granted", None, expires_at=view.expires_at, standing=lease.standing)

    async def _hold_until_expiry_or_revoke(self) -> None:
        view = self._s.view
        while self._s.revoked_by is None:
            assert view.expires_at is not None
            if view.expires_at != self._s.lease_expires_at:
                await self._renew_lease()  # granted late, or extended: move the lease's expiry
            remaining = view.expires_at - workflow.now()
            if remaining <= timedelta(0):
                return
            expires_at = view.expires_at
            warn_in = self._expiry_warning_in(expires_at, remaining)
            try:
                await wait_until(
                    lambda until=expires_at: (
                        self._s.revoked_by is not None or view.expires_at != until
                    ),
                    timeout=remaining if warn_in is None else warn_in,
                )
            except TimeoutError:
                if warn_in is None:
                    return
                self._s.expiry_warned_for = expires_at
                self._emit("access.expiring", None, expires_at=expires_at)

    def _expiry_warning_in(self, expires_at: datetime, remaining: timedelta) -> timedelta | None:
        """How long until the requester is warned that `expires_at` nears; None: no warning due.

        Each expiry is warned about once (an extension brings a new one); access shorter than
        the warning's lead time gets none, since the grant message already says when it ends.
        """
        lead = self._flow.expiry_warning
        if lead is None or remaining <= lead or self._s.expiry_warned_for == expires_at:
            return None
        if not self._patched("expiry-warning"):
            return None
        return remaining - lead

    async def _revoke(self) -> None:
        assert self._s.assignment is not None
        early = self._s.revoked_by
        self._set_state(RequestState.REVOKING)
        if self._multi:
            await self._revoke_each(early)
            return
        if self._s.lease_by_signal:
            result = await self._return_lease()
        else:
            result = await self._release_by_update()
        detail = {
            "removed": result.removed,
            "standing": result.standing,
            "other_leases": result.remaining_leases,
        }
        if early is not None:
            self._finish(RequestState.ENDED, f"revoked early by {early.actor.display}")
            self._emit("access.revoked", early.actor, comment=early.comment, **detail)
        else:
            self._finish(RequestState.ENDED, "expired")
            self._emit("access.ended", None, **detail)
        if result.sessions is not None:
            self._report_sessions(result.sessions)

    async def _revoke_each(self, early: RevokeInput | None) -> None:
        """Several targets: every lease given back at once, and the request ENDED once each
        grant has answered; then one event per target says what became of its access."""
        active = self._active_targets()
        results = await asyncio.gather(
            *(self._return_lease(assignment) for assignment, _ in active)
        )
        if early is not None:
            self._finish(RequestState.ENDED, f"revoked early by {early.actor.display}")
        else:
            self._finish(RequestState.ENDED, "expired")
        for (_, status), result in zip(active, results, strict=True):
            status.state, status.removed = "ended", result.removed
        for (_, status), result in zip(active, results, strict=True):
            detail = {
                "removed": result.removed,
                "standing": result.standing,
                "other_leases": result.remaining_leases,
            }
            if early is not None:
                self._emit(
                    "access.revoked", early.actor, on=status, comment=early.comment, **detail
                )
            else:
                self._emit("access.ended", None, on=status, **detail)
            if result.sessions is not None:
                self._report_sessions(result.sessions, on=status)

    def _ends_sessions(self) -> bool:
        """Whether the lease asks the grant to end the access's sessions (the flow's
        end_sessions); requests started before keycard-v8 never did."""
        return self._v8 and self._flow.ends_sessions

    def _sessions_policy(self) -> SessionsPolicy | None:
        """The flow's customer-managed policy for the deny entries (None: the inline policy)."""
        return self._flow.end_sessions_policy if self._ends_sessions() else None

    def _report_sessions(self, sessions: SessionsEnded, on: TargetStatus | None = None) -> None:
        detail = {
            "permission_set_arn": sessions.permission_set_arn,
            "account_id": sessions.account_id,
            "denied_before": sessions.denied_before,
            "seconds": round(sessions.seconds, 3),
        }
        if sessions.policy_arn:  # the flow's end_sessions_policy
            detail["policy_arn"] = sessions.policy_arn
        if sessions.scopes:  # a group's: every permission set and account it is assigned
            detail["scopes"] = [s.model_dump(exclude={"instance_arn"}) for s in sessions.scopes]
        if sessions.ended:
            self._emit("access.sessions_ended", None, on=on, **detail)
        else:
            self._emit("access.sessions_not_ended", None, on=on, error=sessions.error, **detail)

    async def _return_lease(self, assignment: ResolvedAssignment | None = None) -> ReleaseResult:
        """Give the lease back and wait for the grant's word on the access: removed, left to other
        leases, standing, or (reported each round) still being removed. Asks again if no word
        comes; a grant that no longer runs holds nothing, and says so by the signal failing.
        `assignment`: one target's lease, of a request naming several."""
        returned = LeaseReturn(request_id=self._s.view.id)
        if assignment is None:
            returns = self._s.returns
        else:
            returns = self._s.returns_by.setdefault(assignment.grant_key, [])
        heard = len(returns)
        rounds = 0
        while True:
            if not await self._send_to_grant(names.LEASE_RETURN, returned, assignment):
                return ReleaseResult(removed=True)
            try:
                while True:
                    await wait_until(
                        lambda seen=heard: len(returns) > seen,
                        timeout=names.RELEASE_WAIT,
                    )
                    heard = len(returns)
                    result = returns[-1]
                    if not result.pending:
                        return result
                    rounds += 1
                    self._report_revoke_retrying(result, rounds, assignment)
            except TimeoutError:
                continue

    async def _release_by_update(self) -> ReleaseResult:
        """Before lease signals: an activity waited on the grant's `release` update."""
        assert self._s.assignment is not None
        rounds = 0
        while True:
            result = await workflow.execute_activity(
                names.RELEASE_LEASE,
                ReleaseLeaseInput(assignment=self._s.assignment, request_id=self._s.view.id),
                result_type=ReleaseResult,
                start_to_close_timeout=names.LEASE_TIMEOUT,
                heartbeat_timeout=names.LEASE_HEARTBEAT,
                retry_policy=names.LEASE_RETRY,
            )
            if not result.pending:
                break
            rounds += 1
            self._report_revoke_retrying(result, rounds)
        return result

    def _report_revoke_retrying(
        self, result: ReleaseResult, rounds: int, assignment: ResolvedAssignment | None = None
    ) -> None:
        self._emit(
            "access.revoke_retrying",
            None,
            on=self._target_of(assignment),
            failures=result.revoke_failures,
            error=result.last_error,
            waited_rounds=rounds,
        )

    async def _renew_lease(self) -> None:
        """Move the lease's end to the request's (extended) expiry."""
        assert self._s.assignment is not None and self._s.view.expires_at is not None
        if self._multi:
            expires_at = self._s.view.expires_at
            await asyncio.gather(
                *(self._renew_one(a, expires_at) for a, _ in self._active_targets())
            )
            self._s.lease_expires_at = expires_at
            return
        if self._s.lease_by_signal:
            expires_at = self._s.view.expires_at
            renewal = self._lease_request(expires_at)
            if not await self._send_to_grant(names.LEASE_TAKE, renewal):
                await self._take_lease(expires_at)  # the grant is gone: lease it afresh
            self._s.lease_expires_at = expires_at
            return
        await workflow.execute_activity(
            names.ACQUIRE_LEASE,
            AcquireLeaseInput(
                assignment=self._s.assignment,
                request_id=self._s.view.id,
                expires_at=self._s.view.expires_at,
            ),
            result_type=LeaseResult,
            start_to_close_timeout=names.LEASE_TIMEOUT,
            heartbeat_timeout=names.LEASE_HEARTBEAT,
            retry_policy=names.LEASE_RETRY,
        )
        self._s.lease_expires_at = self._s.view.expires_at

    async def _renew_one(self, assignment: ResolvedAssignment, expires_at: datetime) -> None:
        if self._s.lease_ends.get(assignment.grant_key) == expires_at:
            return
        renewal = self._lease_request(expires_at, assignment)
        if not await self._send_to_grant(names.LEASE_TAKE, renewal, assignment):
            await self._take_lease(expires_at, assignment)  # the grant is gone: lease it afresh
        self._s.lease_ends[assignment.grant_key] = expires_at

    def _target_of(self, assignment: ResolvedAssignment | None) -> TargetStatus | None:
        """The target an assignment grants, of a request naming several (None: the only one)."""
        if assignment is None:
            return None
        for status in self._s.view.targets:
            if self._s.assignments.get(status.name) == assignment:
                return status
        return None

    # --- applying decisions (already checked) ----------------------------------------------------

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

    def _steps_detail(self) -> dict[str, Any]:
        """The approval steps for an audit event: each with who may approve and who counts."""
        steps = self._s.view.approval_steps
        if not steps:
            return {}
        return {"approval_steps": [step.model_dump(mode="json") for step in steps]}

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

    def _approval_rule(self, input: ApproveInput) -> None:
        if input.break_glass:
            policy.check_break_glass(self._s.view, self._flow, input.actor, input.comment)
        else:
            policy.check_approve(self._s.view, self._flow, input.actor)

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
            result = await workflow.execute_activity(
                names.CHECK_APPROVAL_HOOK,
                ApprovalHookInput(hooks=self._flow.hooks, event=event),
                result_type=ApprovalHookResult,
                start_to_close_timeout=names.HOOKS_ACTIVITY_TIMEOUT,
                retry_policy=names.HOOKS_RETRY,
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

    def _apply_deny(self, input: DenyInput) -> None:
        self._decide(input.actor, RequestState.DENIED, f"denied by {input.actor.display}")
        self._emit("request.denied", input.actor, comment=input.comment)

    def _apply_cancel(self, input: CancelInput) -> None:
        self._decide(input.actor, RequestState.CANCELLED, f"cancelled by {input.actor.display}")
        self._emit("request.cancelled", input.actor, comment=input.comment)

    def _apply_revoke(self, input: RevokeInput) -> None:
        self._s.revoked_by = input

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

    def _signalled(self, decision: str, input: DecisionInput, rule, apply) -> None:
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

    # --- state, events and the Temporal UI ---------------------------------------------------------

    @property
    def _state(self) -> RequestState:
        return self._s.view.state

    @property
    def _flow(self):
        return self._s.input.flow

    def _total_duration(self) -> timedelta:
        view = self._s.view
        return view.duration + sum((e.duration for e in view.extensions), timedelta(0))

    def _set_state(self, state: RequestState) -> None:
        self._s.view.state = state
        self._publish()

    def _finish(self, state: RequestState, reason: str) -> None:
        self._s.view.ended_at = workflow.now()
        self._s.view.end_reason = reason
        self._set_state(state)

    def _publish(self) -> None:
        """Keep the Temporal UI's columns and details current."""
        view = self._s.view
        updates = [
            names.SA_REQUESTER.value_set(view.requester.email),
            names.SA_FLOW.value_set(view.flow),
            names.SA_TARGET.value_set(view.target),
            names.SA_STATE.value_set(view.state.value),
        ]
        if self._v6:  # only what changed: the start set them all, and each write is an event
            updates.append(names.SA_APPROVERS.value_set(sorted(view.approvers)))
            current = workflow.info().typed_search_attributes
            # An empty list is how Temporal keeps "none": the same as never set.
            updates = [u for u in updates if (current.get(u.key) or None) != (u.value or None)]
        if updates:
            workflow.upsert_search_attributes(updates)
        workflow.set_current_details(_details(view))

    def _emit(
        self, type: EventType, actor: Actor | None, on: TargetStatus | None = None, **detail
    ) -> None:
        """Record a lifecycle event; `on`: the one target it is about, of a request naming
        several (its `target`; otherwise the request's)."""
        self._s.event_seq += 1
        event = self._event(str(self._s.event_seq), type, actor, on=on, **detail)
        self._s.outbox.append(event)
        self._s.views.append(self._s.view.model_copy(deep=True))
        count(names.METRIC_EVENTS, "Keycard audit events made", type=type, flow=event.flow)
        # Into the history now, whatever any audit destination is doing: `keycard audit export`.
        # An idle round with a lane in it starts in this very task with this event in its input,
        # which history keeps: then that is the record, and a memo would only repeat it.
        if not (self._v6 and not self._round_in_flight and self._in_rounds()):
            workflow.upsert_memo({names.AUDIT_MEMO_KEY: event})

    async def _short_call(self, activity: str, arg: Any, **options: Any) -> Any:
        """A short call (an AWS lookup, a signal handed to Temporal) as a local activity: it runs in
        the workflow task that asks for it, sparing a round trip through the task queue and five
        history events. Requests started before run it as an activity, as their histories say."""
        if self._patched(names.PATCH_LOCAL_CALLS):
            return await local_call(activity, arg, **options)
        return await workflow.execute_activity(activity, arg, **options)

    def _lease_drop_notice(self, assignment: ResolvedAssignment | None = None) -> LeaseDropNotice:
        """The `access.ended` the grant reports for this request if it must drop the lease (the
        request terminated): made here, where the request's context is, with an id of its own
        (one per target, for a request naming several)."""
        on = self._target_of(assignment)
        sequence = "lease-dropped" if on is None else f"lease-dropped:{on.name}"
        event = self._event(sequence, "access.ended", None, on=on)
        return LeaseDropNotice(
            event=event.model_copy(update={"state": RequestState.ENDED}),
            destinations=list(self._s.input.audit_destinations),
        )

    def _event(
        self,
        sequence: str,
        type: EventType,
        actor: Actor | None,
        on: TargetStatus | None = None,
        **detail,
    ) -> LifecycleEvent:
        view = self._s.view
        info = workflow.info()
        target = TargetRef(
            name=view.target,
            label=view.target_label,
            strategy=view.strategy,
            settings=view.target_settings,
        )
        if on is not None:
            target = TargetRef(
                name=on.name, label=on.label, strategy=view.strategy, settings=on.settings
            )
        return LifecycleEvent(
            id=f"{info.workflow_id}/{sequence}",
            type=type,
            time=workflow.now(),
            request_id=view.id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            actor=actor,
            requester=view.requester,
            flow=view.flow,
            target=target,
            duration=view.duration,
            reason=view.reason,
            fields=view.fields,
            state=view.state,
            detail=detail,
        )

    def _delivered(self) -> bool:
        events = len(self._s.outbox)
        observed = self._s.observed == events or not self._flow.hooks
        return (
            self._s.notified == events
            and observed
            and all(
                self._s.audit_sent.get(d, 0) == events for d in self._s.input.audit_destinations
            )
        )

    async def _deliver_audit(self) -> None:
        """Every audit destination gets every event, in order, at its own pace: one that is down
        delays only its own delivery, never the access and never the other destinations."""
        destinations = self._s.input.audit_destinations
        await asyncio.gather(*(self._deliver_audit_to(d) for d in destinations))

    async def _deliver_audit_to(self, destination: str) -> None:
        sent = self._s.audit_sent
        while True:
            await wait_until(lambda: sent.get(destination, 0) < len(self._s.outbox))
            start = sent.get(destination, 0)
            batch = self._s.outbox[start : start + names.AUDIT_BATCH_MAX]
            await workflow.execute_activity(
                names.DELIVER_AUDIT,
                AuditBatch(destination=destination, events=batch),
                start_to_close_timeout=names.DELIVERY_TIMEOUT,
                retry_policy=names.DELIVERY_RETRY,
                summary=f"audit → {destination}",
            )
            sent[destination] = start + len(batch)

    async def _deliver_notifications(self) -> None:
        """Tell people, in order; a chat outage delays the messages, never the access."""
        while True:
            await wait_until(lambda: self._s.notified < len(self._s.outbox))
            index = self._s.notified
            result = await workflow.execute_activity(
                names.SEND_NOTIFICATION,
                Notification(
                    event=self._s.outbox[index],
                    view=self._s.views[index],
                    messages=self._s.messages,
                    flow=self._flow,
                ),
                result_type=NotificationResult,
                start_to_close_timeout=names.DELIVERY_TIMEOUT,
                retry_policy=names.DELIVERY_RETRY,
            )
            self._s.messages = result.messages
            self._s.notified += 1

    # Delivery in rounds (PATCH_V6): one activity takes the new events to every lane that keeps
    # up; a lane that fails in a round catches up alone with the per-lane activities below, then
    # rejoins. Each lane's progress is its own cursor, as before.

    def _cursor(self, lane: str) -> int:
        if lane == names.NOTIFY_LANE:
            return self._s.notified
        return self._s.audit_sent.get(lane, 0)

    def _advance(self, lane: str, sent: int) -> None:
        if lane == names.NOTIFY_LANE:
            self._s.notified = sent
        else:
            self._s.audit_sent[lane] = sent

    def _in_rounds(self) -> list[str]:
        lanes = [*self._s.input.audit_destinations, names.NOTIFY_LANE]
        return [lane for lane in lanes if lane not in self._s.lagging]

    def _behind_in_rounds(self) -> list[str]:
        return [lane for lane in self._in_rounds() if self._cursor(lane) < len(self._s.outbox)]

    async def _deliver_in_rounds(self) -> None:
        while True:
            await wait_until(lambda: bool(self._behind_in_rounds()))
            lanes = self._behind_in_rounds()
            first = min(self._cursor(lane) for lane in lanes)
            events = self._s.outbox[first : first + names.AUDIT_BATCH_MAX]
            notify_from = self._s.notified if names.NOTIFY_LANE in lanes else None
            self._round_in_flight = True
            try:
                result = await workflow.execute_activity(
                    names.DELIVER_ROUND,
                    DeliveryRound(
                        first=first,
                        events=events,
                        audit={d: self._cursor(d) for d in lanes if d != names.NOTIFY_LANE},
                        notify_from=notify_from,
                        views=(
                            self._s.views[notify_from : first + len(events)]
                            if notify_from is not None
                            else []
                        ),
                        messages=self._s.messages if notify_from is not None else [],
                        flow=self._flow if notify_from is not None else None,
                    ),
                    result_type=DeliveryRoundResult,
                    start_to_close_timeout=names.ROUND_TIMEOUT,
                    retry_policy=names.DELIVERY_RETRY,
                    summary=f"deliver {len(events)} event(s)",
                )
            finally:
                self._round_in_flight = False
            outcomes = dict(result.audit)
            if result.notify is not None:
                outcomes[names.NOTIFY_LANE] = result.notify
                self._s.messages = result.messages
            for lane, outcome in outcomes.items():
                self._advance(lane, max(outcome.sent, self._cursor(lane)))
                if outcome.error is not None and lane not in self._s.lagging:
                    self._s.lagging.append(lane)

    async def _catch_up(self, lane: str) -> None:
        """A lane that fell behind in a round, delivered alone, retried until it succeeds."""
        while True:
            await wait_until(
                lambda: lane in self._s.lagging and self._cursor(lane) < len(self._s.outbox)
            )
            start = self._cursor(lane)
            if lane == names.NOTIFY_LANE:
                result = await workflow.execute_activity(
                    names.SEND_NOTIFICATION,
                    Notification(
                        event=self._s.outbox[start],
                        view=self._s.views[start],
                        messages=self._s.messages,
                        flow=self._flow,
                    ),
                    result_type=NotificationResult,
                    start_to_close_timeout=names.DELIVERY_TIMEOUT,
                    retry_policy=names.DELIVERY_RETRY,
                )
                self._s.messages = result.messages
                self._advance(lane, start + 1)
            else:
                batch = self._s.outbox[start : start + names.AUDIT_BATCH_MAX]
                await workflow.execute_activity(
                    names.DELIVER_AUDIT,
                    AuditBatch(destination=lane, events=batch),
                    start_to_close_timeout=names.DELIVERY_TIMEOUT,
                    retry_policy=names.DELIVERY_RETRY,
                    summary=f"audit → {lane}",
                )
                self._advance(lane, start + len(batch))
            if self._cursor(lane) == len(self._s.outbox):
                self._s.lagging.remove(lane)  # caught up: back in the rounds

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
                    result = await workflow.execute_activity(
                        names.RUN_OBSERVER_HOOKS,
                        ObserveInput(
                            hooks=hooks_file,
                            names=observers,
                            event=hook_event(
                                observers[0], self._s.views[index], event.actor, comment
                            ),
                        ),
                        result_type=ObserveResult,
                        start_to_close_timeout=names.HOOKS_ACTIVITY_TIMEOUT,
                        retry_policy=names.HOOKS_RETRY,
                    )
                except ActivityError as err:
                    failure = HookFailure(hook=", ".join(observers), error=root_message(err))
                    result = ObserveResult(failures=[failure])
                for failure in result.failures:
                    self._hook_failed(failure, f"observing {event.type}", tell=False)
            self._s.observed += 1


def _update_error(refusal: policy.PolicyError) -> ApplicationError:
    """An update refused after its validator accepted it; the refusal is already in the trail,
    which the second detail tells the front door (it reports validator refusals itself)."""
    return ApplicationError(
        refusal.message,
        refusal.kind.value,
        names.REFUSAL_AUDITED,
        type=refusal.code,
        non_retryable=True,
    )


def _requester_actor(input: AccessRequestInput) -> Actor:
    return Actor(
        email=input.requester.email,
        via=input.via,
        slack_user_id=input.requester.slack_user_id,
        name=input.requester.name,
    )


def _target_status(target: Target) -> TargetStatus:
    return TargetStatus(
        name=target.name, label=target.display, settings=policy.target_settings(target)
    )


def _assignment_spec(input: AccessRequestInput, target: Target | None = None) -> AssignmentSpec:
    target = target or input.target
    settings = policy.target_settings(target)
    spec = AssignmentSpec(
        strategy=input.flow.strategy,
        principal_email=input.requester.email,
        account_id=settings.get("account_id"),
        permission_set=settings.get("permission_set"),
        group=settings.get("group"),
    )
    if not STRATEGIES[spec.strategy].aws:  # the target and the flow's settings, as they are
        spec.target, spec.settings = target.name, settings
        spec.options = strategy_options(input.flow)
    return spec


def _details(view: RequestView) -> str:
    lines = [f"**{view.state.value}** — {view.summary}"]
    if view.approvals:
        who = ", ".join(a.actor.display for a in view.approvals)
        lines.append(f"Approvals: {len(view.approvals)} of {view.approvals_required} ({who})")
    elif view.state is RequestState.PENDING:
        lines.append(
            f"Waiting for {view.approvals_required} approval(s) from: "
            + (", ".join(view.approvers) or "an admin")
        )
    for step in view.approval_steps:
        met = f"met by {', '.join(step.approved_by)}" if step.satisfied else "open"
        lines.append(f"Step {step.name}: {len(step.approved_by)} of {step.count}, {met}")
    for target in view.targets:
        why = f": {target.error}" if target.error else ""
        lines.append(f"Target {target.label}: {target.state}{why}")
    if view.expires_at and not view.state.finished:
        lines.append(f"Access until {view.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    if view.end_reason:
        lines.append(f"Ended: {view.end_reason}")
    if view.break_glass:
        lines.append("**BREAK-GLASS**: the requester approved their own request; review it")
    lines.extend(f"Note: {note}" for note in view.notes)
    return "\n".join(lines)
