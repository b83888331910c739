"""SessionPolicyWorkflow: the single writer of one permission set's session-ending deny entries
(or of one customer-managed policy's, in every account, when a flow names one)."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

from workflows.waiting import run_through_cancel, wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.failures import root_message
    from keycard.models import (
        EndSessions,
        SessionPolicyInput,
        SessionPolicyResult,
        SessionPolicyView,
        SessionPolicyWrite,
        SessionsAnswer,
    )

# After a failed pruning write, the writer tries again this much later (or at the next ending).
PRUNE_RETRY_PAUSE = timedelta(minutes=5)


@workflow.defn(name=names.SESSION_POLICY_WORKFLOW)
class SessionPolicyWorkflow:
    """One per permission set, id `sessions:<instance id>:<permission set id>`.

    Signal `sessions.end` (EndSessions): deny a person's sessions in an account issued before a
    time. Every request waiting when a write starts goes into that one write (keycard/
    session_policy.py merges them), then the permission set is provisioned to their accounts and,
    once AWS reports success, each sender hears `sessions.ended` (SessionsAnswer, with the error if
    the write failed). Grants of one permission set end together in one correct policy, because
    nothing else here writes it.

    Entries expire: a durable timer wakes the writer once the permission set's session duration
    has passed since the oldest entry's time (every session it could match has ended), and a
    pruning write removes what has expired. With no entry left and nothing asked, it ends; the
    next `sessions.end` (signal-with-start) begins a new run.
    With a customer-managed policy (a flow's `end_sessions_policy`) the writer is the policy's, id
    `sessions:<instance id>:policy:<path><name>`: each account's copy of the policy holds that
    account's entries, written through a role in the account, and nothing is provisioned.
    Query: `status` -> SessionPolicyView.
    """

    @workflow.init
    def __init__(self, input: SessionPolicyInput) -> None:
        self._view = input.carried or SessionPolicyView(
            instance_arn=input.instance_arn,
            permission_set_arn=input.permission_set_arn,
            policy=input.policy,
        )
        self._telling = 0
        self._prune_after: datetime | None = None  # a failed pruning write waits until then

    @workflow.run
    async def run(self, input: SessionPolicyInput) -> SessionPolicyView:
        return await run_through_cancel(self._run(input), self._cancel_ignored)

    def _cancel_ignored(self, reason: str) -> None:
        workflow.logger.warning(
            "cancel request ignored (%s): the writer ends once its deny entries have expired",
            reason or "no reason given",
        )

    async def _run(self, input: SessionPolicyInput) -> SessionPolicyView:
        while True:
            if self._view.waiting:
                await self._write()
            elif self._prune_due():
                await self._prune()
            elif not self._view.denied:
                await self._settle()
                if not self._view.waiting:
                    return self._view
            elif workflow.info().is_continue_as_new_suggested():
                await self._settle()
                workflow.continue_as_new(
                    SessionPolicyInput(
                        instance_arn=input.instance_arn,
                        permission_set_arn=input.permission_set_arn,
                        policy=input.policy,
                        carried=self._view,
                    )
                )
            else:
                with contextlib.suppress(TimeoutError):
                    await wait_until(lambda: bool(self._view.waiting), timeout=self._until_prune())

    @workflow.signal(name=names.SESSIONS_END)
    def end(self, request: EndSessions) -> None:
        self._view.waiting.append(request)
        known = request.permission_set_arn
        if known and known not in (self._view.permission_set_arn, *self._view.permission_sets):
            self._view.permission_sets.append(known)

    @workflow.query
    def status(self) -> SessionPolicyView:
        return self._view

    # --- the single writer -----------------------------------------------------------------------

    async def _write(self) -> None:
        batch = list(self._view.waiting)
        error = None
        try:
            self._learn(await self._call(names.END_SESSIONS, batch))
        except ActivityError as err:
            error = root_message(err)
            self._view.error = error
            workflow.logger.error("ending sessions failed: %s", error)
        del self._view.waiting[: len(batch)]
        for request in batch:
            self._tell(request.reply_to, SessionsAnswer(token=request.token, error=error))

    async def _prune(self) -> None:
        try:
            self._learn(await self._call(names.PRUNE_SESSIONS, []))
        except ActivityError as err:
            self._view.error = root_message(err)
            self._prune_after = workflow.now() + PRUNE_RETRY_PAUSE
            workflow.logger.error("pruning expired deny entries failed: %s", self._view.error)
            return
        self._prune_after = None

    async def _call(self, activity: str, batch: list[EndSessions]) -> SessionPolicyResult:
        result: SessionPolicyResult = await workflow.execute_activity(
            activity,
            SessionPolicyWrite(
                instance_arn=self._view.instance_arn,
                permission_set_arn=self._view.permission_set_arn,
                revocations=batch,
                session_duration=self._view.session_duration,
                policy=self._view.policy,
                permission_sets=self._view.permission_sets,
                accounts=self._view.accounts,
            ),
            result_type=SessionPolicyResult,
            start_to_close_timeout=names.SESSIONS_TIMEOUT,
            schedule_to_close_timeout=names.SESSIONS_WAIT - timedelta(minutes=1),
            heartbeat_timeout=names.SESSIONS_HEARTBEAT,
            retry_policy=names.SESSIONS_RETRY,
        )
        return result

    def _learn(self, result: SessionPolicyResult) -> None:
        self._view.writes += 1
        self._view.error = None
        self._view.denied = result.denied
        if result.accounts is not None:  # a customer-managed policy's: where entries are left
            self._view.accounts = result.accounts
        recorded = self._view.session_duration or timedelta(0)
        self._view.session_duration = max(result.session_duration, recorded)

    def _next_prune(self) -> datetime | None:
        if not self._view.denied or self._view.session_duration is None:
            return None
        due = min(self._view.denied.values()) + self._view.session_duration
        due += names.SESSIONS_PRUNE_GRACE
        return max(due, self._prune_after) if self._prune_after else due

    def _prune_due(self) -> bool:
        due = self._next_prune()
        return due is not None and due <= workflow.now()

    def _until_prune(self) -> timedelta | None:
        due = self._next_prune()
        return None if due is None else max(due - workflow.now(), timedelta(seconds=1))

    def _tell(self, workflow_id: str, answer: SessionsAnswer) -> None:
        self._telling += 1
        asyncio.create_task(self._send(workflow_id, answer))  # noqa: RUF006

    async def _send(self, workflow_id: str, answer: SessionsAnswer) -> None:
        try:
            await workflow.get_external_workflow_handle(workflow_id).signal(
                names.SESSIONS_ENDED, answer
            )
        except FailureError as err:
            workflow.logger.info("%s did not hear that its sessions ended: %s", workflow_id, err)
        finally:
            self._telling -= 1

    async def _settle(self) -> None:
        await wait_until(lambda: workflow.all_handlers_finished() and self._telling == 0)
