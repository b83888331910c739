"""Before anyone decides: the AWS check of requester and target, the flow's request hooks and
Slack approver groups, waiting for the decision with reminders and escalation, and a scheduled
start."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.request import calls
from workflows.request.hook_steps import HookSteps
from workflows.request.record import assignment_spec
from workflows.waiting import wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import policy
    from keycard import temporal as names
    from keycard.durations import format_duration
    from keycard.failures import root_message, root_type
    from keycard.models import (
        AssignmentSpec,
        RequestState,
        ResolvedAssignment,
        ResolveInput,
        SlackApproversInput,
        TargetStatus,
    )
    from keycard.strategies import activity_name


class Asking(HookSteps):
    async def _resolve(self) -> bool:
        """Check the requester and target exist in AWS before anyone is asked to approve."""
        if self._multi:
            return await self._resolve_each()
        outcome = await self._resolve_target(assignment_spec(self._s.input))
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
            *(self._resolve_target(assignment_spec(input, t)) for t in input.targets)
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
            result: ResolvedAssignment | ActivityError = await self._short_call(
                activity_name(spec.strategy, "resolve"),
                ResolveInput(spec=spec),
                result_type=ResolvedAssignment,
                start_to_close_timeout=names.RESOLVE_TIMEOUT,
                retry_policy=names.RESOLVE_RETRY,
            )
            return result
        except ActivityError as err:
            return err

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
            result = await calls.resolve_slack_approvers(SlackApproversInput(groups=groups))
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

    async def _wait_for_decision(self) -> None:
        flow = self._flow
        if self._state is RequestState.PENDING and self._patched("request-pending-event"):
            detail: dict[str, Any] = {"approvers": list(self._s.view.approvers)}
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
        steps: dict[str, Any] = {}
        if self._s.view.approval_steps:
            steps["still_needed"] = policy.needed(self._s.view)
        self._emit(
            "request.reminded",
            None,
            reminder=number,
            waited=format_duration(after),
            approvers=self._s.view.can_still_approve(),
            **steps,
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
