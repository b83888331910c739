"""IAM Identity Center strategies: permission-set account assignments and group memberships.

Longer than most modules: both Identity Center strategies share the lookups (instance, user, group)
and the wait for AWS's asynchronous assignment status, which are best read beside the calls.

`aws_sso`        assigns a permission set to the user (PrincipalType USER) in one AWS account.
`aws_sso_group`  adds the user to an Identity Center group, found by its display name.

The user is the Identity Center user whose email (`emails.value`) is the requester's address.
The instance ARN and identity store id come from keycard.yaml (`aws.sso_instance_arn`,
`aws.identity_store_id`); left out, Keycard uses the account's only Identity Center instance.

Every operation is idempotent, so a retried activity is harmless: a retry looks before it changes
anything, and granting what is already there and revoking what is already gone both succeed. A
first attempt changes at once (the GrantWorkflow has just looked), saving a call per change.
Account assignments are asynchronous in AWS; grant and revoke return only once AWS reports the
change SUCCEEDED, heartbeating while they wait, and a retried attempt resumes waiting on the
request its predecessor started.

IAM actions the worker's role needs: sso:ListInstances, sso:ListPermissionSets,
sso:DescribePermissionSet, sso:ListAccountAssignmentsForPrincipal (and sso:ListAccountAssignments
and identitystore:DescribeUser for the drift sweep and `keycard doctor`), sso:CreateAccountAssignment, sso:DeleteAccountAssignment, sso:DescribeAccountAssignmentCreationStatus,
sso:DescribeAccountAssignmentDeletionStatus, identitystore:GetUserId, identitystore:GetGroupId,
identitystore:GetGroupMembershipId, identitystore:CreateGroupMembership,
identitystore:DeleteGroupMembership (plus the iam:/organizations: actions AWS documents for
creating account assignments).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from cachetools import TTLCache
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws_errors import (
    call_aws,
    is_conflict,
    is_not_found,
    paginate,
    require_resolved,
    require_spec,
)
from keycard.models import ResolvedAssignment, ResolveInput

log = structlog.get_logger(__name__)
A = TypeVar("A")
B = TypeVar("B")

# How long to wait between asking AWS whether an account assignment change has finished. AWS
# usually finishes in seconds; the activity heartbeats on every poll, so the workflow's heartbeat
# timeout must be comfortably longer than this plus one API call (30 s is plenty).
POLL_INTERVAL_SECONDS = 2.0
# A person's Identity Center user id changes only if they are deleted and made again, and every
# request's check before PENDING looked it up. A user id AWS gave is trusted this long: someone
# removed meanwhile still gets no access (the grant fails with AWS's reason, and the id is
# forgotten). Permission sets are still confirmed on every request: one recreated under the same
# name must resolve to its new ARN at once.
IDENTITY_TTL_SECONDS = 300
IDENTITY_CACHE_SIZE = 10_000

# What a polling attempt heartbeats, so the next attempt of the same activity can resume waiting.
_CREATION_PREFIX = "aws_sso creation request "
_DELETION_PREFIX = "aws_sso deletion request "


def no_such_user(email: str) -> ApplicationError:
    return ApplicationError(
        f"no Identity Center user has the email {email}", type="NoSuchUser", non_retryable=True
    )


class IdentityCenter:
    """The Identity Center instance Keycard works in, and the lookups both SSO strategies share."""

    def __init__(
        self,
        sso_admin: Any,
        identitystore: Any,
        *,
        instance_arn: str | None = None,
        identity_store_id: str | None = None,
    ) -> None:
        self.sso_admin = sso_admin
        self.identitystore = identitystore
        self._instance_arn = instance_arn
        self._identity_store_id = identity_store_id
        self._user_ids: TTLCache[tuple[str, str], str] = identity_cache()
        self._finding = asyncio.Lock()

    async def instance(self) -> tuple[str, str]:
        """(instance ARN, identity store id): as configured, else the account's only instance."""
        if self._instance_arn and self._identity_store_id:
            return self._instance_arn, self._identity_store_id
        async with self._finding:  # a burst of first requests lists the instances once
            if self._instance_arn and self._identity_store_id:
                return self._instance_arn, self._identity_store_id
            return await self._find_instance()

    async def _find_instance(self) -> tuple[str, str]:
        pages = await paginate(self.sso_admin, "list_instances")
        instances = [item for page in pages for item in page.get("Instances", [])]
        if self._instance_arn:
            matches = [i for i in instances if i["InstanceArn"] == self._instance_arn]
            if not matches:
                raise ApplicationError(
                    f"there is no Identity Center instance {self._instance_arn} in this account "
                    "and region; check aws.sso_instance_arn and aws.region in keycard.yaml",
                    type="NoSuchInstance",
                    non_retryable=True,
                )
            found = matches[0]
        elif len(instances) == 1:
            found = instances[0]
        else:
            arns = ", ".join(i["InstanceArn"] for i in instances)
            problem = f"found {len(instances)} ({arns})" if instances else "found none"
            raise ApplicationError(
                f"Keycard needs exactly one Identity Center instance but {problem} in this "
                "account and region; set aws.sso_instance_arn (and aws.region) in keycard.yaml",
                type="NoSuchInstance",
                non_retryable=True,
            )
        store_id = found["IdentityStoreId"]
        if self._identity_store_id and self._identity_store_id != store_id:
            raise ApplicationError(
                f"aws.identity_store_id is {self._identity_store_id} but Identity Center instance "
                f"{found['InstanceArn']} uses identity store {store_id}; fix keycard.yaml",
                type="NoSuchInstance",
                non_retryable=True,
            )
        self._instance_arn, self._identity_store_id = found["InstanceArn"], store_id
        return self._instance_arn, self._identity_store_id

    def forget_user(self, email: str) -> None:
        for key in [k for k in self._user_ids if k[1] == email.lower()]:
            self._user_ids.pop(key, None)

    async def user_id(self, identity_store_id: str, email: str) -> str:
        key = (identity_store_id, email.lower())
        if key in self._user_ids:
            return self._user_ids[key]
        response = await call_aws(
            self.identitystore.get_user_id,
            IdentityStoreId=identity_store_id,
            AlternateIdentifier={
                "UniqueAttribute": {"AttributePath": "emails.value", "AttributeValue": email}
            },
            if_not_found=no_such_user(email),
        )
        self._user_ids[key] = response["UserId"]
        return response["UserId"]


