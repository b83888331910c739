"""Holding access: a lease on each target's GrantWorkflow, taken when approved, moved by
extensions, and given back at expiry or revocation; the grant's answers, and the sessions it
ended."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

from workflows.request import calls
from workflows.request.asking import Asking
from workflows.waiting import wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.config import SessionsPolicy
    from keycard.durations import format_duration
    from keycard.failures import root_message, root_type
    from keycard.models import (
        AcquireLeaseInput,
        LeaseFailed,
        LeaseGranted,
        LeaseRequest,
        LeaseReturn,
        ReleaseLeaseInput,
        ReleaseResult,
        RequestState,
        ResolvedAssignment,
        RevokeInput,
        SessionsEnded,
        TakeLeaseInput,
        TargetStatus,
    )


class Granting(Asking):
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
            self._s.grant_failed = LeaseFailed(
                error=root_message(err), type=root_type(err) or "GrantFailed"
            )
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
                error=root_message(err), type=root_type(err) or "GrantFailed"
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
            lease = await calls.acquire_lease(
                AcquireLeaseInput(
                    assignment=self._s.assignment,
                    request_id=self._s.view.id,
                    expires_at=expires_at,
                )
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

            def revoked_or_moved(until: datetime = expires_at) -> bool:
                return self._s.revoked_by is not None or view.expires_at != until

            try:
                await wait_until(
                    revoked_or_moved, timeout=remaining if warn_in is None else warn_in
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
        detail: dict[str, Any] = {
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
            detail: dict[str, Any] = {
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

                    def answered(seen: int = heard) -> bool:
                        return len(returns) > seen

                    await wait_until(answered, timeout=names.RELEASE_WAIT)
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
            result = await calls.release_lease(
                ReleaseLeaseInput(assignment=self._s.assignment, request_id=self._s.view.id)
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
        await calls.acquire_lease(
            AcquireLeaseInput(
                assignment=self._s.assignment,
                request_id=self._s.view.id,
                expires_at=self._s.view.expires_at,
            )
        )
        self._s.lease_expires_at = self._s.view.expires_at

    async def _renew_one(self, assignment: ResolvedAssignment, expires_at: datetime) -> None:
        if self._s.lease_ends.get(assignment.grant_key) == expires_at:
            return
        renewal = self._lease_request(expires_at, assignment)
        if not await self._send_to_grant(names.LEASE_TAKE, renewal, assignment):
            await self._take_lease(expires_at, assignment)  # the grant is gone: lease it afresh
        self._s.lease_ends[assignment.grant_key] = expires_at
