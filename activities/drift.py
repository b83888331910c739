"""The drift sweep's activities: what AWS holds for each target, against the grants Keycard holds.

`drift.inspect` only reads: per aws_sso target, every principal assigned the permission set in the
account (ListAccountAssignments), and for each user the GrantWorkflow of that assignment, if there
ever was one (its id is the assignment's: workflow ids say which assignments Keycard granted).

- A running grant holding leases or standing access, or a closed one that found standing access:
  held; never touched.
- A grant that holds nothing (it ended, or is ending) while the assignment exists: an orphan, a
  lost revoke or a hand-made copy of a JIT grant. The sweep removes it through that grant.
- No grant ever (within Temporal's retention of closed workflows): unmanaged, reported, removed
  only where the flow says `remove_unmanaged: true`. Group assignments are reported, never
  removed: Keycard grants users.

`drift.reconcile` hands one removal to the assignment's GrantWorkflow (signal-with-start): the
single writer removes it, ends its sessions as a lease's end would, and audits `drift.removed`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.aws_sso import AwsSsoStrategy
from keycard import temporal as names
from keycard.models import (
    AssignmentSpec,
    DriftFinding,
    DriftReport,
    DriftSweepInput,
    DriftTarget,
    GrantInput,
    GrantView,
    ReconcileInput,
    ResolvedAssignment,
)

log = structlog.get_logger(__name__)


class DriftActivities:
    def __init__(self, client: Client, sso: AwsSsoStrategy, task_queue: str | None = None) -> None:
        self._client = client
        self._sso = sso
        self._task_queue = task_queue or names.task_queue()

    def activities(self) -> list[Any]:
        return [self.inspect, self.reconcile]

    @activity.defn(name=names.INSPECT_DRIFT)
    async def inspect(self, input: DriftSweepInput) -> DriftReport:
        report = DriftReport(started_at=datetime.now(UTC), targets=len(input.targets))
        for target in input.targets:
            activity.heartbeat(target.target.name)
            try:
                await self._inspect(target, report)
            except ApplicationError as error:
                report.errors.append(f"{target.flow}/{target.target.name}: {error.message}")
        report.finished_at = datetime.now(UTC)
        log.info(
            "drift.inspected",
            targets=report.targets,
            assignments=report.assignments,
            findings=len(report.findings),
            errors=len(report.errors),
        )
        return report

    @activity.defn(name=names.RECONCILE_GRANT)
    async def reconcile(self, input: ReconcileInput) -> None:
        workflow_id = names.grant_workflow_id(input.assignment.grant_key)
        log.info("drift.removing", grant=workflow_id)
        await self._client.start_workflow(
            names.GRANT_WORKFLOW,
            GrantInput(assignment=input.assignment),
            id=workflow_id,
            task_queue=self._task_queue,
            start_signal=names.GRANT_RECONCILE,
            start_signal_args=[input.reconcile],
            static_summary=f"drift: {input.assignment.grant_key}",
        )

    async def _inspect(self, target: DriftTarget, report: DriftReport) -> None:
        instance_arn, permission_set_arn = await self._sso.permission_set(target.permission_set)
        report.instance_arn = instance_arn
        holders = await self._sso.holders(instance_arn, target.account_id, permission_set_arn)
        for principal_type, principal_id in holders:
            report.assignments += 1
            finding = DriftFinding(
                kind="unmanaged",
                action="reported",
                flow=target.flow,
                target=target.target.name,
                account_id=target.account_id,
                permission_set=target.permission_set,
                permission_set_arn=permission_set_arn,
                instance_arn=instance_arn,
                principal_type=principal_type,
                principal_id=principal_id,
                why="",
            )
            if principal_type != "USER":
                finding.why = f"a {principal_type.lower()} assignment; Keycard grants users only"
                report.findings.append(finding)
                continue
            assignment = ResolvedAssignment(
                spec=AssignmentSpec(
                    strategy="aws_sso",
                    principal_email="",
                    account_id=target.account_id,
                    permission_set=target.permission_set,
                ),
                principal_id=principal_id,
                instance_arn=instance_arn,
                permission_set_arn=permission_set_arn,
            )
            verdict = await self._grant_verdict(names.grant_workflow_id(assignment.grant_key))
            if verdict is None:
                report.held += 1
                continue
            finding.kind, finding.why = verdict
            finding.principal_email = await self._sso.user_email(principal_id)
            if finding.kind == "orphan" or target.remove_unmanaged:
                finding.action = "removed"
            report.findings.append(finding)

    async def _grant_verdict(self, workflow_id: str) -> tuple[str, str] | None:
        """None when the grant holds the access (or it is standing access Keycard keeps);
        otherwise (kind, why) of the finding."""
        handle = self._client.get_workflow_handle(workflow_id, result_type=GrantView)
        try:
            described = await handle.describe()
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND:
                return "unmanaged", "no Keycard grant ever made this assignment"
            raise
        if described.status == WorkflowExecutionStatus.RUNNING:
            view = await handle.query(names.REQUEST_STATUS, result_type=GrantView)
            if view.standing or view.leases or view.waiting or view.reconciling:
                return None
            return "orphan", "Keycard granted it and no lease holds it (its grant is ending)"
        if described.status == WorkflowExecutionStatus.COMPLETED:
            view = await handle.result()
            if view.standing:
                return None  # standing access the grant found, and left in place
            return (
                "orphan",
                "Keycard granted it and removed it, and it is back (or the removal was lost)",
            )
        return "orphan", f"its grant {described.status.name.lower()} while holding it"
