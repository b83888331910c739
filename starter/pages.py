"""A page of requests, as `list` answers it from Temporal visibility (every client, the API)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from keycard.models import Requester, RequestState


class RequestSummary(BaseModel):
    """A row of `list`: what visibility knows without asking each workflow."""

    id: str
    state: RequestState | None
    requester: Requester | None
    flow: str | None
    target: str | None
    started_at: datetime | None
    closed_at: datetime | None
    expires_at: datetime | None = Field(
        default=None, description="when the access ends or ended (details)"
    )
    decided_by: str | None = Field(
        default=None, description="who approved, denied or cancelled it (details)"
    )
    summary: str | None = Field(default=None, description="the request in one line (details)")


class RequestPage(BaseModel):
    requests: list[RequestSummary]
    next_page_token: str | None = None
