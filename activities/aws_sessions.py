"""Ending the AWS sessions an Identity Center grant allowed: the writes of a permission set's
inline policy that keycard/session_policy.py composes, and the provisioning that puts them in force.

(A little over the usual length: the policy writes and the provisioning wait are one operation.)

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

A flow may keep its entries in a customer-managed policy instead (`end_sessions_policy`): the
worker assumes the flow's role in the grant's account (sts:AssumeRole) and writes a new default
version of the policy there (iam:GetPolicy, iam:GetPolicyVersion, iam:ListPolicyVersions,
iam:CreatePolicyVersion, iam:DeletePolicyVersion). IAM keeps five versions of a policy: the oldest
one that is not the default goes to make room. No provisioning: the permission set's role already
attaches the policy by name, and IAM applies a new default version to it within seconds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import TypeAdapter
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws_errors import call_aws, error_code, paginate, require_resolved
from keycard import session_policy
from keycard import temporal as names
from keycard.config import SessionsPolicy
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
# ... and with a customer-managed policy (`end_sessions_policy`), through the flow's role.
MANAGED_POLICY_ACTIONS = (
    "iam:GetPolicy",
    "iam:GetPolicyVersion",
    "iam:ListPolicyVersions",
    "iam:CreatePolicyVersion",
    "iam:DeletePolicyVersion",
)
POLICY_VERSIONS_KEPT = 5  # IAM's limit of versions per managed policy
# Assumed-role credentials are reused until this long before they expire.
_CREDENTIALS_MARGIN = timedelta(minutes=5)

# Makes an IAM client from assumed-role credentials (AccessKeyId, SecretAccessKey, SessionToken).
IamClientFactory = Callable[[dict[str, Any]], Any]


class SessionPolicies:
    """The inline-policy writes of `end_sessions`, on one sso-admin client."""

    def __init__(
        self,
        sso_admin: Any,
        *,
        sts: Any = None,
        iam_client: IamClientFactory | None = None,
        poll_interval: float = POLL_INTERVAL_SECONDS,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._sso_admin = sso_admin
        self._sts = sts
        self._iam_client = iam_client
        self._iam: dict[str, tuple[Any, datetime]] = {}  # role ARN -> (client, credentials expiry)
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
        (pruning what has expired), then provision the permission set to each account named.
        With a customer-managed policy: merge each account's entries into that account's policy."""
        if input.policy is not None:
            return await self._end_in_managed_policies(input, input.policy)
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
        if input.policy is not None:
            return await self._prune_managed_policies(input, input.policy)
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
        accounts = sorted({key[1] for key in gone})
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
        """The permission set's session duration now (the longest of the permission sets a
        customer-managed policy's writer has served), or the longer one the writer has seen: a
        merge prunes too, and neither may drop an entry a session opened earlier still needs."""
        longest = input.session_duration or timedelta(0)
        for _, duration in (await self._permission_sets(input)).values():
            longest = max(longest, duration)
        return longest

    async def _permission_sets(self, input: SessionPolicyWrite) -> dict[str, tuple[str, timedelta]]:
        """ARN -> (name, session duration) of each permission set the writer serves."""
        found = {}
        for arn in dict.fromkeys([input.permission_set_arn, *input.permission_sets]):
            response = await call_aws(
                self._sso_admin.describe_permission_set,
                InstanceArn=input.instance_arn,
                PermissionSetArn=arn,
            )
            described = response["PermissionSet"]
            text = described.get("SessionDuration")
            duration = _ISO_DURATION.validate_python(text) if text else DEFAULT_SESSION
            found[arn] = (described.get("Name", ""), duration)
        return found

    # --- a customer-managed policy in each account (end_sessions_policy) ------------------------

    async def _end_in_managed_policies(
        self, input: SessionPolicyWrite, policy: SessionsPolicy
    ) -> SessionPolicyResult:
        """Each account's entries into that account's policy, scoped to the permission set's
        role; the result reads every account the writer knows, so it is the whole picture."""
        sets = await self._permission_sets(input)
        duration = max([input.session_duration or timedelta(0), *(d for _, d in sets.values())])
        by_account: dict[str, dict[session_policy.Key, datetime]] = {}
        for item in input.revocations:
            name = sets[item.permission_set_arn or input.permission_set_arn][0]
            key = (item.user_id, item.account_id, name)
            by_account.setdefault(item.account_id, {})[key] = item.denied_before
        denied: dict[str, datetime] = {}
        for account in sorted({*by_account, *input.accounts}):
            managed = await self._managed_policy(input, policy, account)
            current = await managed.read()
            try:
                if account in by_account:
                    document = session_policy.merge(
                        current,
                        by_account[account],
                        now=self._now(),
                        max_session=duration,
                        limit=session_policy.MANAGED_POLICY_LIMIT,
                    )
                else:
                    document = current
            except session_policy.PolicyTooLarge as error:
                raise ApplicationError(
                    f"customer-managed policy {managed.arn}: {error}",
                    type="PolicyTooLarge",
                    non_retryable=True,
                ) from None
            except ValueError as error:
                raise _unreadable_managed(managed.arn, error) from None
            if document != current:
                await managed.write(document)
            denied.update(_denied(document))
        log.info(
            "sessions.denied",
            policy=f"{policy.path}{policy.name}",
            accounts=sorted(by_account),
            entries=len(input.revocations),
        )
        return _managed_result(denied, duration)

    async def _prune_managed_policies(
        self, input: SessionPolicyWrite, policy: SessionsPolicy
    ) -> SessionPolicyResult:
        duration = await self._longest_session(input)
        denied: dict[str, datetime] = {}
        for account in input.accounts:
            managed = await self._managed_policy(input, policy, account)
            current = await managed.read()
            try:
                document = session_policy.prune(
                    current, now=self._now(), max_session=duration, keep=True
                )
            except ValueError as error:
                raise _unreadable_managed(managed.arn, error) from None
            if document is not None and document != current:
                await managed.write(document)
            denied.update(_denied(document))
        log.info(
            "sessions.pruned",
            policy=f"{policy.path}{policy.name}",
            accounts=input.accounts,
            entries=len(denied),
        )
        return _managed_result(denied, duration)

    async def _managed_policy(
        self, input: SessionPolicyWrite, policy: SessionsPolicy, account: str
    ) -> _ManagedPolicy:
        partition = session_policy.partition(input.instance_arn)
        role_arn = policy.role_arn(account, partition)
        return _ManagedPolicy(
            await self._iam_for(role_arn), policy.policy_arn(account, partition), role_arn
        )

    async def _iam_for(self, role_arn: str) -> Any:
        """An IAM client acting as `role_arn`, assumed once and reused until near its expiry."""
        if self._sts is None or self._iam_client is None:
            raise ApplicationError(
                "this worker was built without STS, so it cannot write customer-managed "
                "policies (end_sessions_policy)",
                type="InvalidTarget",
                non_retryable=True,
            )
        cached = self._iam.get(role_arn)
        if cached is not None and cached[1] - _CREDENTIALS_MARGIN > datetime.now(UTC):
            return cached[0]
        response = await call_aws(
            self._sts.assume_role, RoleArn=role_arn, RoleSessionName="keycard-end-sessions"
        )
        credentials = response["Credentials"]
        client = self._iam_client(credentials)
        expires = credentials.get("Expiration") or datetime.now(UTC) + timedelta(hours=1)
        self._iam[role_arn] = (client, expires)
        return client

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


