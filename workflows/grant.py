"""GrantWorkflow: the single writer of one assignment, shared by every request that leases it.

One class, longer than most modules: it is the one place that decides when access to an
assignment exists, and its invariant (the access exists while any lease holds it, and is removed
once none does, sessions ended as the leases asked) is easiest to check read whole, beside the
golden histories and the chaos run that test it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, FailureError

from workflows.calls import local_call
from workflows.waiting import run_through_cancel, wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import session_policy
    from keycard import temporal as names
    from keycard.config import SessionsPolicy
    from keycard.durations import format_duration
    from keycard.failures import root_message
    from keycard.models import (
        AuditBatch,
        EndSessions,
        EndSessionsInput,
        GrantAndTell,
        GrantInput,
        GrantTold,
        GrantView,
        LeaseDropNotice,
        LeaseFailed,
        LeaseGranted,
        LeaseInput,
        LeaseRequest,
        LeaseResult,
        LeaseReturn,
        LifecycleEvent,
        Reconcile,
        ReleaseInput,
        ReleaseResult,
        ResolvedAssignment,
        SessionsAnswer,
        SessionScope,
        SessionsEnded,
        WaitingLease,
    )
    from keycard.strategies import activity_name

# What a grant tells a request about its lease.
LeaseAnswer = LeaseGranted | LeaseFailed | ReleaseResult


@workflow.defn(name=names.GRANT_WORKFLOW)
class GrantWorkflow:
    """One per (target, principal), id `grant:<grant key>`.

    Signals: `lease.take` (LeaseRequest) takes a lease, or moves the end of one already held;
    `lease.return` (LeaseReturn) gives it back. The grant answers each request by signal:
    `lease.granted` (LeaseGranted) once the access exists (sent by the `leases.grant` activity
    that made it, the moment the cloud confirms; by the grant for a lease that joins access
    already there), `lease.failed` (LeaseFailed), and
    `lease.returned` (ReleaseResult) once a returned lease's outcome is known (`pending` while a
    removal is still being retried). A request that no longer exists cannot be signalled: its
    lease is dropped at once.
    Updates `acquire` and `release` are the same conversation for requests that took their lease
    before lease signals existed.
    Query: `status` -> GrantView.

    Signal `sessions.ended` (SessionsAnswer) is the permission set's SessionPolicyWorkflow saying
    that the sessions of a removed access are denied (workflows/sessions.py).

    The first lease checks whether the access already exists: if so it is standing access, which
    Keycard records and never removes. When a lease held since the access was made asked to end
    sessions (the flow's end_sessions), a removal also has the permission set deny every session
    of the person in the account issued before it, and the access is not made again before that
    moment has passed, so the deny never touches a later grant's sessions. When no lease is left (returned, or past its end), the
    access is removed; removal retries in capped rounds until AWS confirms it. "Granted" is only
    ever said after a grant that finished after any removal began, so a lease taken while the
    access is being removed waits for the removal and is then granted afresh.
    """

    @workflow.init
    def __init__(self, input: GrantInput) -> None:
        self._view = GrantView(assignment=input.assignment)
        if input.carried is not None:  # continued-as-new: pick up exactly where we were
            self._view = input.carried
        self._failed: dict[str, str] = {}  # request id -> why its lease could not be granted
        self._answers: dict[str, ReleaseResult] = {}  # for `release` updates awaiting one
        self._by_update: set[str] = set()  # requests that talk by update: never signalled
        self._telling = 0  # signals to requests still in flight
        self._removing = False
        self._session_answers: dict[str, SessionsAnswer] = {}  # token -> the writer's answer
        self._told: GrantTold | None = None  # what leases.grant told, until the leases are made
        # Here, not in `run`: the lease of a signal-with-start is handled before `run` begins.
        # One marker stands for the patches before it (keycard/temporal.py, PATCH_V6 to V12).
        self._v12 = workflow.patched(names.PATCH_V12)
        self._v9 = self._v12 or workflow.patched(names.PATCH_V9)
        self._v8 = self._v9 or workflow.patched(names.PATCH_V8)
        self._v6 = self._v8 or workflow.patched(names.PATCH_V6)
        self._by_signal = self._v6 or workflow.patched(names.PATCH_LEASE_SIGNALS)
        # Legacy `acquire`/`release` updates wait for the work in hand (workflows/runner.py).
        self.keycard_updates_last = self._v6 or workflow.patched(names.PATCH_UPDATES_LAST)

    @workflow.run
    async def run(self, input: GrantInput) -> GrantView:
        # The only writer of the assignment ends when its leases do: a cancel request from
        # Temporal (the UI's button) never interrupts a grant or a removal, and is ignored.
        main = self._run_by_signal(input) if self._by_signal else self._run_by_update(input)
        return await run_through_cancel(main, self._cancel_ignored)

    def _cancel_ignored(self, reason: str) -> None:
        workflow.logger.warning(
            "cancel request ignored (%s): the grant ends when its last lease does; "
            "revoke or cancel the requests instead",
            reason or "no reason given",
        )

    async def _run_by_signal(self, input: GrantInput) -> GrantView:
        while True:
            self._drop_ended_leases()
            if self._wanted() and not self._view.assigned:
                await self._assign()
            elif self._view.waiting:
                self._grant_waiting()  # the access exists: joining costs no AWS call
            elif not self._leases and self._view.assigned:
                await self._unassign()
            else:
                self._answer_returns()
                if not self._wanted():
                    if await self._idle_ends():
                        return self._view
                elif workflow.info().is_continue_as_new_suggested():
                    await self._settle()
                    workflow.continue_as_new(
                        GrantInput(assignment=input.assignment, carried=self._view)
                    )
                else:
                    await self._wait(self._needs_work, self._until_next_lease_end())

    # --- signals, updates and query --------------------------------------------------------------

    @workflow.signal(name=names.LEASE_TAKE)
    def take(self, lease: LeaseRequest) -> None:
        if not self._by_signal:
            self._take_by_update_loop(lease)
            return
        self._by_update.discard(lease.request_id)
        self._returning_drop(lease.request_id)
        if self._v8 and lease.end_sessions:
            self._view.end_sessions = True
            self._view.sessions_policy = lease.sessions_policy or self._view.sessions_policy
        if lease.drop_notice is not None:
            self._view.drop_notices[lease.request_id] = lease.drop_notice
        if lease.request_id in self._leases and lease.expires_at is not None:
            self._leases[lease.request_id] = lease.expires_at  # extended
        elif lease.request_id not in self._leases:
            self._view.waiting[lease.request_id] = lease

    @workflow.signal(name=names.LEASE_RETURN)
    def give_back(self, lease: LeaseReturn) -> None:
        if not self._by_signal:
            self._return_to_update_loop(lease)
            return
        self._return(lease.request_id)

    @workflow.signal(name=names.GRANT_RECONCILE)
    def reconcile(self, request: Reconcile) -> None:
        """The drift sweep saw the access in AWS with no lease of ours behind it: remove it, as a
        lease's end would, unless a lease (or standing access) holds it by now."""
        if not self._v8:
            return
        if self._wanted() or self._view.standing:
            workflow.logger.info("drift sweep: the access is held again; nothing to remove")
            return
        self._view.assigned = True
        self._view.standing = False
        self._view.end_sessions = self._view.end_sessions or request.end_sessions
        if request.end_sessions:
            self._view.sessions_policy = request.sessions_policy or self._view.sessions_policy
        self._view.reconciling.append(request.notice)

    @workflow.signal(name=names.SESSIONS_ENDED)
    def sessions_ended(self, answer: SessionsAnswer) -> None:
        self._session_answers[answer.token] = answer

    @workflow.update(name=names.GRANT_ACQUIRE)
    async def acquire(self, input: LeaseInput) -> LeaseResult:
        if not self._by_signal:
            return await self._acquire_in_update_loop(input)
        self._by_update.add(input.request_id)
        self._failed.pop(input.request_id, None)
        self.take(
            LeaseRequest(
                request_id=input.request_id,
                duration=input.expires_at - workflow.now(),
                expires_at=input.expires_at,
            )
        )
        await wait_until(
            lambda: input.request_id in self._leases or input.request_id in self._failed
        )
        if input.request_id in self._failed:
            raise ApplicationError(
                self._failed[input.request_id], type="GrantFailed", non_retryable=True
            )
        return LeaseResult(
            standing=bool(self._view.standing),
            granted_at=self._view.assigned_at or workflow.now(),
        )

    @acquire.validator
    def _validate_acquire(self, input: LeaseInput) -> None:
        if input.expires_at <= workflow.now():
            raise ApplicationError(
                f"lease for {input.request_id} would already have expired", type="LeaseExpired"
            )

    @workflow.update(name=names.GRANT_RELEASE)
    async def release(self, input: ReleaseInput) -> ReleaseResult:
        if not self._by_signal:
            return await self._release_in_update_loop(input)
        self._by_update.add(input.request_id)
        self._answers.pop(input.request_id, None)
        self._return(input.request_id)
        with contextlib.suppress(TimeoutError):
            await wait_until(lambda: input.request_id in self._answers, timeout=names.RELEASE_WAIT)
        return self._answers.pop(input.request_id, None) or self._outcome(pending=True)

    @workflow.query
    def status(self) -> GrantView:
        return self._view

    # --- the single writer -----------------------------------------------------------------------

    @property
    def _leases(self) -> dict[str, datetime]:
        return self._view.leases

    def _wanted(self) -> bool:
        return bool(self._leases or self._view.waiting)

    def _needs_work(self) -> bool:
        return bool(self._view.waiting or self._view.returning) or not self._leases

    async def _assign(self) -> None:
        """Create the access (unless it is standing), then grant every lease waiting for it."""
        not_before = self._view.no_grant_before
        if not_before is not None and workflow.now() < not_before:
            await workflow.sleep(not_before - workflow.now())  # the ended sessions' deny time
        if not await self._create():
            self._view.end_sessions = False
            self._view.sessions_policy = None
            for request_id in self._view.waiting:
                self._failed[request_id] = self._view.error or "granting access failed"
                self._tell(
                    request_id, names.LEASE_FAILED, LeaseFailed(error=self._failed[request_id])
                )
            self._view.waiting.clear()
            self._leases.clear()
            return
        self._grant_waiting()

    def _grant_waiting(self) -> None:
        now = workflow.now()
        told, self._told = self._told, None
        for request_id, lease in self._view.waiting.items():
            if told is not None and request_id in told.told:
                # leases.grant told it already, from the same moment: the ends agree. A renewal
                # that came meanwhile (an extension) carries its own end.
                self._leases[request_id] = lease.ends(told.granted_at)
                continue
            ends = lease.ends(now)
            self._leases[request_id] = ends
            granted = LeaseGranted(
                granted_at=now, expires_at=ends, standing=bool(self._view.standing)
            )
            self._tell(request_id, names.LEASE_GRANTED, granted)
        self._view.waiting.clear()
        for request_id in told.unreachable if told is not None else ():
            if request_id in self._leases:
                self._drop(request_id, "its request is not running")

    async def _create(self) -> bool:
        assignment = self._view.assignment
        making = False  # leases.grant was called
        try:
            exists = await self._call("exists", assignment, result_type=bool)
            if exists:
                self._view.standing = True
                workflow.logger.info("standing access found; it will be left in place")
            elif self._v9:
                self._view.standing = False
                making = True
                self._told = await self._grant_and_tell(assignment)
            else:
                self._view.standing = False
                await self._call("grant", assignment)
        except ActivityError as err:
            self._view.error = root_message(err)
            workflow.logger.warning("grant failed: %s", self._view.error)
            if making:
                # An attempt may have made the access (and told a request) before a later one
                # failed: remove whatever is there, as the end of a lease would.
                self._view.assigned = True
            return False
        self._view.assigned = True
        self._view.error = None
        self._view.assigned_at = self._told.granted_at if self._told else workflow.now()
        return True

    async def _grant_and_tell(self, assignment: ResolvedAssignment) -> GrantTold:
        """The strategy's grant, in an activity that tells the waiting requests itself."""
        waiting = [
            WaitingLease(
                request_id=request_id, duration=lease.duration, expires_at=lease.expires_at
            )
            for request_id, lease in self._view.waiting.items()
            if request_id not in self._by_update
        ]
        result: GrantTold = await workflow.execute_activity(
            names.GRANT_AND_TELL,
            GrantAndTell(assignment=assignment, waiting=waiting),
            result_type=GrantTold,
            start_to_close_timeout=names.GRANT_TIMEOUT,
            heartbeat_timeout=names.GRANT_HEARTBEAT,
            retry_policy=names.GRANT_RETRY,
            summary=activity_name(assignment.spec.strategy, "grant"),
        )
        return result

    async def _unassign(self) -> None:
        """Remove the access, retrying in capped rounds until AWS confirms; standing access is
        not ours to remove. Leases taken meanwhile wait: the loop grants them afresh after."""
        self._removing = True
        removed = not self._view.standing
        # What the leases being removed asked for, before any lease taken meanwhile adds to it.
        ending, policy = self._view.end_sessions, self._view.sessions_policy
        if removed:
            pause = names.REVOKE_ROUND_PAUSE_MIN
            while True:
                try:
                    await self._call("revoke", self._view.assignment)
                except ActivityError as err:
                    self._view.revoke_failures += 1
                    self._view.error = root_message(err)
                    workflow.logger.error(
                        "revoking access failed %d round(s), retrying in %s: %s",
                        self._view.revoke_failures,
                        pause,
                        self._view.error,
                    )
                    if self._by_signal:
                        self._answer_returns(pending=True)
                    await workflow.sleep(pause)
                    pause = min(pause * 2, names.REVOKE_ROUND_PAUSE_MAX)
                    continue
                break
        self._view.assigned = False
        self._view.assigned_at = None
        self._view.error = None
        self._removing = False
        sessions = None
        strategy = self._view.assignment.spec.strategy
        if not self._v12:
            ending, policy = self._view.end_sessions, self._view.sessions_policy
        if removed and ending and strategy in ("aws_sso", "aws_sso_group"):
            sessions = await self._end_sessions(policy)
        if self._v12:
            # Leases taken while this removal ran wait to be granted afresh: their wish to end
            # sessions is for their own end, and stays.
            waiting = [lease for lease in self._view.waiting.values() if lease.end_sessions]
            self._view.end_sessions = bool(waiting)
            self._view.sessions_policy = next(
                (lease.sessions_policy for lease in waiting if lease.sessions_policy), None
            )
        else:
            self._view.end_sessions = False
            self._view.sessions_policy = None
        for notice in self._view.reconciling:  # the drift sweep's removals, now done
            extra = {"removed": removed}
            if sessions is not None:
                extra["sessions_ended"] = sessions.ended
            self._audit_notice(notice, extra)
        self._view.reconciling.clear()
        if self._by_signal:
            self._answer_returns(removed=removed, sessions=sessions)

    async def _end_sessions(self, policy: SessionsPolicy | None) -> SessionsEnded | None:
        """Have each permission set's writer deny the person's sessions in the account issued
        before now (plus the clock margin), and wait for their word that the policy is in force:
        one permission set for aws_sso, every one the group is assigned for aws_sso_group.
        None when there was nothing to end."""
        assignment = self._view.assignment
        removed_at = workflow.now()
        denied_before = session_policy.ceil_second(removed_at + names.SESSIONS_CLOCK_MARGIN)
        self._view.no_grant_before = denied_before
        scopes: list[SessionScope] = []
        tokens: list[str] = []
        error = None
        try:
            scopes = await self._session_scopes()
            for scope in scopes:
                request = EndSessions(
                    token=str(workflow.uuid4()),
                    reply_to=workflow.info().workflow_id,
                    user_id=assignment.principal_id,
                    account_id=scope.account_id,
                    denied_before=denied_before,
                    permission_set_arn=scope.permission_set_arn,
                )
                await local_call(
                    names.REQUEST_END_SESSIONS,
                    EndSessionsInput(
                        instance_arn=scope.instance_arn,
                        permission_set_arn=scope.permission_set_arn,
                        request=request,
                        policy=policy,
                    ),
                    start_to_close_timeout=names.TAKE_LEASE_TIMEOUT,
                    retry_policy=names.TAKE_LEASE_RETRY,
                )
                tokens.append(request.token)
            await wait_until(
                lambda: all(token in self._session_answers for token in tokens),
                timeout=names.SESSIONS_WAIT,
            )
            errors = [self._session_answers.pop(token).error for token in tokens]
            error = "; ".join(e for e in errors if e) or None
        except ActivityError as err:
            error = root_message(err)
        except TimeoutError:
            error = (
                "the permission set's inline policy was not confirmed within "
                f"{format_duration(names.SESSIONS_WAIT)}"
            )
        if error is not None:
            workflow.logger.error("the ended access's sessions were not ended: %s", error)
        if not scopes and error is None:
            return None  # a group assigned no permission set: no session came from it
        first = scopes[0] if scopes else None
        return SessionsEnded(
            ended=error is None,
            permission_set_arn=first.permission_set_arn if first else "",
            account_id=first.account_id if first else "",
            denied_before=denied_before,
            seconds=(workflow.now() - removed_at).total_seconds(),
            error=error,
            scopes=scopes if assignment.spec.strategy != "aws_sso" else [],
            policy_arn=(
                policy.policy_arn(first.account_id, session_policy.partition(first.instance_arn))
                if policy is not None and first is not None
                else None
            ),
        )

    async def _session_scopes(self) -> list[SessionScope]:
        assignment = self._view.assignment
        if assignment.spec.strategy == "aws_sso":  # known here: no call
            return [
                SessionScope(
                    instance_arn=assignment.instance_arn or "",
                    permission_set_arn=assignment.permission_set_arn or "",
                    account_id=assignment.spec.account_id or "",
                )
            ]
        result: list[SessionScope] = await local_call(
            names.GROUP_SESSION_SCOPES,
            assignment,
            result_type=list[SessionScope],
            start_to_close_timeout=names.RESOLVE_TIMEOUT,
            retry_policy=names.RESOLVE_RETRY,
        )
        return result

    async def _call(
        self, operation: str, assignment: ResolvedAssignment, result_type: type | None = None
    ) -> Any:
        name = activity_name(assignment.spec.strategy, operation)  # type: ignore[arg-type]
        if operation == "exists" and (self._v6 or workflow.patched(names.PATCH_LOCAL_CALLS)):
            # One lookup: a local activity, run in the workflow task that asks for it.
            return await local_call(
                name,
                assignment,
                result_type=result_type,
                start_to_close_timeout=names.RESOLVE_TIMEOUT,
                retry_policy=names.GRANT_RETRY,
            )
        is_revoke = operation == "revoke"
        return await workflow.execute_activity(
            name,
            assignment,
            result_type=result_type,
            start_to_close_timeout=names.GRANT_TIMEOUT,
            heartbeat_timeout=names.GRANT_HEARTBEAT,
            retry_policy=names.REVOKE_ROUND_RETRY if is_revoke else names.GRANT_RETRY,
        )

    # --- leaseholders ----------------------------------------------------------------------------

    def _return(self, request_id: str) -> None:
        self._view.waiting.pop(request_id, None)
        self._leases.pop(request_id, None)
        self._view.drop_notices.pop(request_id, None)
        if request_id not in self._view.returning:
            self._view.returning.append(request_id)

    def _returning_drop(self, request_id: str) -> None:
        with contextlib.suppress(ValueError):
            self._view.returning.remove(request_id)

    def _outcome(
        self, removed: bool = False, pending: bool = False, sessions: SessionsEnded | None = None
    ) -> ReleaseResult:
        return ReleaseResult(
            sessions=sessions,
            removed=removed,
            remaining_leases=len(self._leases),  # holding the access; not those waiting for it
            standing=bool(self._view.standing),
            pending=pending,
            revoke_failures=self._view.revoke_failures,
            last_error=self._view.error,
        )

    def _answer_returns(
        self, removed: bool = False, pending: bool = False, sessions: SessionsEnded | None = None
    ) -> None:
        """Tell every request that returned its lease what became of the access (and its
        sessions); while a removal is still being retried (`pending`) they hear again when it is
        done."""
        outcome = self._outcome(removed=removed, pending=pending, sessions=sessions)
        for request_id in self._view.returning:
            if request_id in self._by_update:
                self._answers[request_id] = outcome
            else:
                self._tell(request_id, names.LEASE_RETURNED, outcome)
        if not pending:
            self._view.returning.clear()

    def _tell(self, request_id: str, signal: str, message: LeaseAnswer) -> None:
        """Signal a request without waiting: if it no longer exists, its lease is dropped."""
        if request_id in self._by_update:
            return
        self._telling += 1
        asyncio.create_task(self._send(request_id, signal, message))  # noqa: RUF006

    async def _send(self, request_id: str, signal: str, message: LeaseAnswer) -> None:
        # Which grant answers: a request naming several targets holds a lease on each.
        message = message.model_copy(update={"grant_key": self._view.assignment.grant_key})
        try:
            await workflow.get_external_workflow_handle(request_id).signal(signal, message)
        except FailureError as err:
            if request_id in self._leases or request_id in self._view.waiting:
                self._drop(request_id, f"its request cannot be reached ({err.message})")
        finally:
            self._telling -= 1

    def _drop(self, request_id: str, why: str) -> None:
        """Drop a lease its request will never return, and audit that on the request's behalf:
        the access goes with it unless another lease holds it."""
        workflow.logger.warning("dropping the lease of %s: %s", request_id, why)
        self._leases.pop(request_id, None)
        self._view.waiting.pop(request_id, None)
        notice = self._view.drop_notices.pop(request_id, None)
        if notice is None:
            return
        self._audit_notice(
            notice,
            {"reason": f"lease dropped by the grant: {why}", "other_leases": len(self._leases)},
        )

    def _audit_notice(self, notice: LeaseDropNotice, detail: dict[str, Any]) -> None:
        """Audit an event made elsewhere (a request's, the drift sweep's), stamped now."""
        event = notice.event.model_copy(
            update={"time": workflow.now(), "detail": {**notice.event.detail, **detail}}
        )
        self._telling += 1
        asyncio.create_task(self._audit(event, notice.destinations))  # noqa: RUF006

    async def _audit(self, event: LifecycleEvent, destinations: list[str]) -> None:
        try:
            await asyncio.gather(
                *(
                    workflow.execute_activity(
                        names.DELIVER_AUDIT,
                        AuditBatch(destination=destination, events=[event]),
                        start_to_close_timeout=names.DELIVERY_TIMEOUT,
                        retry_policy=names.DELIVERY_RETRY,
                        summary=f"audit → {destination}",
                    )
                    for destination in destinations
                )
            )
        finally:
            self._telling -= 1

    def _drop_ended_leases(self, grace: timedelta = names.LEASE_END_GRACE) -> None:
        """Drop every lease that ended `grace` ago and was not returned. Before lease signals,
        requests renewed their leases by activity and had ORPHAN_LEASE_GRACE to do it."""
        now = workflow.now()
        for request_id, ends in list(self._leases.items()):
            if ends + grace <= now:
                self._drop(
                    request_id, f"it ended at {ends:%Y-%m-%d %H:%M:%S} UTC and was not returned"
                )

    def _until_next_lease_end(self, grace: timedelta = names.LEASE_END_GRACE) -> timedelta | None:
        if not self._leases:
            return None
        deadline = min(self._leases.values()) + grace
        return max(deadline - workflow.now(), timedelta(seconds=1))

    async def _idle_ends(self) -> bool:
        """Nothing held and nothing assigned: end once every answer is out. A lease taken as we
        end is safe: Temporal refuses to complete a workflow with an unhandled signal, and a
        signal-with-start after the end starts a new grant."""
        await self._settle()
        return not self._wanted() and not self._view.assigned  # (a drift removal came meanwhile)

    async def _settle(self) -> None:
        await wait_until(lambda: workflow.all_handlers_finished() and self._telling == 0)

    async def _wait(self, condition: Callable[[], bool], timeout: timedelta | None) -> None:
        with contextlib.suppress(TimeoutError):
            await wait_until(condition, timeout=timeout)

    # --- before lease signals: the update-driven loop, kept so those histories replay ----------

    async def _run_by_update(self, input: GrantInput) -> GrantView:
        await self._wait(lambda: bool(self._leases), names.GRANT_IDLE_TIMEOUT)
        while True:
            self._drop_ended_leases(names.ORPHAN_LEASE_GRACE)
            if self._leases and not self._view.assigned:
                await self._assign_in_update_loop()
            elif not self._leases and self._view.assigned:
                await self._unassign()
            elif not self._leases:
                await wait_until(lambda: workflow.all_handlers_finished() or bool(self._leases))
                if not self._leases:
                    return self._view
            elif workflow.info().is_continue_as_new_suggested():
                await wait_until(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    GrantInput(assignment=input.assignment, carried=self._view)
                )
            else:
                await self._wait(
                    lambda: bool(self._leases) != self._view.assigned or not self._leases,
                    self._until_next_lease_end(names.ORPHAN_LEASE_GRACE),
                )

    async def _assign_in_update_loop(self) -> None:
        if not await self._create():
            for request_id in self._leases:
                self._failed[request_id] = self._view.error or "granting access failed"
            self._leases.clear()

    async def _acquire_in_update_loop(self, input: LeaseInput) -> LeaseResult:
        self._failed.pop(input.request_id, None)
        self._leases[input.request_id] = input.expires_at
        # Not while a removal is in flight: that removal would take this lease's access away.
        await wait_until(
            lambda: (
                (self._view.assigned and not self._removing and input.request_id in self._leases)
                or input.request_id in self._failed
            )
        )
        if input.request_id in self._failed:
            raise ApplicationError(
                self._failed[input.request_id], type="GrantFailed", non_retryable=True
            )
        return LeaseResult(
            standing=bool(self._view.standing),
            granted_at=self._view.assigned_at or workflow.now(),
        )

    async def _release_in_update_loop(self, input: ReleaseInput) -> ReleaseResult:
        self._leases.pop(input.request_id, None)
        removing = not self._leases and self._view.assigned and not self._view.standing
        if not self._leases and self._view.assigned:
            # Bounded: if removal is still being retried, the caller reports that and asks again.
            await self._wait(
                lambda: not self._view.assigned or bool(self._leases), names.RELEASE_WAIT
            )
        return ReleaseResult(
            removed=removing and not self._view.assigned,
            remaining_leases=len(self._leases),
            standing=bool(self._view.standing),
            pending=self._view.assigned and not self._leases,
            revoke_failures=self._view.revoke_failures,
            last_error=self._view.error,
        )

    def _take_by_update_loop(self, lease: LeaseRequest) -> None:
        """A request that leases by signal met a grant still running the update-driven loop."""
        ends = lease.ends(workflow.now())
        answer = self._acquire_in_update_loop(
            LeaseInput(request_id=lease.request_id, expires_at=ends)
        )
        asyncio.create_task(self._answer_by_signal(lease.request_id, answer))  # noqa: RUF006

    def _return_to_update_loop(self, lease: LeaseReturn) -> None:
        answer = self._release_in_update_loop(ReleaseInput(request_id=lease.request_id))
        asyncio.create_task(self._answer_by_signal(lease.request_id, answer))  # noqa: RUF006

    async def _answer_by_signal(
        self, request_id: str, answer: Awaitable[LeaseResult | ReleaseResult]
    ) -> None:
        self._telling += 1
        try:
            try:
                result = await answer
            except ApplicationError as err:
                signal = names.LEASE_FAILED
                message: LeaseAnswer = LeaseFailed(error=err.message)
            else:
                if isinstance(result, LeaseResult):
                    signal = names.LEASE_GRANTED
                    message = LeaseGranted(
                        granted_at=result.granted_at,
                        expires_at=self._leases.get(request_id, workflow.now()),
                        standing=result.standing,
                    )
                else:
                    signal, message = names.LEASE_RETURNED, result
            self._telling += 1  # _send counts itself down
            await self._send(request_id, signal, message)
        finally:
            self._telling -= 1
