"""The access report for a period: one row per grant, a summary, and the exceptions an auditor
asks about first. Built from lifecycle events alone (the trail rebuilt from Temporal's histories,
`keycard audit export`'s), so a destination that was down loses nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from keycard.durations import format_duration, parse_duration
from keycard.models import AccessActivity, LifecycleEvent, RequestState
from starter.audit_trail import concerns, sequence
from starter.reports.model import (
    AccessReport,
    Approval,
    BreakGlassUse,
    ConfigChange,
    DriftSeen,
    Exceptions,
    FlowPolicies,
    GrantRow,
    OpenRequest,
    PolicySeen,
    Refusal,
    Summary,
)

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)  # what Temporal's visibility can be asked about
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
LATE_REMOVAL = timedelta(seconds=60)  # removal later than this past expiry is an exception
OPEN_STATES = {"PENDING", "SCHEDULED", "GRANTING", "ACTIVE", "REVOKING"}
DRIFT_EVENTS = {"drift.found", "drift.removed"}


def period_problem(since: datetime, until: datetime) -> str | None:
    """Why [since, until) is not a period a report can cover, or None."""
    if until <= since:
        return "the period is empty: `until` must be later than `since`"
    if since < EARLIEST or until > LATEST:
        return (
            f"the period must lie between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}; "
            f"{since:%Y-%m-%d} to {until:%Y-%m-%d} does not"
        )
    return None


def build_report(
    events: Iterable[LifecycleEvent],
    *,
    since: datetime,
    until: datetime,
    flow: str | None = None,
    person: str | None = None,
    now: datetime | None = None,
) -> AccessReport:
    """The report for [since, until) from the trail's events (those of requests alive then)."""
    requests: dict[str, list[LifecycleEvent]] = {}
    loads: list[ConfigChange] = []
    drift: list[DriftSeen] = []
    for event in events:
        if event.time >= until:
            continue
        if event.type == "config.loaded":
            if event.time >= since and (flow is None or concerns(event, flow)):
                loads.append(_config_change(event))
            continue
        if flow is not None and event.flow != flow:
            continue
        if person is not None and event.requester.email != person.lower():
            continue
        if event.type in DRIFT_EVENTS:  # the sweep's, not a request's
            if event.time >= since:
                drift.append(_drift(event))
            continue
        requests.setdefault(event.request_id, []).append(event)
    rows: list[GrantRow] = []
    finals: dict[str, LifecycleEvent] = {}
    refusals: list[Refusal] = []
    auto: Counter[str] = Counter()
    break_glass: list[BreakGlassUse] = []
    for request_id, own in requests.items():
        own.sort(key=lambda e: (e.time, sequence(e)))
        finals[request_id] = own[-1]
        rows += _rows(own, since)
        for event in own:
            if event.type == "decision.refused":
                refusals.append(
                    Refusal(
                        request_id=request_id,
                        actor=_who(event.detail.get("attempted_by")) or _actor(event),
                        decision=str(event.detail.get("decision", "")),
                        code=str(event.detail.get("code", "")),
                        reason=str(event.detail.get("reason", "")),
                        at=event.time,
                    )
                )
            elif event.type == "request.auto_approved":
                auto[str(event.detail.get("rule") or _actor(event))] += 1
            elif event.type == "break_glass.used":
                break_glass.append(_break_glass_use(event, own))
    summary = Summary(
        requests=len(requests),
        grants=len(rows),
        outcomes=dict(Counter(e.state.value for e in finals.values()).most_common()),
        grants_by_flow=dict(Counter(r.flow for r in rows).most_common()),
        grants_by_person=dict(Counter(r.requester for r in rows).most_common()),
        auto_approvals_by_rule=dict(auto.most_common()),
        break_glass=break_glass,
        refused_by_code=dict(Counter(r.code for r in refusals).most_common()),
        self_approval_attempts=[r for r in refusals if r.code == "SelfApproval"],
        policies=_policies(requests),
    )
    exceptions = Exceptions(
        late_removals=[r for r in rows if r.removal_late_by and r.removal_late_by > LATE_REMOVAL],
        break_glass_to_follow_up=[u for u in break_glass if u.to_follow_up],
        calls_after_end=[r for r in rows if r.activity is not None and r.activity.after_end],
        without_a_human_approver=[r for r in rows if not r.approved_by_a_person],
        still_open=[
            OpenRequest(
                request_id=e.request_id,
                requester=e.requester.email,
                flow=e.flow,
                state=e.state.value,
                since=requests[e.request_id][0].time,
            )
            for e in finals.values()
            if e.state.value in OPEN_STATES
        ],
        config_changes=sorted(loads, key=lambda c: c.at),
        drift=sorted(drift, key=lambda d: d.at),
    )
    return AccessReport(
        since=since,
        until=until,
        generated_at=now or datetime.now(UTC),
        flow=flow,
        person=person,
        rows=sorted(rows, key=lambda r: (r.granted_at, r.request_id, r.target)),
        summary=summary,
        exceptions=exceptions,
    )


