"""Strategies of your own: one class that grants and removes one kind of access.

    # strategies/db.py, named by a flow: strategy: custom, module: strategies/db.py
    from keycard.sdk import Grant, Refused, Resolved, Strategy

    class DatabaseRole(Strategy):
        async def resolve(self, person, target, settings):
            if not await directory.has(person):
                raise Refused(f"{person} has no database login")
            return Resolved(principal_id=person, resource_id=f"{settings['database']}/{settings['role']}")

        async def exists(self, grant):  return await db.has_role(grant.principal_id, grant.resource_id)
        async def grant(self, grant):   await db.grant_role(grant.principal_id, grant.resource_id)
        async def revoke(self, grant):  await db.revoke_role(grant.principal_id, grant.resource_id)

Keycard runs each method as a Temporal activity in the worker (never in workflow code), and
keeps the lease semantics for you: overlapping requests share one grant, access that `exists`
before the first grant is standing and never removed, and removal is retried until it succeeds.
So make each method idempotent: `grant` of access that is there, and `revoke` of access that is
gone, must succeed. Raise `Refused` when retrying cannot help (no such person, no such target):
the request fails with your message. Any other exception is retried.

`keycard strategies check FILE` imports the file and checks the class before you deploy it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Grant", "Refused", "Resolved", "Strategy"]


class Refused(Exception):
    """Retrying cannot help (no such person, no such target): the request fails with this."""


class Resolved(BaseModel):
    """Who the person is and what the target is, in the target system's own ids."""

    model_config = ConfigDict(frozen=True)

    principal_id: str = Field(min_length=1, max_length=200, description="e.g. a user id")
    resource_id: str = Field(
        min_length=1,
        max_length=300,
        description="names the access itself: two targets with the same resource_id are the same "
        "access, and share one grant and its leases",
    )


class Grant(BaseModel):
    """One person's access to one target, as `resolve` named them."""

    model_config = ConfigDict(frozen=True)

    person: str = Field(description="the requester's email")
    principal_id: str
    resource_id: str
    target: str = Field(description="the target's name in keycard.yaml")
    settings: dict[str, str] = Field(default_factory=dict, description="the target's settings")


class Strategy:
    """Subclass it and implement the four methods (async). `check` is optional: `keycard
    doctor` shows what it returns."""

    async def resolve(self, person: str, target: str, settings: dict[str, str]) -> Resolved:
        raise NotImplementedError

    async def exists(self, grant: Grant) -> bool:
        raise NotImplementedError

    async def grant(self, grant: Grant) -> None:
        raise NotImplementedError

    async def revoke(self, grant: Grant) -> None:
        raise NotImplementedError

    async def check(self, targets: dict[str, dict[str, str]]) -> list[str]:
        """Problems `keycard doctor` should report for these targets (name -> settings); []
        when all is well. The default checks nothing."""
        return []


OPERATIONS = ("resolve", "exists", "grant", "revoke")
