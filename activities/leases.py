"""Lease activities: a request takes and releases its lease on the GrantWorkflow of its assignment."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog
from temporalio import activity
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from keycard import temporal as names
from keycard.models import (
    AcquireLeaseInput,
    EndSessionsInput,
    GrantAndTell,
    GrantInput,
    GrantTold,
    LeaseGranted,
    LeaseInput,
    LeaseResult,
    ReleaseInput,
    ReleaseLeaseInput,
    ReleaseResult,
    ResolvedAssignment,
    SessionPolicyInput,
    TakeLeaseInput,
    WaitingLease,
)
from keycard.strategies import activity_name

log = structlog.get_logger(__name__)
T = TypeVar("T")


class LeaseActivities:
    """Talks to GrantWorkflows through the Temporal client; holds no state of its own."""

    def __init__(self, client: Client, task_queue: str | None = None):
        self._client = client
        self._task_queue = task_queue or names.task_queue()

    @activity.defn(name=names.TAKE_LEASE)
    async def take_lease(self, input: TakeLeaseInput) -> None:
        """Hand the assignment's GrantWorkflow a lease, starting it if need be.

        Returns as soon as Temporal has recorded the signal: the grant answers the request by
        signal once the access exists, so no worker slot waits on it meanwhile."""
        workflow_id = names.grant_workflow_id(input.assignment.grant_key)
        log.info("lease.take", grant=workflow_id, request_id=input.lease.request_id)
        await self._client.start_workflow(
            names.GRANT_WORKFLOW,
            GrantInput(assignment=input.assignment),
            id=workflow_id,
            task_queue=self._task_queue,
            start_signal=names.LEASE_TAKE,
            start_signal_args=[input.lease],
            static_summary=_summary(input.assignment),
        )

    @activity.defn(name=names.REQUEST_END_SESSIONS)
    async def request_end_sessions(self, input: EndSessionsInput) -> None:
        """Hand the permission set's SessionPolicyWorkflow a revocation, starting it if need be.
        Returns once Temporal has recorded the signal; the writer answers the grant by signal."""
        workflow_id = names.session_policy_workflow_id(
            input.instance_arn, input.permission_set_arn, input.policy
        )
        log.info("sessions.end", writer=workflow_id, grant=input.request.reply_to)
        held_in = (
            f"customer-managed policy {input.policy.path}{input.policy.name}"
            if input.policy is not None
            else input.permission_set_arn
        )
        await self._client.start_workflow(
            names.SESSION_POLICY_WORKFLOW,
            SessionPolicyInput(
                instance_arn=input.instance_arn,
                permission_set_arn=input.permission_set_arn,
                policy=input.policy,
            ),
            id=workflow_id,
            task_queue=self._task_queue,
            start_signal=names.SESSIONS_END,
            start_signal_args=[input.request],
            static_summary=f"session-ending deny entries of {held_in}",
        )

    # --- before lease signals: these waited on the grant's updates (requests started earlier) --

    @activity.defn(name=names.ACQUIRE_LEASE)
    async def acquire_lease(self, input: AcquireLeaseInput) -> LeaseResult:
        """Start the grant workflow if needed and lease it; returns once the access exists."""
        workflow_id = names.grant_workflow_id(input.assignment.grant_key)
        start = WithStartWorkflowOperation(
            names.GRANT_WORKFLOW,
            GrantInput(assignment=input.assignment),
            id=workflow_id,
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=_summary(input.assignment),
        )
        lease = LeaseInput(request_id=input.request_id, expires_at=input.expires_at)
        log.info("lease.acquire", grant=workflow_id, request_id=input.request_id)
        try:
            return await _heartbeating(
                self._client.execute_update_with_start_workflow(
                    names.GRANT_ACQUIRE,
                    lease,
                    start_workflow_operation=start,
                    # Same id on a retry of this activity: Temporal hands back the first outcome.
                    id=f"{input.request_id}:acquire:{input.expires_at.isoformat()}",
                    result_type=LeaseResult,
                )
            )
        except WorkflowUpdateFailedError as err:
            raise _as_application_error(err) from err

    @activity.defn(name=names.RELEASE_LEASE)
    async def release_lease(self, input: ReleaseLeaseInput) -> ReleaseResult:
        """Drop the lease; if it was the last one, wait (bounded) for the access to be removed."""
        workflow_id = names.grant_workflow_id(input.assignment.grant_key)
        handle = self._client.get_workflow_handle(workflow_id)
        info = activity.info()
        log.info("lease.release", grant=workflow_id, request_id=input.request_id)
        try:
            update = await handle.start_update(
                names.GRANT_RELEASE,
                ReleaseInput(request_id=input.request_id),
                # Each release call (one per scheduled activity) is a new question: "is it gone
                # yet?". Reusing an id would hand back the first, stale answer.
                id=f"{input.request_id}:release:{info.workflow_run_id}:{info.activity_id}",
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
                result_type=ReleaseResult,
            )
            return await _heartbeating(update.result())
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                # No grant workflow running: no lease is held, so nothing of ours remains.
                return ReleaseResult(removed=True)
            raise
        except WorkflowUpdateFailedError as err:
            raise _as_application_error(err) from err


def _summary(assignment: ResolvedAssignment) -> str:
    return f"{assignment.spec.principal_email}: {assignment.grant_key}"


async def _heartbeating(call: Awaitable[T]) -> T:
    """Await a long call while telling Temporal this activity is alive."""
    task = asyncio.ensure_future(call)
    while True:
        done, _ = await asyncio.wait({task}, timeout=names.LEASE_HEARTBEAT.total_seconds() / 3)
        if done:
            return task.result()
        activity.heartbeat()


def _as_application_error(err: WorkflowUpdateFailedError) -> ApplicationError:
    cause = err.cause
    if isinstance(cause, ApplicationError):
        return ApplicationError(cause.message, type=cause.type, non_retryable=cause.non_retryable)
    return ApplicationError(str(cause or err), type="LeaseFailed")


class GrantActivities:
    """`leases.grant`: the worker's own `<strategy>.grant`, then `lease.granted` to every request
    that waits for the access, straight from the activity.

    Told by the grant's next workflow task instead, a request would wait for that task to be
    scheduled and run: one round trip more between an approval and ACTIVE. The grant still records
    the lease, from this activity's result, with the same `granted_at`, so the request and the
    grant agree on when the lease ends to the microsecond. Telling never fails the activity once
    the access exists: a request that cannot be reached is reported back (the grant drops its
    lease), and one whose signal failed otherwise is told by the grant itself.
    keycard_worker() adds this activity wherever a strategy's grant is registered.
    """

    def __init__(self, client: Client, grants: dict[str, Callable[..., Any]]):
        self._client = client
        self._grants = grants

    @activity.defn(name=names.GRANT_AND_TELL)
    async def grant_and_tell(self, input: GrantAndTell) -> GrantTold:
        name = activity_name(input.assignment.spec.strategy, "grant")
        grant = self._grants.get(name)
        if grant is None:  # retryable: a worker that has it may pick the next attempt up
            raise ApplicationError(f"this worker has no {name} activity", type="NoSuchStrategy")
        made = grant(input.assignment)
        if inspect.isawaitable(made):
            await made
        # The moment the access exists, by this worker's clock; never before this attempt began by
        # Temporal's (the grant's own time), which a worker clock running behind would say.
        granted_at = max(datetime.now(UTC), activity.info().started_time)
        key = input.assignment.grant_key
        heard = await asyncio.gather(
            *(self._tell(lease, granted_at, key) for lease in input.waiting)
        )
        return GrantTold(
            granted_at=granted_at,
            told=[request_id for request_id, outcome in heard if outcome == "told"],
            unreachable=[request_id for request_id, outcome in heard if outcome == "unreachable"],
        )

    async def _tell(
        self, lease: WaitingLease, granted_at: datetime, grant_key: str
    ) -> tuple[str, str]:
        """(request id, "told" | "unreachable" | "untold"): never raises, the access exists."""
        granted = LeaseGranted(
            granted_at=granted_at,
            expires_at=lease.ends(granted_at),
            standing=False,
            grant_key=grant_key,
        )
        handle = self._client.get_workflow_handle(lease.request_id)
        try:
            # Bounded: past this the grant tells it, rather than a hung call holding the activity
            # (and so every other request's grant) until its timeout.
            await asyncio.wait_for(
                handle.signal(names.LEASE_GRANTED, granted), names.TELL_TIMEOUT.total_seconds()
            )
        except Exception as err:
            if isinstance(err, RPCError) and err.status == RPCStatusCode.NOT_FOUND:
                return lease.request_id, "unreachable"
            log.warning("lease.tell_failed", request_id=lease.request_id, error=str(err))
            return lease.request_id, "untold"
        return lease.request_id, "told"
