"""Ending the AWS sessions an Identity Center grant allowed: the writes of a permission set's
inline policy that keycard/session_policy.py composes, and the provisioning that puts them in force.

Only the permission set's SessionPolicyWorkflow (workflows/sessions.py) calls these, one at a time
per permission set, so a read-modify-write of the inline policy never races another Keycard write.
Each call is idempotent: merging an entry that is already there changes nothing, and provisioning
again is harmless. An edit someone makes by hand between the read and the write is the one race
left: the statements Keycard does not own are written back as they were read.

IAM actions the worker's role needs for `end_sessions` (the default for aws_sso flows; aws_sso_group
flows also list the group's assignments with sso:ListAccountAssignmentsForPrincipal):
sso:DescribePermissionSet, sso:GetInlinePolicyForPermissionSet, sso:PutInlinePolicyToPermissionSet,
sso:DeleteInlinePolicyFromPermissionSet, sso:ProvisionPermissionSet,
sso:DescribePermissionSetProvisioningStatus (plus the iam: actions AWS documents for provisioning).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import TypeAdapter
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws_errors import call_aws, paginate, require_resolved
from keycard import session_policy
from keycard import temporal as names
from keycard.models import (
    ResolvedAssignment,
    SessionPolicyResult,
    SessionPolicyWrite,
    SessionScope,
)

log = structlog.get_logger(__name__)

POLL_INTERVAL_SECONDS = 2.0
# A permission set without a SessionDuration has AWS's default, one hour.
DEFAULT_SESSION = timedelta(hours=1)
_ISO_DURATION = TypeAdapter(timedelta)  # SessionDuration is ISO 8601, e.g. PT12H
# What a polling attempt heartbeats, so the next attempt can resume waiting on the same request.
_PROVISIONING_PREFIX = "provisioning request "

# The IAM actions ending sessions needs, for `keycard doctor`.
REQUIRED_ACTIONS = (
    "sso:DescribePermissionSet",
    "sso:GetInlinePolicyForPermissionSet",
    "sso:PutInlinePolicyToPermissionSet",
    "sso:DeleteInlinePolicyFromPermissionSet",
    "sso:ProvisionPermissionSet",
    "sso:DescribePermissionSetProvisioningStatus",
)


class SessionPolicies:
    """The inline-policy writes of `end_sessions`, on one sso-admin client."""

    def __init__(
        self,
        sso_admin: Any,
        *,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sso_admin = sso_admin
        self._poll_interval = poll_interval
        self._now = clock

    def activities(self) -> list[Callable[..., Any]]:
        return [self.end_sessions, self.prune_sessions, self.group_session_scopes]

    @activity.defn(name=names.GROUP_SESSION_SCOPES)
    async def group_session_scopes(self, assignment: ResolvedAssignment) -> list[SessionScope]:
        """Where a member's sessions came from: every permission set the Identity Center group is
        assigned, in every account (ListAccountAssignmentsForPrincipal, keyed by the group)."""
        require_resolved(assignment, "instance_arn", "group_id")
        pages = await paginate(
            self._sso_admin,
            "list_account_assignments_for_principal",
            InstanceArn=assignment.instance_arn,
            PrincipalId=assignment.group_id,
            PrincipalType="GROUP",
        )
        found = {
            (item["PermissionSetArn"], item["AccountId"])
            for page in pages
            for item in page.get("AccountAssignments", [])
        }
        return [
            SessionScope(
                instance_arn=assignment.instance_arn or "",
                permission_set_arn=permission_set_arn,
                account_id=account_id,
            )
            for permission_set_arn, account_id in sorted(found)
        ]

    @activity.defn(name=names.END_SESSIONS)
    async def end_sessions(self, input: SessionPolicyWrite) -> SessionPolicyResult:
        """Deny each revocation's sessions: merge every entry into the inline policy in one write
        (pruning what has expired), then provision the permission set to each account named."""
        duration = await self._longest_session(input)
        current = await self._inline_policy(input)
        revocations = {
            (item.user_id, item.account_id): item.denied_before for item in input.revocations
        }
        try:
            policy = session_policy.merge(
                current, revocations, now=self._now(), max_session=duration
            )
        except session_policy.PolicyTooLarge as error:
            raise ApplicationError(str(error), type="PolicyTooLarge", non_retryable=True) from None
        except ValueError as error:
            raise _unreadable(input, error) from None
        if policy != current:
            await self._put(input, policy)
        accounts = sorted({item.account_id for item in input.revocations})
        await self._provision(input, accounts)
        log.info(
            "sessions.denied",
            permission_set_arn=input.permission_set_arn,
            accounts=accounts,
            entries=len(revocations),
        )
        return _result(policy, duration, accounts)

    @activity.defn(name=names.PRUNE_SESSIONS)
    async def prune_sessions(self, input: SessionPolicyWrite) -> SessionPolicyResult:
        """Remove the entries no live session can match any more, and provision the accounts they
        were for. The longer of the permission set's session duration now and the one the writer
        recorded decides: shortening a permission set's sessions does not shorten open ones."""
        duration = await self._longest_session(input)
        current = await self._inline_policy(input)
        try:
            before = session_policy.entries(current)
            policy = session_policy.prune(current, now=self._now(), max_session=duration)
        except ValueError as error:
            raise _unreadable(input, error) from None
        gone = set(before) - set(session_policy.entries(policy))
        if policy != current:
            if policy is None:
                await call_aws(
                    self._sso_admin.delete_inline_policy_from_permission_set, **_arns(input)
                )
            else:
                await self._put(input, policy)
        accounts = sorted({account for _, account in gone})
        await self._provision(input, accounts)
        log.info(
            "sessions.pruned",
            permission_set_arn=input.permission_set_arn,
            accounts=accounts,
            entries=len(gone),
        )
        return _result(policy, duration, accounts)

    # --- helpers ---------------------------------------------------------------------------

    async def _longest_session(self, input: SessionPolicyWrite) -> timedelta:
        """The permission set's session duration now, or the longer one the writer has seen: a
        merge prunes too, and neither may drop an entry a session opened earlier still needs."""
        response = await call_aws(self._sso_admin.describe_permission_set, **_arns(input))
        text = response["PermissionSet"].get("SessionDuration")
        now = _ISO_DURATION.validate_python(text) if text else DEFAULT_SESSION
        return max(now, input.session_duration or timedelta(0))

    async def _inline_policy(self, input: SessionPolicyWrite) -> str | None:
        response = await call_aws(
            self._sso_admin.get_inline_policy_for_permission_set, **_arns(input)
        )
        return response.get("InlinePolicy") or None

    async def _put(self, input: SessionPolicyWrite, policy: str) -> None:
        await call_aws(
            self._sso_admin.put_inline_policy_to_permission_set,
            InlinePolicy=policy,
            **_arns(input),
        )

    async def _provision(self, input: SessionPolicyWrite, accounts: Iterable[str]) -> None:
        """Provision to each account and wait until AWS says SUCCEEDED; a retried attempt resumes
        waiting on the request its predecessor started."""
        pending = _pending_request()
        for account in accounts:
            if pending is not None and pending[0] == account:
                status = await self._describe(input, pending[1])
                pending = None
            else:
                response = await call_aws(
                    self._sso_admin.provision_permission_set,
                    TargetType="AWS_ACCOUNT",
                    TargetId=account,
                    **_arns(input),
                )
                status = response["PermissionSetProvisioningStatus"]
            while status.get("Status") == "IN_PROGRESS":
                activity.heartbeat(f"{_PROVISIONING_PREFIX}{account} {status['RequestId']}")
                await asyncio.sleep(self._poll_interval)
                status = await self._describe(input, status["RequestId"])
            if status.get("Status") != "SUCCEEDED":
                raise ApplicationError(
                    f"AWS could not provision permission set {input.permission_set_arn} to "
                    f"account {account}: {status.get('FailureReason') or status.get('Status')}; "
                    "Keycard will retry",
                    type="ProvisioningFailed",
                )

    async def _describe(self, input: SessionPolicyWrite, request_id: str) -> dict[str, Any]:
        response = await call_aws(
            self._sso_admin.describe_permission_set_provisioning_status,
            InstanceArn=input.instance_arn,
            ProvisionPermissionSetRequestId=request_id,
        )
        return response["PermissionSetProvisioningStatus"]


def _arns(input: SessionPolicyWrite) -> dict[str, str]:
    return {"InstanceArn": input.instance_arn, "PermissionSetArn": input.permission_set_arn}


def _result(policy: str | None, duration: timedelta, accounts: list[str]) -> SessionPolicyResult:
    return SessionPolicyResult(
        session_duration=duration,
        denied={
            f"{user}:{account}": before
            for (user, account), before in session_policy.entries(policy).items()
        },
        provisioned=accounts,
    )


def _unreadable(input: SessionPolicyWrite, error: ValueError) -> ApplicationError:
    return ApplicationError(
        f"the inline policy of permission set {input.permission_set_arn} is not a policy Keycard "
        f"can read ({error}); fix it in IAM Identity Center",
        type="InvalidPolicy",
        non_retryable=True,
    )


def _pending_request() -> tuple[str, str] | None:
    """(account, AWS request id) a previous attempt was waiting on, if it said so."""
    details = activity.info().heartbeat_details
    if details and isinstance(details[0], str) and details[0].startswith(_PROVISIONING_PREFIX):
        account, _, request_id = details[0].removeprefix(_PROVISIONING_PREFIX).partition(" ")
        return account, request_id
    return None
