"""GrantWorkflow: the single writer of one assignment, shared by every request that leases it."""

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.failures import root_message
    from keycard.models import (
        GrantInput,
        GrantView,
        LeaseInput,
        LeaseResult,
        ReleaseInput,
        ReleaseResult,
        ResolvedAssignment,
    )
    from keycard.strategies import activity_name


@workflow.defn(name=names.GRANT_WORKFLOW)
class GrantWorkflow:
    """One per (target, principal), id `grant:<grant key>`.

    Updates: `acquire` (LeaseInput -> LeaseResult) takes or renews a lease and returns once the
    access exists; `release` (ReleaseInput -> ReleaseResult) drops a lease and, if it was the last,
    returns once the access is gone (or reports that removal is still being retried).
    Query: `status` -> GrantView.

    The first lease checks whether the access already exists: if so it is standing access, which
    Keycard records and never removes. The last lease released removes the access; removal retries
    in capped rounds until AWS confirms it.
    """

    @workflow.init
    def __init__(self, input: GrantInput) -> None:
        self._view = GrantView(assignment=input.assignment)
        if input.carried is not None:  # continued-as-new: pick up exactly where we were
            self._view = input.carried
        self._failed: dict[str, str] = {}  # request id -> why its lease could not be granted

    @workflow.run
    async def run(self, input: GrantInput) -> GrantView:
        await self._wait(lambda: bool(self._leases), names.GRANT_IDLE_TIMEOUT)
        while True:
            self._drop_orphaned_leases()
            if self._leases and not self._view.assigned:
                await self._assign()
            elif not self._leases and self._view.assigned:
                await self._unassign()
            elif not self._leases:
                await workflow.wait_condition(
                    lambda: workflow.all_handlers_finished() or bool(self._leases)
                )
                if not self._leases:
                    return self._view
            elif workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    GrantInput(assignment=input.assignment, carried=self._view)
                )
            else:
                await self._wait(self._needs_work, self._until_next_orphan())

    # --- updates and query ---------------------------------------------------------------------

    @workflow.update(name=names.GRANT_ACQUIRE)
    async def acquire(self, input: LeaseInput) -> LeaseResult:
        self._failed.pop(input.request_id, None)
        self._leases[input.request_id] = input.expires_at
        await workflow.wait_condition(
            lambda: (
                (self._view.assigned and input.request_id in self._leases)
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

    @acquire.validator
    def _validate_acquire(self, input: LeaseInput) -> None:
        if input.expires_at <= workflow.now():
            raise ApplicationError(
                f"lease for {input.request_id} would already have expired", type="LeaseExpired"
            )

    @workflow.update(name=names.GRANT_RELEASE)
    async def release(self, input: ReleaseInput) -> ReleaseResult:
        self._leases.pop(input.request_id, None)
        if not self._leases and self._view.assigned:
            # Bounded: if removal is still being retried, the caller reports that and asks again.
            await self._wait(
                lambda: not self._view.assigned or bool(self._leases), names.RELEASE_WAIT
            )
        return ReleaseResult(
            removed=not self._view.assigned and not self._leases and not self._view.standing,
            remaining_leases=len(self._leases),
            standing=bool(self._view.standing),
            pending=self._view.assigned and not self._leases,
            revoke_failures=self._view.revoke_failures,
            last_error=self._view.error,
        )

    @workflow.query
    def status(self) -> GrantView:
        return self._view

    # --- the single writer -----------------------------------------------------------------------

    @property
    def _leases(self) -> dict[str, datetime]:
        return self._view.leases

    def _needs_work(self) -> bool:
        return bool(self._leases) != self._view.assigned or not self._leases

    async def _assign(self) -> None:
        assignment = self._view.assignment
        try:
            exists = await self._call("exists", assignment, result_type=bool)
            if exists:
                self._view.standing = True
                workflow.logger.info("standing access found; it will be left in place")
            else:
                self._view.standing = False
                await self._call("grant", assignment)
        except ActivityError as err:
            message = root_message(err)
            workflow.logger.warning("grant failed: %s", message)
            for request_id in self._leases:
                self._failed[request_id] = message
            self._leases.clear()
            self._view.error = message
            return
        self._view.assigned = True
        self._view.error = None
        self._view.assigned_at = workflow.now()

    async def _unassign(self) -> None:
        if self._view.standing:
            self._view.assigned = False  # not ours to remove
            self._view.assigned_at = None
            return
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
                await workflow.sleep(pause)
                pause = min(pause * 2, names.REVOKE_ROUND_PAUSE_MAX)
                continue
            break
        self._view.assigned = False
        self._view.assigned_at = None
        self._view.error = None

    async def _call(
        self, operation: str, assignment: ResolvedAssignment, result_type: type | None = None
    ):
        is_revoke = operation == "revoke"
        return await workflow.execute_activity(
            activity_name(assignment.spec.strategy, operation),  # type: ignore[arg-type]
            assignment,
            result_type=result_type,
            start_to_close_timeout=names.GRANT_TIMEOUT,
            heartbeat_timeout=names.GRANT_HEARTBEAT,
            retry_policy=names.REVOKE_ROUND_RETRY if is_revoke else names.GRANT_RETRY,
        )

    def _drop_orphaned_leases(self) -> None:
        now = workflow.now()
        for request_id, expires_at in list(self._leases.items()):
            if expires_at + names.ORPHAN_LEASE_GRACE <= now:
                workflow.logger.warning(
                    "dropping lease %s: its request stopped renewing it", request_id
                )
                del self._leases[request_id]

    def _until_next_orphan(self) -> timedelta | None:
        if not self._leases:
            return None
        deadline = min(self._leases.values()) + names.ORPHAN_LEASE_GRACE
        return max(deadline - workflow.now(), timedelta(seconds=1))

    async def _wait(self, condition, timeout: timedelta | None) -> None:
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(condition, timeout=timeout)