def _rows(own: list[LifecycleEvent], since: datetime) -> list[GrantRow]:
    """One row per grant of one request (a request naming several targets has one per target
    granted), if the grant was alive in the period."""
    created = next((e for e in own if e.type == "request.created"), own[0])
    approvals, break_glass, approved_at = _approvals(own)
    ticket = created.detail.get("ticket") or {}
    policy = created.detail.get("policy") or {}
    extensions = [e for e in own if e.type == "access.extended"]
    asked = created.duration + sum(
        (_duration(e.detail.get("by")) for e in extensions), timedelta(0)
    )
    rows = []
    for granted in (e for e in own if e.type == "access.granted"):
        target = granted.target.name
        mine = [e for e in own if e.target.name == target and e.time >= granted.time]
        end = next((e for e in mine if e.type in ("access.ended", "access.revoked")), None)
        if end is not None and end.time < since:
            continue  # over before the period began
        sessions = next(
            (e for e in mine if e.type in ("access.sessions_ended", "access.sessions_not_ended")),
            None,
        )
        activity = next((e for e in mine if e.type == "access.activity"), None)
        expires = _time(granted.detail.get("expires_at"))
        for extended in extensions:
            expires = _time(extended.detail.get("expires_at")) or expires
        people = [a for a in approvals if a.channel not in ("rule", "break-glass")]
        rows.append(
            GrantRow(
                request_id=granted.request_id,
                requester=granted.requester.email,
                flow=granted.flow,
                target=target,
                reason=created.reason,
                ticket=ticket.get("key"),
                approvals=approvals,
                approved_by_a_person=bool(people) and not break_glass,
                break_glass=break_glass,
                asked_at=created.time,
                approved_at=approved_at,
                granted_at=granted.time,
                expires_at=expires,
                ended_at=end.time if end else None,
                asked=asked,
                held=(end.time - granted.time) if end else None,
                extensions=[format_duration(_duration(e.detail.get("by"))) for e in extensions],
                ended=_ending(end),
                ended_by=_actor(end) if end is not None and end.type == "access.revoked" else None,
                removal=_removal(end),
                removal_confirmed_at=end.time if end and end.detail.get("removed") else None,
                removal_late_by=(
                    end.time - expires
                    if end and end.type == "access.ended" and expires and end.time > expires
                    else None
                ),
                sessions=_sessions(sessions),
                policy_digest=policy.get("digest"),
                policy_commit=policy.get("commit"),
                activity=_activity(activity),
                break_glass_review=_review_of(own) if break_glass else None,
            )
        )
    return rows


def _review_of(own: list[LifecycleEvent]) -> str:
    used = next((e for e in own if e.type == "break_glass.used"), None)
    if used is None:
        return "review: not recorded"
    use = _break_glass_use(used, own)
    if use.finding in ("justified", "unjustified"):
        return f"reviewed {use.finding} by {use.reviewed_by}"
    return "not reviewed" if use.finding == "not reviewed" else "review: awaiting"


def _break_glass_use(used: LifecycleEvent, own: list[LifecycleEvent]) -> BreakGlassUse:
    """A break-glass use, with what became of its review by the period's end
    (break_glass.reviewed or break_glass.review_overdue)."""
    use = BreakGlassUse(
        request_id=used.request_id,
        requester=used.requester.email,
        at=used.time,
        justification=str(used.detail.get("justification", "")),
        reviewed="awaiting review",
    )
    for event in own:
        if event.type == "break_glass.reviewed":
            finding = "unjustified" if event.detail.get("finding") == "unjustified" else "justified"
            comment = str(event.detail.get("comment") or "")
            return use.model_copy(
                update={
                    "finding": finding,
                    "reviewed_by": _actor(event),
                    "reviewed_at": event.time,
                    "comment": comment,
                    "reviewed": f"{finding} by {_actor(event)} at {event.time:%Y-%m-%d %H:%M} UTC"
                    + (f": {comment}" if comment else ""),
                }
            )
        if event.type == "break_glass.review_overdue":
            why = str(event.detail.get("reason") or "the review window closed")
            return use.model_copy(
                update={"finding": "not reviewed", "reviewed": f"not reviewed: {why}"}
            )
    return use


