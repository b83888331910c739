"""The bare workflow Keycard is measured against: the least a JIT grant can be on Temporal.

Start, wait for an `approve` update, one activity that creates the Identity Center assignment and
polls its status, a durable timer, one activity that deletes it and polls. No policy, audit,
notification, lease sharing or idempotency: what Keycard costs beyond this is what bench.compare
reports.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    import boto3


class BareAssignment(BaseModel):
    instance_arn: str
    account_id: str
    permission_set_arn: str
    principal_id: str


class BareInput(BaseModel):
    assignment: BareAssignment
    duration_seconds: float = 0
    until: datetime | None = None  # instead of a duration: end at this moment (bench.expiry)


@workflow.defn(name="BareGrant")
class BareGrantWorkflow:
    def __init__(self) -> None:
        self.approved = False
        self.active = False

    @workflow.run
    async def run(self, input: BareInput) -> None:
        await workflow.wait_condition(lambda: self.approved)
        options: dict[str, Any] = {
            "start_to_close_timeout": timedelta(seconds=60),
            "retry_policy": RetryPolicy(maximum_interval=timedelta(seconds=10)),
        }
        await workflow.execute_activity("bare.create", input.assignment, **options)
        self.active = True
        if input.until is not None:
            await workflow.sleep(max(input.until - workflow.now(), timedelta(0)))
        else:
            await workflow.sleep(timedelta(seconds=input.duration_seconds))
        await workflow.execute_activity("bare.delete", input.assignment, **options)

    @workflow.update
    def approve(self) -> None:
        self.approved = True

    @workflow.query
    def is_active(self) -> bool:
        return self.active


class BareActivities:
    def __init__(self, endpoint_url: str, region: str) -> None:
        self._sso = boto3.client("sso-admin", endpoint_url=endpoint_url, region_name=region)

    @activity.defn(name="bare.create")
    async def create(self, assignment: BareAssignment) -> None:
        await self._change(
            self._sso.create_account_assignment,
            self._sso.describe_account_assignment_creation_status,
            "AccountAssignmentCreation",
            assignment,
        )

    @activity.defn(name="bare.delete")
    async def delete(self, assignment: BareAssignment) -> None:
        await self._change(
            self._sso.delete_account_assignment,
            self._sso.describe_account_assignment_deletion_status,
            "AccountAssignmentDeletion",
            assignment,
        )

    @staticmethod
    async def _change(call, describe, kind: str, assignment: BareAssignment) -> None:
        """Make the change, then poll its status until AWS says it is done."""
        status = (await asyncio.to_thread(call, **_target(assignment)))[f"{kind}Status"]
        while status["Status"] == "IN_PROGRESS":
            await asyncio.sleep(0.2)
            answer = await asyncio.to_thread(
                describe,
                InstanceArn=assignment.instance_arn,
                **{f"{kind}RequestId": status["RequestId"]},
            )
            status = answer[f"{kind}Status"]
        if status["Status"] != "SUCCEEDED":
            raise RuntimeError(status.get("FailureReason", f"{kind} failed"))


def _target(assignment: BareAssignment) -> dict[str, str]:
    return {
        "InstanceArn": assignment.instance_arn,
        "TargetId": assignment.account_id,
        "TargetType": "AWS_ACCOUNT",
        "PermissionSetArn": assignment.permission_set_arn,
        "PrincipalType": "USER",
        "PrincipalId": assignment.principal_id,
    }
