"""Runs a keycard.sdk.Strategy as the four activities every strategy registers.

The workflows speak AssignmentSpec and ResolvedAssignment (keycard/models.py); a Strategy speaks
person, target and Grant (keycard/sdk/strategy.py). This module translates, and turns `Refused`
into the non-retryable ApplicationError that fails a request with its message; any other
exception is retried by the activity's retry policy (removal: until it succeeds).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError

from keycard.models import ResolvedAssignment, ResolveInput
from keycard.sdk.strategy import Grant, Refused, Resolved, Strategy
from keycard.strategies import activity_name

log = structlog.get_logger(__name__)

Pick = Callable[[Any], Strategy]  # the strategy for an AssignmentSpec


def sdk_activities(name: str, pick: Pick) -> list[Callable[..., Any]]:
    """The `<name>.resolve/exists/grant/revoke` activities of the Strategy `pick` returns for each
    call's spec (one strategy, or one per flow module)."""

    @activity.defn(name=activity_name(name, "resolve"))
    async def resolve(input: ResolveInput) -> ResolvedAssignment:
        spec = input.spec
        strategy = pick(spec)
        answer = await _refusals(
            strategy.resolve(spec.principal_email, spec.target or "", dict(spec.settings)), name
        )
        if not isinstance(answer, Resolved):
            raise ApplicationError(
                f"{type(strategy).__name__}.resolve returned {type(answer).__name__}, not "
                "keycard.sdk.Resolved(principal_id=..., resource_id=...)",
                type="InvalidTarget",
                non_retryable=True,
            )
        return ResolvedAssignment(
            spec=spec, principal_id=answer.principal_id, resource_id=answer.resource_id
        )

    @activity.defn(name=activity_name(name, "exists"))
    async def exists(assignment: ResolvedAssignment) -> bool:
        answer = await _refusals(pick(assignment.spec).exists(grant_of(assignment)), name)
        return bool(answer)

    @activity.defn(name=activity_name(name, "grant"))
    async def grant(assignment: ResolvedAssignment) -> None:
        await _refusals(pick(assignment.spec).grant(grant_of(assignment)), name)
        log.info(f"{name}.granted", **_fields(assignment))

    @activity.defn(name=activity_name(name, "revoke"))
    async def revoke(assignment: ResolvedAssignment) -> None:
        await _refusals(pick(assignment.spec).revoke(grant_of(assignment)), name)
        log.info(f"{name}.revoked", **_fields(assignment))

    return [resolve, exists, grant, revoke]


def grant_of(assignment: ResolvedAssignment) -> Grant:
    spec = assignment.spec
    return Grant(
        person=spec.principal_email,
        principal_id=assignment.principal_id,
        resource_id=assignment.resource_id or spec.target or "",
        target=spec.target or "",
        settings=dict(spec.settings),
    )


async def _refusals(call: Any, name: str) -> Any:
    try:
        return await call
    except Refused as refused:
        raise ApplicationError(str(refused), type="Refused", non_retryable=True) from refused
    except ApplicationError:
        raise
    except Exception as err:  # retried; said once here with the strategy's name
        log.warning(f"{name}.failed", error=f"{type(err).__name__}: {err}")
        raise


def _fields(assignment: ResolvedAssignment) -> dict[str, Any]:
    return {
        "person": assignment.spec.principal_email,
        "target": assignment.spec.target,
        "resource_id": assignment.resource_id,
    }
