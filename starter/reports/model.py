"""The access report's shape: one row per grant, the summary, and the exceptions (what
`keycard report` writes and `GET /v1/reports/access` returns; starter/reports/access.py builds it).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from keycard.models import AccessActivity
from keycard.provenance import ConfigDifference


class Approval(BaseModel):
    """Who approved, through which door: a person (slack, api, cli, console), a rule, or the
    requester themselves in an emergency (break-glass)."""

    by: str
    channel: str
    at: datetime


class GrantRow(BaseModel):
    request_id: str
    requester: str
    flow: str
    target: str
    reason: str
    ticket: str | None = None
    approvals: list[Approval] = Field(default_factory=list)
    approved_by_a_person: bool
    break_glass: bool = False
    asked_at: datetime
    approved_at: datetime | None = None
    granted_at: datetime
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    asked: timedelta = Field(description="the duration asked for, extensions included")
    held: timedelta | None = Field(default=None, description="from the grant to its end")
    extensions: list[str] = Field(default_factory=list)
    ended: str = Field(description="expired, revoked, or still active")
    ended_by: str | None = None
    removal: str = Field(description="removed, left to other leases, standing, or pending")
    removal_confirmed_at: datetime | None = None
    removal_late_by: timedelta | None = Field(
        default=None, description="how long after the expiry AWS confirmed the removal"
    )
    sessions: str | None = Field(default=None, description="ended at <time>, or why not")
    policy_digest: str | None = None
    policy_commit: str | None = None
    activity: AccessActivity | None = Field(
        default=None,
        description="what was done with the grant (flows with `activity`), once it was read",
    )

    @property
    def activity_line(self) -> str:
        return self.activity.line if self.activity is not None else ""

    break_glass_review: str | None = Field(
        default=None, description="a break-glass grant's review: its finding and reviewer"
    )

    @property
    def approved_how(self) -> str:
        if self.break_glass:
            return f"break-glass ({self.break_glass_review or 'review: awaiting'})"
        return (
            "; ".join(
                a.by if a.channel == "rule" else f"{a.by} ({a.channel})" for a in self.approvals
            )
            or "—"
        )


class BreakGlassUse(BaseModel):
    request_id: str
    requester: str
    at: datetime
    justification: str
    reviewed: str = Field(
        description="review: justified or unjustified, by whom and when; not reviewed (the "
        "window closed); or awaiting"
    )
    finding: Literal["justified", "unjustified", "not reviewed", "awaiting"] = "awaiting"
    reviewed_by: str | None = None
    reviewed_at: datetime | None = None
    comment: str = ""

    @property
    def to_follow_up(self) -> bool:
        """Found unjustified, or never reviewed: what an auditor asks about."""
        return self.finding in ("unjustified", "not reviewed")


class Refusal(BaseModel):
    request_id: str
    actor: str
    decision: str
    code: str
    reason: str
    at: datetime


class Summary(BaseModel):
    requests: int
    grants: int
    outcomes: dict[str, int] = Field(description="requests by their state at the period's end")
    grants_by_flow: dict[str, int]
    grants_by_person: dict[str, int]
    auto_approvals_by_rule: dict[str, int]
    break_glass: list[BreakGlassUse]
    refused_by_code: dict[str, int]
    self_approval_attempts: list[Refusal]
    policies: list[FlowPolicies] = Field(
        description="by flow, the policies (digest, commit) its requests were decided under"
    )


class PolicySeen(BaseModel):
    digest: str
    commit: str | None
    first_request_at: datetime
    requests: int


class FlowPolicies(BaseModel):
    """The policies a flow's requests in the period were decided under, oldest first."""

    flow: str
    policies: list[PolicySeen]


class ConfigChange(BaseModel):
    """A worker started with a config unlike the last one (`config.loaded`)."""

    at: datetime
    worker: str
    digest: str
    commit: str | None = None
    path: str | None = None
    dirty: bool = False
    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    other_settings_changed: bool = False

    @property
    def what(self) -> str:
        """One line: what the load changed."""
        return ConfigDifference(
            added=self.added,
            removed=self.removed,
            changed=self.changed,
            other_settings_changed=self.other_settings_changed,
        ).summary


class DriftSeen(BaseModel):
    """Access in the cloud that no request held, found by the drift sweep (`drift.found`, left
    in place) or removed (`drift.removed`, once the cloud confirmed)."""

    at: datetime
    action: str = Field(description="found (reported, left in place) or removed")
    kind: str = Field(description="orphan (Keycard granted it; no lease holds it) or unmanaged")
    principal: str
    flow: str
    target: str
    account_id: str | None = None
    why: str


class OpenRequest(BaseModel):
    request_id: str
    requester: str
    flow: str
    state: str
    since: datetime


class Exceptions(BaseModel):
    late_removals: list[GrantRow]
    without_a_human_approver: list[GrantRow]
    still_open: list[OpenRequest]
    break_glass_to_follow_up: list[BreakGlassUse] = Field(
        default_factory=list,
        description="break-glass uses found unjustified, or whose review window closed unreviewed",
    )
    calls_after_end: list[GrantRow] = Field(
        default_factory=list,
        description="grants whose role session made calls after the grant ended (`activity`)",
    )
    config_changes: list[ConfigChange] = Field(
        description="configs workers started with in the period, unlike the one before"
    )
    drift: list[DriftSeen] = Field(
        default_factory=list,
        description="access no request held, found or removed by the drift sweep",
    )


class AccessReport(BaseModel):
    since: datetime
    until: datetime
    generated_at: datetime
    flow: str | None = None
    person: str | None = None
    rows: list[GrantRow]
    summary: Summary
    exceptions: Exceptions
