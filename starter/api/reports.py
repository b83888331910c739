"""`GET /v1/reports/access`: the access report for a period (starter/reports/), for admins.

The same report as `keycard report`, built the same way: from the audit trail that Temporal's
histories hold. JSON by default; `format=md|csv|html` for the others.
"""

from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from keycard.models import Role
from starter.api.auth import Identity, authenticate
from starter.api.problems import ApiProblem, problem_responses
from starter.audit_trail import export_events, utc
from starter.client import KeycardClient
from starter.reports.access import AccessReport, build_report, period_problem
from starter.reports.render import MEDIA_TYPES, Format, render

reports = APIRouter(prefix="/v1/reports")


@reports.get(
    "/access",
    response_model=AccessReport,
    responses={
        **problem_responses(401, 403, 422, 503),
        200: {
            "content": {
                "application/json": {},
                "text/markdown": {},
                "text/csv": {},
                "text/html": {},
            },
            "description": "the report, in the format asked for",
        },
    },
    summary="The access report for a period (admins)",
    tags=["reports"],
)
async def access_report(
    request: Request,
    caller: Annotated[Identity, Depends(authenticate)],
    since: Annotated[datetime, Query(description="from this time (ISO 8601; without a zone, UTC)")],
    until: Annotated[
        datetime | None, Query(description="up to, not including, this (default: now)")
    ] = None,
    flow: Annotated[str | None, Query(max_length=200, description="only this flow")] = None,
    person: Annotated[
        str | None, Query(max_length=320, description="only this requester's")
    ] = None,
    format: Annotated[Format, Query(description="json (default), md, csv or html")] = Format.JSON,
) -> Response:
    """One row per grant in the period (who, what, why, approved how, granted and removed when,
    under which policy), a summary, and the exceptions auditors ask about first. Admins only:
    it lists every request."""
    if caller.role is not Role.ADMIN:
        raise ApiProblem(
            HTTPStatus.FORBIDDEN,
            f"{caller.email} is not an admin: the access report lists every request, so only "
            "admin tokens may read it",
            "AdminOnly",
        )
    start = utc(since)
    end = utc(until) if until else datetime.now(UTC)
    problem = period_problem(start, end)
    if problem is not None:
        raise ApiProblem(HTTPStatus.UNPROCESSABLE_ENTITY, problem, "BadPeriod")
    keycard: KeycardClient = request.app.state.keycard
    events = await export_events(keycard.temporal, since=start, until=end, flow=flow)
    report = build_report(events, since=start, until=end, flow=flow, person=person)
    return Response(render(report, format), media_type=MEDIA_TYPES[format])
