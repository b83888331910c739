"""DriftSweepWorkflow: one comparison of AWS with the grants Keycard holds (a Schedule starts it)."""

from __future__ import annotations

import asyncio

from temporalio import workflow

from workflows.request import calls

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.models import (
        Actor,
        AssignmentSpec,
        AuditBatch,
        DriftFinding,
        DriftReport,
        DriftSweepInput,
        DriftTarget,
        LeaseDropNotice,
        LifecycleEvent,
        Reconcile,
        ReconcileInput,
        Requester,
        RequestState,
        ResolvedAssignment,
    )


@workflow.defn(name=names.DRIFT_SWEEP_WORKFLOW)
class DriftSweepWorkflow:
    """Inspect every target (activities/drift.py), hand each removal to the assignment's
    GrantWorkflow, which removes it and audits `drift.removed` once AWS confirms, and audit each
    assignment only reported as `drift.found`. Returns the DriftReport (`keycard drift` shows the
    last one). Reads are retried a few times; a target AWS will not list is reported in `errors`."""

    @workflow.run
    async def run(self, input: DriftSweepInput) -> DriftReport:
        report: DriftReport = await workflow.execute_activity(
            names.INSPECT_DRIFT,
            input,
            result_type=DriftReport,
            start_to_close_timeout=names.DRIFT_TIMEOUT,
            heartbeat_timeout=names.DRIFT_TIMEOUT,
            retry_policy=names.DRIFT_RETRY,
        )
        targets = {(t.flow, t.target.name): t for t in input.targets}
        found: list[LifecycleEvent] = []
        removals = []
        for number, finding in enumerate(report.findings, start=1):
            target = targets[(finding.flow, finding.target)]
            event = self._event(number, finding, target)
            if finding.action == "removed":
                removals.append(self._remove(finding, target, event, input.audit_destinations))
            else:
                found.append(event)
        await asyncio.gather(*removals)
        if found:
            await asyncio.gather(
                *(
                    calls.deliver_audit(AuditBatch(destination=destination, events=found))
                    for destination in input.audit_destinations
                )
            )
        return report

    async def _remove(
        self,
        finding: DriftFinding,
        target: DriftTarget,
        event: LifecycleEvent,
        destinations: list[str],
    ) -> None:
        assignment = ResolvedAssignment(
            spec=AssignmentSpec(
                strategy="aws_sso",
                principal_email=finding.principal_email or "",
                account_id=finding.account_id,
                permission_set=finding.permission_set,
            ),
            principal_id=finding.principal_id,
            instance_arn=finding.instance_arn,
            permission_set_arn=finding.permission_set_arn,
        )
        await workflow.execute_activity(
            names.RECONCILE_GRANT,
            ReconcileInput(
                assignment=assignment,
                reconcile=Reconcile(
                    notice=LeaseDropNotice(event=event, destinations=destinations),
                    end_sessions=target.end_sessions,
                    sessions_policy=target.sessions_policy,
                ),
            ),
            start_to_close_timeout=names.TAKE_LEASE_TIMEOUT,
            retry_policy=names.TAKE_LEASE_RETRY,
        )

    @staticmethod
    def _event(number: int, finding: DriftFinding, target: DriftTarget) -> LifecycleEvent:
        info = workflow.info()
        removing = finding.action == "removed"
        return LifecycleEvent(
            id=f"{info.workflow_id}/{number}",
            type="drift.removed" if removing else "drift.found",
            time=workflow.now(),
            request_id=info.workflow_id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            actor=Actor(rule=names.DRIFT_ACTOR, via="schedule"),
            requester=Requester(email=finding.principal_email or finding.principal_id),
            flow=finding.flow,
            target=target.target,
            duration=target.max_duration,
            reason=finding.why,
            state=RequestState.ENDED if removing else RequestState.ACTIVE,
            detail={
                "kind": finding.kind,
                "principal_type": finding.principal_type,
                "principal_id": finding.principal_id,
                "account_id": finding.account_id,
                "permission_set_arn": finding.permission_set_arn,
            },
        )
