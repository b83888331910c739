"""An in-memory cloud registered under the real strategy activity names, to test workflows alone."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.api.enums.v1 import (
    PendingActivityState,
    PendingWorkflowTaskState,
    WorkflowExecutionStatus,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from keycard import session_policy
from keycard import temporal as names
from keycard.models import (
    AssignmentSpec,
    ResolvedAssignment,
    ResolveInput,
    SessionPolicyResult,
    SessionPolicyWrite,
    SessionScope,
)

KNOWN_USERS = {"alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"}


PENDING_ACTIVITY_STATE_STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
PENDING_WORKFLOW_TASK_STATE_STARTED = PendingWorkflowTaskState.PENDING_WORKFLOW_TASK_STATE_STARTED
WORKFLOW_EXECUTION_STATUS_RUNNING = WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING


async def terminate_when_idle(handle, reason: str, wait: float = 10.0) -> None:
    """Terminate a workflow once none of its tasks is in a worker's hands.

    The time-skipping server stops its clock while an activity or workflow task runs, and a
    workflow terminated meanwhile never releases that hold (the worker's completion is refused:
    the workflow is closed): every later test's timers would then wait in real time. So wait,
    while the worker is still there to finish them (tests/test_time_skipping.py)."""
    deadline = asyncio.get_running_loop().time() + wait
    while asyncio.get_running_loop().time() < deadline:
        description = (await handle.describe()).raw_description
        if description.workflow_execution_info.status != WORKFLOW_EXECUTION_STATUS_RUNNING:
            return
        started = [
            a for a in description.pending_activities if a.state == PENDING_ACTIVITY_STATE_STARTED
        ]
        task = description.pending_workflow_task
        if not started and not (
            description.HasField("pending_workflow_task")
            and task.state == PENDING_WORKFLOW_TASK_STATE_STARTED
        ):
            break
        await asyncio.sleep(0.05)
    await handle.terminate(reason)


@dataclass
class FakeCloud:
    """Assignments as a set of grant keys, with switches to make calls fail."""

    users: set[str] = field(default_factory=lambda: set(KNOWN_USERS))
    assignments: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    grant_error: str | None = None
    # One account's grants fail (account id -> error), or it has no such permission set at all.
    grant_errors: dict[str, str] = field(default_factory=dict)
    missing_accounts: set[str] = field(default_factory=set)
    revoke_failures_left: int = 0
    # Inline policies by permission set ARN, written by the session-ending fakes below.
    policies: dict[str, str] = field(default_factory=dict)
    session_duration: timedelta = timedelta(hours=1)
    session_error: str | None = None
    # Set: every policy write waits for it (a removal held while it ends sessions).
    session_gate: asyncio.Event | None = None
    writers: set[str] = field(default_factory=set)  # SessionPolicyWorkflow ids this cloud fed
    # What every group of this cloud is assigned (aws_sso_group.session_scopes): (name, account).
    group_permission_sets: list[tuple[str, str]] = field(default_factory=list)
    # Grant workflows outlive a test's worker; a per-cloud salt keeps their ids from colliding.
    salt: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def key(self, spec: AssignmentSpec) -> str:
        return f"{spec.account_id}:{spec.permission_set or spec.group}:{spec.principal_email}"

    def has(
        self, email: str, account_id: str = "111111111111", ps: str = "PowerUserAccess"
    ) -> bool:
        return f"{account_id}:{ps}:{email}" in self.assignments

    def give(self, email: str, account_id: str = "111111111111", ps: str = "PowerUserAccess"):
        self.assignments.add(f"{account_id}:{ps}:{email}")

    def activities(self, strategy: str = "aws_sso") -> list:
        cloud = self

        @activity.defn(name=f"{strategy}.resolve")
        async def resolve(input: ResolveInput) -> ResolvedAssignment:
            cloud.calls.append(("resolve", input.spec.principal_email))
            if input.spec.principal_email not in cloud.users:
                raise ApplicationError(
                    f"no Identity Center user has the email {input.spec.principal_email}",
                    type="NoSuchUser",
                    non_retryable=True,
                )
            if input.spec.account_id in cloud.missing_accounts:
                raise ApplicationError(
                    f"account {input.spec.account_id} has no permission set "
                    f"{input.spec.permission_set}",
                    type="NoSuchPermissionSet",
                    non_retryable=True,
                )
            return ResolvedAssignment(
                spec=input.spec,
                principal_id=f"u-{input.spec.principal_email.split('@')[0]}-{cloud.salt}",
                # Salted too: each cloud's permission sets have their own session-policy writer.
                instance_arn=f"arn:aws:sso:::instance/ssoins-{cloud.salt}",
                identity_store_id=f"d-{cloud.salt}",
                permission_set_arn=f"arn:aws:sso:::permissionSet/ssoins-{cloud.salt}/ps-{input.spec.permission_set}",
            )

        @activity.defn(name=f"{strategy}.exists")
        async def exists(input: ResolvedAssignment) -> bool:
            return cloud.key(input.spec) in cloud.assignments

        @activity.defn(name=f"{strategy}.grant")
        async def grant(input: ResolvedAssignment) -> None:
            cloud.calls.append(("grant", input.spec.principal_email))
            error = cloud.grant_errors.get(input.spec.account_id or "") or cloud.grant_error
            if error:
                raise ApplicationError(error, type="NoSuchPermissionSet", non_retryable=True)
            cloud.assignments.add(cloud.key(input.spec))

        @activity.defn(name=f"{strategy}.revoke")
        async def revoke(input: ResolvedAssignment) -> None:
            cloud.calls.append(("revoke", input.spec.principal_email))
            if cloud.revoke_failures_left > 0:
                cloud.revoke_failures_left -= 1
                raise ApplicationError("ThrottlingException: Rate exceeded", type="Throttling")
            cloud.assignments.discard(cloud.key(input.spec))

        return [resolve, exists, grant, revoke]

    def session_activities(self) -> list:
        """aws_sso.end_sessions and aws_sso.prune_sessions over `policies`, with the real merge
        and prune of keycard/session_policy.py."""
        cloud = self

        def result(arn: str) -> SessionPolicyResult:
            denied = session_policy.entries(cloud.policies.get(arn))
            return SessionPolicyResult(
                session_duration=cloud.session_duration,
                denied={f"{user}:{account}": at for (user, account), at in denied.items()},
            )

        def managed(input: SessionPolicyWrite) -> SessionPolicyResult:
            """A customer-managed policy: one copy per account, entries scoped to the role."""
            assert input.policy is not None
            copies = {}
            for item in input.revocations:
                name = (item.permission_set_arn or input.permission_set_arn).rsplit("/ps-", 1)[1]
                key = input.policy.policy_arn(item.account_id)
                copies.setdefault(key, {})[(item.user_id, item.account_id, name)] = (
                    item.denied_before
                )
            for key in {input.policy.policy_arn(a) for a in input.accounts} | set(copies):
                if key in copies:
                    cloud.policies[key] = session_policy.merge(
                        cloud.policies.get(key),
                        copies[key],
                        now=datetime.now(UTC),
                        max_session=cloud.session_duration,
                        limit=session_policy.MANAGED_POLICY_LIMIT,
                    )
                elif not input.revocations:
                    cloud.policies[key] = session_policy.prune(
                        cloud.policies.get(key),
                        now=activity.info().current_attempt_scheduled_time,
                        max_session=cloud.session_duration,
                        keep=True,
                    )
            denied = {
                ":".join(k): at
                for arn, text in cloud.policies.items()
                if arn.startswith("arn:aws:iam::")
                for k, at in session_policy.entries(text).items()
            }
            return SessionPolicyResult(
                session_duration=cloud.session_duration,
                denied=denied,
                accounts=sorted({k.split(":")[1] for k in denied}),
            )

        @activity.defn(name=names.END_SESSIONS)
        async def end_sessions(input: SessionPolicyWrite) -> SessionPolicyResult:
            cloud.calls.append(("end_sessions", input.permission_set_arn))
            cloud.writers.add(
                names.session_policy_workflow_id(
                    input.instance_arn, input.permission_set_arn, input.policy
                )
            )
            if cloud.session_gate is not None:
                await cloud.session_gate.wait()
            if cloud.session_error:
                raise ApplicationError(cloud.session_error, type="AccessDenied", non_retryable=True)
            if input.policy is not None:
                return managed(input)
            revocations = {(r.user_id, r.account_id): r.denied_before for r in input.revocations}
            cloud.policies[input.permission_set_arn] = session_policy.merge(
                cloud.policies.get(input.permission_set_arn),
                revocations,
                now=datetime.now(UTC),
                max_session=cloud.session_duration,
            )
            return result(input.permission_set_arn)

        @activity.defn(name=names.PRUNE_SESSIONS)
        async def prune_sessions(input: SessionPolicyWrite) -> SessionPolicyResult:
            cloud.calls.append(("prune_sessions", input.permission_set_arn))
            if input.policy is not None:
                return managed(input)
            pruned = session_policy.prune(
                cloud.policies.get(input.permission_set_arn),
                now=activity.info().current_attempt_scheduled_time,
                max_session=cloud.session_duration,
            )
            if pruned is None:
                cloud.policies.pop(input.permission_set_arn, None)
            else:
                cloud.policies[input.permission_set_arn] = pruned
            return result(input.permission_set_arn)

        @activity.defn(name=names.GROUP_SESSION_SCOPES)
        async def group_session_scopes(input: ResolvedAssignment) -> list[SessionScope]:
            return [
                SessionScope(
                    instance_arn=f"arn:aws:sso:::instance/ssoins-{cloud.salt}",
                    permission_set_arn=f"arn:aws:sso:::permissionSet/ssoins-{cloud.salt}/ps-{name}",
                    account_id=account,
                )
                for name, account in cloud.group_permission_sets
            ]

        return [end_sessions, prune_sessions, group_session_scopes]

    def policy(self, permission_set: str = "PowerUserAccess") -> str | None:
        """The inline policy of a permission set of this cloud, by its name."""
        return self.policies.get(
            f"arn:aws:sso:::permissionSet/ssoins-{self.salt}/ps-{permission_set}"
        )

    async def stop_writers(self, client) -> None:
        """Terminate the session-policy writers this cloud's grants started: they sleep until
        their entries expire (an hour), and on the time-skipping server a timer of a workflow
        whose worker is gone would stall every later test's clock."""
        for workflow_id in self.writers:
            with contextlib.suppress(RPCError):
                await terminate_when_idle(client.get_workflow_handle(workflow_id), "test over")