class AwsSsoStrategy:
    """`aws_sso`: a permission set assigned to the user in one AWS account."""

    def __init__(
        self,
        sso_admin: Any,
        identitystore: Any,
        *,
        instance_arn: str | None = None,
        identity_store_id: str | None = None,
        poll_interval: float = POLL_INTERVAL_SECONDS,
    ) -> None:
        self._center = IdentityCenter(
            sso_admin,
            identitystore,
            instance_arn=instance_arn,
            identity_store_id=identity_store_id,
        )
        self._sso_admin = sso_admin
        self._poll_interval = poll_interval
        self._permission_set_arns: dict[tuple[str, str], str] = {}
        self._listing = asyncio.Lock()

    def activities(self) -> list[Callable[..., Any]]:
        return [self.resolve, self.exists, self.grant, self.revoke]

    @activity.defn(name="aws_sso.resolve")
    async def resolve(self, input: ResolveInput) -> ResolvedAssignment:
        spec = input.spec
        require_spec(spec, "aws_sso", "account_id", "permission_set")
        assert spec.permission_set is not None
        instance_arn, identity_store_id = await self._center.instance()
        # Two independent lookups, side by side: the request waits for one round trip, not two.
        user_id, permission_set_arn = await both(
            self._center.user_id(identity_store_id, spec.principal_email),
            self._permission_set_arn(instance_arn, spec.permission_set),
        )
        return ResolvedAssignment(
            spec=spec,
            principal_id=user_id,
            instance_arn=instance_arn,
            identity_store_id=identity_store_id,
            permission_set_arn=permission_set_arn,
        )

    async def permission_set(self, name_or_arn: str) -> tuple[str, str]:
        """(instance ARN, permission set ARN) of a target's `permission_set` (for the drift sweep)."""
        instance_arn, _ = await self._center.instance()
        return instance_arn, await self._permission_set_arn(instance_arn, name_or_arn)

    async def _permission_set_arn(self, instance_arn: str, name_or_arn: str) -> str:
        if name_or_arn.startswith("arn:"):
            return await self._check_permission_set(instance_arn, name_or_arn)
        return await self._find_permission_set(instance_arn, name_or_arn)

    async def user_email(self, user_id: str) -> str | None:
        """The primary email of an Identity Center user (for the drift sweep's reports)."""
        _, identity_store_id = await self._center.instance()
        try:
            user = await call_aws(
                self._center.identitystore.describe_user,
                IdentityStoreId=identity_store_id,
                UserId=user_id,
            )
        except ApplicationError as error:
            if is_not_found(error):
                return None
            raise
        emails = user.get("Emails") or []
        primary = [e for e in emails if e.get("Primary")] or emails
        return primary[0].get("Value") if primary else None

    async def holders(self, instance_arn: str, account_id: str, permission_set_arn: str):
        """Every (principal type, principal id) assigned the permission set in the account."""
        pages = await paginate(
            self._sso_admin,
            "list_account_assignments",
            InstanceArn=instance_arn,
            AccountId=account_id,
            PermissionSetArn=permission_set_arn,
        )
        return [
            (item["PrincipalType"], item["PrincipalId"])
            for page in pages
            for item in page.get("AccountAssignments", [])
        ]

    @activity.defn(name="aws_sso.exists")
    async def exists(self, assignment: ResolvedAssignment) -> bool:
        require_resolved(assignment, "instance_arn", "permission_set_arn")
        # Keyed by the person: the cost follows their own assignments in the account, not
        # everyone's who holds the permission set there.
        pages = await paginate(
            self._sso_admin,
            "list_account_assignments_for_principal",
            InstanceArn=assignment.instance_arn,
            PrincipalId=assignment.principal_id,
            PrincipalType="USER",
            Filter={"AccountId": assignment.spec.account_id or ""},
        )
        return any(
            item.get("PermissionSetArn") == assignment.permission_set_arn
            and item.get("AccountId") == assignment.spec.account_id
            for page in pages
            for item in page.get("AccountAssignments", [])
        )

    @activity.defn(name="aws_sso.grant")
    async def grant(self, assignment: ResolvedAssignment) -> None:
        """Create the assignment. The GrantWorkflow calls `exists` just before (to tell standing
        access from its own), so a first attempt creates at once; a retry looks first, since an
        earlier attempt may have created it."""
        require_resolved(assignment, "instance_arn", "permission_set_arn")
        pending = _pending_request(_CREATION_PREFIX)
        if pending and await self._wait_for_creation(assignment, pending, resumed=True):
            return
        if _is_retry() and await self.exists(assignment):
            log.info("aws_sso.already_assigned", **assignment_log_fields(assignment))
            return
        try:
            response = await call_aws(
                self._sso_admin.create_account_assignment,
                **self._target(assignment),
                if_not_found=self._target_gone(assignment),
            )
        except ApplicationError as error:
            if not is_conflict(error):
                self._forget(assignment)  # the next request looks the person up again
            # A ConflictException is either "already exists" or "another change in progress":
            # only a fresh look tells which, and only the first is success.
            if is_conflict(error) and await self.exists(assignment):
                log.info("aws_sso.already_assigned", **assignment_log_fields(assignment))
                return
            raise
        status = response["AccountAssignmentCreationStatus"]
        log.info(
            "aws_sso.assigning",
            aws_request_id=status.get("RequestId"),  # AWS's id; request_id is a Keycard request
            **assignment_log_fields(assignment),
        )
        try:
            await self._wait_for_creation(assignment, status["RequestId"], status=status)
        except ApplicationError:
            self._forget(assignment)
            raise
        log.info("aws_sso.assigned", **assignment_log_fields(assignment))

    @activity.defn(name="aws_sso.revoke")
    async def revoke(self, assignment: ResolvedAssignment) -> None:
        require_resolved(assignment, "instance_arn", "permission_set_arn")
        pending = _pending_request(_DELETION_PREFIX)
        if pending and await self._wait_for_deletion(assignment, pending, resumed=True):
            return
        # A first attempt deletes at once: the GrantWorkflow removes only what it created. When
        # the assignment is not there (removed by hand, its permission set deleted), AWS answers
        # not found and a look confirms it. A retry looks first.
        if _is_retry() and not await self.exists(assignment):
            log.info("aws_sso.already_unassigned", **assignment_log_fields(assignment))
            return
        try:
            response = await call_aws(
                self._sso_admin.delete_account_assignment, **self._target(assignment)
            )
        except ApplicationError as error:
            if is_not_found(error) and not await self.exists(assignment):
                log.info("aws_sso.already_unassigned", **assignment_log_fields(assignment))
                return
            raise
        status = response["AccountAssignmentDeletionStatus"]
        log.info(
            "aws_sso.unassigning",
            aws_request_id=status.get("RequestId"),  # AWS's id; request_id is a Keycard request
            **assignment_log_fields(assignment),
        )
        await self._wait_for_deletion(assignment, status["RequestId"], status=status)
        log.info("aws_sso.unassigned", **assignment_log_fields(assignment))

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _target(assignment: ResolvedAssignment) -> dict[str, str]:
        return {
            "InstanceArn": assignment.instance_arn or "",
            "TargetId": assignment.spec.account_id or "",
            "TargetType": "AWS_ACCOUNT",
            "PermissionSetArn": assignment.permission_set_arn or "",
            "PrincipalType": "USER",
            "PrincipalId": assignment.principal_id,
        }

    def _forget(self, assignment: ResolvedAssignment) -> None:
        """The user id remembered for this assignment's person may be why AWS said not found."""
        self._center.forget_user(assignment.spec.principal_email)

    @staticmethod
    def _target_gone(assignment: ResolvedAssignment) -> ApplicationError:
        return ApplicationError(
            f"permission set {assignment.spec.permission_set} ({assignment.permission_set_arn}) "
            f"or the user {assignment.spec.principal_email} ({assignment.principal_id}) no "
            "longer exists in Identity Center",
            type="NoSuchPermissionSet",
            non_retryable=True,
        )

    async def _check_permission_set(self, instance_arn: str, arn: str) -> str:
        await call_aws(
            self._sso_admin.describe_permission_set,
            InstanceArn=instance_arn,
            PermissionSetArn=arn,
            if_not_found=ApplicationError(
                f"there is no permission set {arn} in Identity Center instance {instance_arn}",
                type="NoSuchPermissionSet",
                non_retryable=True,
            ),
        )
        return arn

    async def _find_permission_set(self, instance_arn: str, name: str) -> str:
        # Finding a name means describing every permission set, and sso-admin's rate limits are
        # low; remember what was seen, and trust a remembered ARN only after AWS confirms it.
        cached = self._permission_set_arns.get((instance_arn, name))
        if cached:
            try:
                response = await call_aws(
                    self._sso_admin.describe_permission_set,
                    InstanceArn=instance_arn,
                    PermissionSetArn=cached,
                )
            except ApplicationError as error:
                if not is_not_found(error):
                    raise
            else:
                if response["PermissionSet"].get("Name") == name:
                    return cached
            self._permission_set_arns.pop((instance_arn, name), None)
        async with self._listing:  # one listing at a time: a burst of first requests shares it
            found = self._permission_set_arns.get((instance_arn, name))
            if found and found != cached:  # another request's listing just saw it
                return found
            return await self._list_permission_sets(instance_arn, name)

    async def _list_permission_sets(self, instance_arn: str, name: str) -> str:
        pages = await paginate(self._sso_admin, "list_permission_sets", InstanceArn=instance_arn)
        names = []
        for arn in (arn for page in pages for arn in page.get("PermissionSets", [])):
            response = await call_aws(
                self._sso_admin.describe_permission_set,
                InstanceArn=instance_arn,
                PermissionSetArn=arn,
            )
            found = response["PermissionSet"].get("Name", "")
            self._permission_set_arns[(instance_arn, found)] = arn
            if found == name:
                return arn
            names.append(found)
        known = ", ".join(sorted(names)[:20]) or "none"
        if len(names) > 20:
            known += f" and {len(names) - 20} more"
        raise ApplicationError(
            f"there is no permission set named {name} in Identity Center instance {instance_arn} "
            f"(it has: {known})",
            type="NoSuchPermissionSet",
            non_retryable=True,
        )

    async def _wait_for_creation(
        self,
        assignment: ResolvedAssignment,
        request_id: str,
        *,
        status: dict[str, Any] | None = None,
        resumed: bool = False,
    ) -> bool:
        return await self._wait(
            assignment,
            request_id,
            status,
            resumed=resumed,
            heartbeat_prefix=_CREATION_PREFIX,
            describe=self._sso_admin.describe_account_assignment_creation_status,
            id_param="AccountAssignmentCreationRequestId",
            result_key="AccountAssignmentCreationStatus",
            on_failure=lambda reason: ApplicationError(
                f"AWS could not assign permission set {assignment.spec.permission_set} to "
                f"{assignment.spec.principal_email} in account {assignment.spec.account_id}: "
                f"{reason}",
                {"aws_request_id": request_id},
                type="InvalidTarget",
                non_retryable=True,
            ),
        )

    async def _wait_for_deletion(
        self,
        assignment: ResolvedAssignment,
        request_id: str,
        *,
        status: dict[str, Any] | None = None,
        resumed: bool = False,
    ) -> bool:
        # Unlike a failed grant, a failed removal is retried: access must not outlive its lease,
        # and the delete is safe to repeat. The retry policy's cap and the workflow's alert
        # decide when a person has to look.
        return await self._wait(
            assignment,
            request_id,
            status,
            resumed=resumed,
            heartbeat_prefix=_DELETION_PREFIX,
            describe=self._sso_admin.describe_account_assignment_deletion_status,
            id_param="AccountAssignmentDeletionRequestId",
            result_key="AccountAssignmentDeletionStatus",
            on_failure=lambda reason: ApplicationError(
                f"AWS could not remove permission set {assignment.spec.permission_set} from "
                f"{assignment.spec.principal_email} in account {assignment.spec.account_id}: "
                f"{reason}; Keycard will retry",
                {"aws_request_id": request_id},
                type="RevokeFailed",
                non_retryable=False,
            ),
        )

    async def _wait(
        self,
        assignment: ResolvedAssignment,
        request_id: str,
        status: dict[str, Any] | None,
        *,
        resumed: bool,
        heartbeat_prefix: str,
        describe: Callable[..., dict[str, Any]],
        id_param: str,
        result_key: str,
        on_failure: Callable[[str], ApplicationError],
    ) -> bool:
        """Poll one AWS request until it is done. True once it SUCCEEDED; raises if it FAILED.

        When `resumed` (the request id came from a previous attempt's heartbeat) and AWS no longer
        knows the request, or it failed in a way worth retrying, returns False so the caller
        starts over.
        """
        while status is None or status.get("Status") == "IN_PROGRESS":
            if status is not None:
                activity.heartbeat(heartbeat_prefix + request_id)
                await asyncio.sleep(self._poll_interval)
            try:
                response = await call_aws(
                    describe, InstanceArn=assignment.instance_arn, **{id_param: request_id}
                )
            except ApplicationError as error:
                if resumed and is_not_found(error):
                    return False
                raise
            status = response[result_key]
            activity.heartbeat(heartbeat_prefix + request_id)
        if status.get("Status") == "SUCCEEDED":
            return True
        if status.get("Status") == "FAILED":
            failure = on_failure(status.get("FailureReason") or "no reason given")
            if resumed and not failure.non_retryable:
                return False  # a previous attempt already reported this; try the change afresh
            raise failure
        raise ApplicationError(
            f"AWS reported an unknown status {status.get('Status')!r} for request {request_id}",
            type="AwsError",
        )