class _ManagedPolicy:
    """One account's customer-managed policy, read and written through the flow's role there."""

    def __init__(self, iam: Any, arn: str, role_arn: str) -> None:
        self._iam = iam
        self.arn = arn
        self._role_arn = role_arn

    async def read(self) -> str:
        described = await self._call(self._iam.get_policy, PolicyArn=self.arn)
        version = await self._call(
            self._iam.get_policy_version,
            PolicyArn=self.arn,
            VersionId=described["Policy"]["DefaultVersionId"],
        )
        document = version["PolicyVersion"]["Document"]
        # boto3 decodes the URL-encoded document; a raw string is still possible from stubs.
        return document if isinstance(document, str) else json.dumps(document)

    async def write(self, document: str) -> None:
        """A new default version, after deleting the oldest other one if IAM's five are taken."""
        listed = await self._call(self._iam.list_policy_versions, PolicyArn=self.arn)
        versions = listed.get("Versions", [])
        if len(versions) >= POLICY_VERSIONS_KEPT:
            oldest = min(
                (v for v in versions if not v.get("IsDefaultVersion")),
                key=lambda v: v["CreateDate"],
            )
            await self._call(
                self._iam.delete_policy_version, PolicyArn=self.arn, VersionId=oldest["VersionId"]
            )
        await self._call(
            self._iam.create_policy_version,
            PolicyArn=self.arn,
            PolicyDocument=document,
            SetAsDefault=True,
        )

    async def _call(self, call: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return await call_aws(call, **kwargs)
        except ApplicationError as error:
            if error_code(error) == "NoSuchEntity":
                raise ApplicationError(
                    f"customer-managed policy {self.arn} does not exist; the permission set "
                    "references it, so create it in that account (any statement will do, e.g. "
                    "Allow sts:GetCallerIdentity) or fix the flow's end_sessions_policy",
                    type="PolicyMissing",
                    non_retryable=True,
                ) from None
            if error.type == "AccessDenied":
                raise ApplicationError(
                    f"role {self._role_arn} may not change {self.arn}: allow "
                    f"{', '.join(MANAGED_POLICY_ACTIONS)} on it in that role's policy",
                    type="AccessDenied",
                    non_retryable=True,
                ) from None
            raise


def _denied(document: str | None) -> dict[str, datetime]:
    """'<user id>:<account id>[:<permission set name>]' -> denied before."""
    return {":".join(key): before for key, before in session_policy.entries(document).items()}


def _managed_result(denied: dict[str, datetime], duration: timedelta) -> SessionPolicyResult:
    accounts = sorted({key.split(":")[1] for key in denied})  # those with entries left
    return SessionPolicyResult(session_duration=duration, denied=denied, accounts=accounts)


def _unreadable_managed(arn: str, error: ValueError) -> ApplicationError:
    return ApplicationError(
        f"customer-managed policy {arn} is not a policy Keycard can read ({error}); fix it in IAM",
        type="InvalidPolicy",
        non_retryable=True,
    )


def _arns(input: SessionPolicyWrite) -> dict[str, str]:
    return {"InstanceArn": input.instance_arn, "PermissionSetArn": input.permission_set_arn}


def _result(policy: str | None, duration: timedelta, accounts: list[str]) -> SessionPolicyResult:
    return SessionPolicyResult(
        session_duration=duration, denied=_denied(policy), provisioned=accounts
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
