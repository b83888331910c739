"""An in-memory cloud registered under the real strategy activity names, to test workflows alone."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.exceptions import ApplicationError

from keycard.models import AssignmentSpec, ResolvedAssignment, ResolveInput

KNOWN_USERS = {"alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com"}


@dataclass
class FakeCloud:
    """Assignments as a set of grant keys, with switches to make calls fail."""

    users: set[str] = field(default_factory=lambda: set(KNOWN_USERS))
    assignments: set[str] = field(default_factory=set)
    calls: list[tuple[str, str]] = field(default_factory=list)
    grant_error: str | None = None
    revoke_failures_left: int = 0
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
            return ResolvedAssignment(
                spec=input.spec,
                principal_id=f"u-{input.spec.principal_email.split('@')[0]}-{cloud.salt}",
                permission_set_arn=f"arn:aws:sso:::permissionSet/ssoins-1/ps-{input.spec.permission_set}",
            )

        @activity.defn(name=f"{strategy}.exists")
        async def exists(input: ResolvedAssignment) -> bool:
            return cloud.key(input.spec) in cloud.assignments

        @activity.defn(name=f"{strategy}.grant")
        async def grant(input: ResolvedAssignment) -> None:
            cloud.calls.append(("grant", input.spec.principal_email))
            if cloud.grant_error:
                raise ApplicationError(
                    cloud.grant_error, type="NoSuchPermissionSet", non_retryable=True
                )
            cloud.assignments.add(cloud.key(input.spec))

        @activity.defn(name=f"{strategy}.revoke")
        async def revoke(input: ResolvedAssignment) -> None:
            cloud.calls.append(("revoke", input.spec.principal_email))
            if cloud.revoke_failures_left > 0:
                cloud.revoke_failures_left -= 1
                raise ApplicationError("ThrottlingException: Rate exceeded", type="Throttling")
            cloud.assignments.discard(cloud.key(input.spec))

        return [resolve, exists, grant, revoke]