def _activity(event: LifecycleEvent | None) -> AccessActivity | None:
    if event is None:
        return None
    fields = {k: v for k, v in event.detail.items() if k in AccessActivity.model_fields}
    try:
        return AccessActivity.model_validate({**fields, "target": event.target.name})
    except ValidationError:
        return None  # an event this Keycard cannot read: the trail still has it


def _approvals(own: list[LifecycleEvent]) -> tuple[list[Approval], bool, datetime | None]:
    approvals, break_glass, approved_at = [], False, None
    for event in own:
        if event.type == "request.approved":
            if event.detail.get("break_glass"):
                break_glass = True
                approvals.append(Approval(by=_actor(event), channel="break-glass", at=event.time))
            else:
                via = event.actor.via if event.actor else "?"
                approvals.append(Approval(by=_actor(event), channel=via, at=event.time))
        elif event.type == "request.auto_approved":
            approvals.append(Approval(by=_actor(event), channel="rule", at=event.time))
        if (
            approved_at is None
            and event.type in ("request.approved", "request.auto_approved")
            and event.state in (RequestState.GRANTING, RequestState.SCHEDULED, RequestState.ACTIVE)
        ):
            approved_at = event.time
    return approvals, break_glass, approved_at


def _drift(event: LifecycleEvent) -> DriftSeen:
    detail = event.detail
    return DriftSeen(
        at=event.time,
        action="removed" if event.type == "drift.removed" else "found",
        kind=str(detail.get("kind", "")),
        principal=event.requester.email,
        flow=event.flow,
        target=event.target.label or event.target.name,
        account_id=detail.get("account_id"),
        why=event.reason,
    )


def _config_change(event: LifecycleEvent) -> ConfigChange:
    detail = event.detail
    return ConfigChange(
        at=event.time,
        worker=str(detail.get("worker") or _actor(event)),
        digest=str(detail.get("digest", "")),
        commit=detail.get("commit"),
        path=detail.get("path"),
        dirty=bool(detail.get("dirty")),
        added=list(detail.get("added", [])),
        removed=list(detail.get("removed", [])),
        changed=list(detail.get("changed", [])),
        other_settings_changed=bool(detail.get("other_settings_changed")),
    )


def _policies(requests: dict[str, list[LifecycleEvent]]) -> list[FlowPolicies]:
    seen: dict[str, dict[str, PolicySeen]] = {}
    for own in requests.values():
        created = next((e for e in own if e.type == "request.created"), None)
        policy = (created.detail.get("policy") if created else None) or {}
        if created is None or not policy.get("digest"):
            continue
        flows = seen.setdefault(created.flow, {})
        known = flows.get(policy["digest"])
        if known is None:
            flows[policy["digest"]] = PolicySeen(
                digest=policy["digest"],
                commit=policy.get("commit"),
                first_request_at=created.time,
                requests=1,
            )
        else:
            known.requests += 1
            known.first_request_at = min(known.first_request_at, created.time)
    return [
        FlowPolicies(
            flow=name, policies=sorted(policies.values(), key=lambda p: p.first_request_at)
        )
        for name, policies in sorted(seen.items())
    ]


def _ending(end: LifecycleEvent | None) -> str:
    if end is None:
        return "still active"
    return "revoked" if end.type == "access.revoked" else "expired"


def _removal(end: LifecycleEvent | None) -> str:
    if end is None:
        return "pending"
    if end.detail.get("standing"):
        return "standing access, left in place"
    if end.detail.get("removed"):
        return "removed"
    return f"left to {end.detail.get('other_leases', 'other')} other lease(s)"


def _sessions(event: LifecycleEvent | None) -> str | None:
    if event is None:
        return None
    if event.type == "access.sessions_ended":
        return f"ended at {event.time:%Y-%m-%d %H:%M:%S} UTC"
    return f"not ended: {event.detail.get('error', 'unknown')}"


def _actor(event: LifecycleEvent | None) -> str:
    if event is None or event.actor is None:
        return "keycard"
    return event.actor.display


def _who(value: Any) -> str | None:
    return value.get("email") if isinstance(value, dict) else None


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _duration(value: Any) -> timedelta:
    try:
        return parse_duration(str(value)) if value else timedelta(0)
    except ValueError:
        return timedelta(0)
