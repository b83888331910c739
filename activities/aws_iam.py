"""IAM group strategy (`aws_iam_group`): an IAM user added to, and removed from, an IAM group.

Which IAM user a requester is:
1. the IAM user whose UserName is the requester's email address (IAM allows @ and . in names);
2. otherwise the one IAM user tagged `email=<address>` (tag key `email`, value compared without
   regard to case). Finding it reads every user's tags, one call per user, so large accounts should
   prefer rule 1. Two users tagged with the same address is an error, never a guess.

The resolved assignment carries names, because the IAM API takes names: `principal_id` is the IAM
UserName and `group_id` the GroupName, both as IAM spells them.

IAM actions the worker's role needs: iam:GetUser, iam:ListUsers, iam:ListUserTags, iam:GetGroup,
iam:ListGroupsForUser, iam:AddUserToGroup, iam:RemoveUserFromGroup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aws_errors import call_aws, is_not_found, paginate, require_resolved, require_spec
from activities.aws_sso import assignment_log_fields
from keycard.models import ResolvedAssignment, ResolveInput

log = structlog.get_logger(__name__)

EMAIL_TAG = "email"


class AwsIamGroupStrategy:
    """`aws_iam_group`: the requester's IAM user is a member of an IAM group."""

    def __init__(self, iam: Any) -> None:
        self._iam = iam

    def activities(self) -> list[Callable[..., Any]]:
        return [self.resolve, self.exists, self.grant, self.revoke]

    @activity.defn(name="aws_iam_group.resolve")
    async def resolve(self, input: ResolveInput) -> ResolvedAssignment:
        spec = input.spec
        require_spec(spec, "aws_iam_group", "group")
        user_name = await self._user_name(spec.principal_email)
        response = await call_aws(
            self._iam.get_group,
            GroupName=spec.group,
            MaxItems=1,
            if_not_found=ApplicationError(
                f"there is no IAM group named {spec.group}", type="NoSuchGroup", non_retryable=True
            ),
        )
        return ResolvedAssignment(
            spec=spec, principal_id=user_name, group_id=response["Group"]["GroupName"]
        )

    @activity.defn(name="aws_iam_group.exists")
    async def exists(self, assignment: ResolvedAssignment) -> bool:
        require_resolved(assignment, "group_id")
        # A user is in at most a handful of groups (IAM allows 10); a group may hold thousands.
        pages = await paginate(
            self._iam,
            "list_groups_for_user",
            UserName=assignment.principal_id,
            if_not_found=ApplicationError(
                f"the IAM user {assignment.principal_id} no longer exists",
                type="NoSuchUser",
                non_retryable=True,
            ),
        )
        wanted = (assignment.group_id or "").lower()  # IAM names are unique regardless of case
        return any(
            group["GroupName"].lower() == wanted
            for page in pages
            for group in page.get("Groups", [])
        )

    @activity.defn(name="aws_iam_group.grant")
    async def grant(self, assignment: ResolvedAssignment) -> None:
        require_resolved(assignment, "group_id")
        # AddUserToGroup succeeds when the user is already a member: no need to look first.
        await call_aws(
            self._iam.add_user_to_group,
            GroupName=assignment.group_id,
            UserName=assignment.principal_id,
            if_not_found=ApplicationError(
                f"the IAM group {assignment.group_id} or the IAM user {assignment.principal_id} "
                "no longer exists",
                type="NoSuchGroup",
                non_retryable=True,
            ),
        )
        log.info("aws_iam_group.added", **assignment_log_fields(assignment))

    @activity.defn(name="aws_iam_group.revoke")
    async def revoke(self, assignment: ResolvedAssignment) -> None:
        require_resolved(assignment, "group_id")
        try:
            await call_aws(
                self._iam.remove_user_from_group,
                GroupName=assignment.group_id,
                UserName=assignment.principal_id,
            )
        except ApplicationError as error:
            if not is_not_found(error):
                raise
            # Not a member, or the user or group is gone: either way the access is not there.
            log.info("aws_iam_group.already_not_member", **assignment_log_fields(assignment))
            return
        log.info("aws_iam_group.removed", **assignment_log_fields(assignment))

    async def _user_name(self, email: str) -> str:
        try:
            response = await call_aws(self._iam.get_user, UserName=email)
        except ApplicationError as error:
            if not is_not_found(error):
                raise
        else:
            return response["User"]["UserName"]
        tagged = []
        pages = await paginate(self._iam, "list_users")
        for user in (user for page in pages for user in page.get("Users", [])):
            tags = await paginate(self._iam, "list_user_tags", UserName=user["UserName"])
            if any(
                tag["Key"] == EMAIL_TAG and tag["Value"].strip().lower() == email.lower()
                for page in tags
                for tag in page.get("Tags", [])
            ):
                tagged.append(user["UserName"])
        if len(tagged) == 1:
            return tagged[0]
        if not tagged:
            message = f"no IAM user is named {email} or tagged {EMAIL_TAG}={email}"
        else:
            message = (
                f"several IAM users are tagged {EMAIL_TAG}={email} ({', '.join(sorted(tagged))}); "
                "tag exactly one"
            )
        raise ApplicationError(message, type="NoSuchUser", non_retryable=True)