async def both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Await two lookups at once. When both fail, the first one's error is the one raised, so
    the message does not depend on which answer came back first."""
    results = await asyncio.gather(first, second, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results[0], results[1]  # type: ignore[return-value]


def _is_retry() -> bool:
    return activity.info().attempt > 1


def _pending_request(prefix: str) -> str | None:
    """The AWS request a previous attempt of this activity was waiting on, if it said so."""
    details = activity.info().heartbeat_details
    if details and isinstance(details[0], str) and details[0].startswith(prefix):
        return details[0].removeprefix(prefix)
    return None


def identity_cache() -> TTLCache:
    return TTLCache(maxsize=IDENTITY_CACHE_SIZE, ttl=IDENTITY_TTL_SECONDS)


def assignment_log_fields(assignment: ResolvedAssignment) -> dict[str, Any]:
    spec = assignment.spec
    fields: dict[str, Any] = {
        "principal": spec.principal_email,
        "principal_id": assignment.principal_id,
    }
    if spec.account_id:
        fields["account_id"] = spec.account_id
    if spec.permission_set:
        fields["permission_set"] = spec.permission_set
    if spec.group:
        fields["group"] = spec.group
    return fields


class AwsSsoGroupStrategy:
    """`aws_sso_group`: the user is a member of an Identity Center group (found by display name)."""

    def __init__(
        self,
        sso_admin: Any,
        identitystore: Any,
        *,
        instance_arn: str | None = None,
        identity_store_id: str | None = None,
    ) -> None:
        self._center = IdentityCenter(
            sso_admin,
            identitystore,
            instance_arn=instance_arn,
            identity_store_id=identity_store_id,
        )
        self._identitystore = identitystore

    def activities(self) -> list[Callable[..., Any]]:
        return [self.resolve, self.exists, self.grant, self.revoke]

    @activity.defn(name="aws_sso_group.resolve")
    async def resolve(self, input: ResolveInput) -> ResolvedAssignment:
        spec = input.spec
        require_spec(spec, "aws_sso_group", "group")
        instance_arn, identity_store_id = await self._center.instance()
        user_id, group_id = await both(
            self._center.user_id(identity_store_id, spec.principal_email),
            self._group_id(identity_store_id, spec.group),
        )
        return ResolvedAssignment(
            spec=spec,
            principal_id=user_id,
            instance_arn=instance_arn,
            identity_store_id=identity_store_id,
            group_id=group_id,
        )

    async def _group_id(self, identity_store_id: str, group: str) -> str:
        response = await call_aws(
            self._identitystore.get_group_id,
            IdentityStoreId=identity_store_id,
            AlternateIdentifier={
                "UniqueAttribute": {"AttributePath": "displayName", "AttributeValue": group}
            },
            if_not_found=ApplicationError(
                f"there is no Identity Center group named {group}",
                type="NoSuchGroup",
                non_retryable=True,
            ),
        )
        return response["GroupId"]

    @activity.defn(name="aws_sso_group.exists")
    async def exists(self, assignment: ResolvedAssignment) -> bool:
        return await self._membership_id(assignment) is not None

    @activity.defn(name="aws_sso_group.grant")
    async def grant(self, assignment: ResolvedAssignment) -> None:
        require_resolved(assignment, "identity_store_id", "group_id")
        if await self.exists(assignment):
            log.info("aws_sso_group.already_member", **assignment_log_fields(assignment))
            return
        try:
            await call_aws(
                self._identitystore.create_group_membership,
                IdentityStoreId=assignment.identity_store_id,
                GroupId=assignment.group_id,
                MemberId={"UserId": assignment.principal_id},
                if_not_found=ApplicationError(
                    f"the Identity Center group {assignment.spec.group} or the user "
                    f"{assignment.spec.principal_email} no longer exists",
                    type="NoSuchGroup",
                    non_retryable=True,
                ),
            )
        except ApplicationError as error:
            # ConflictException: already a member, or a concurrent change; a fresh look tells.
            if is_conflict(error) and await self.exists(assignment):
                log.info("aws_sso_group.already_member", **assignment_log_fields(assignment))
                return
            raise
        log.info("aws_sso_group.added", **assignment_log_fields(assignment))

    @activity.defn(name="aws_sso_group.revoke")
    async def revoke(self, assignment: ResolvedAssignment) -> None:
        require_resolved(assignment, "identity_store_id", "group_id")
        membership_id = await self._membership_id(assignment)
        if membership_id is None:
            log.info("aws_sso_group.already_not_member", **assignment_log_fields(assignment))
            return
        try:
            await call_aws(
                self._identitystore.delete_group_membership,
                IdentityStoreId=assignment.identity_store_id,
                MembershipId=membership_id,
            )
        except ApplicationError as error:
            if not is_not_found(error):
                raise  # not found: removed meanwhile, which is what we wanted
        log.info("aws_sso_group.removed", **assignment_log_fields(assignment))

    async def _membership_id(self, assignment: ResolvedAssignment) -> str | None:
        require_resolved(assignment, "identity_store_id", "group_id")
        try:
            response = await call_aws(
                self._identitystore.get_group_membership_id,
                IdentityStoreId=assignment.identity_store_id,
                GroupId=assignment.group_id,
                MemberId={"UserId": assignment.principal_id},
            )
        except ApplicationError as error:
            if is_not_found(error):
                return None
            raise
        return response["MembershipId"]
