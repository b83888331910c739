"""The access report written out: Markdown (a pull request, a ticket), CSV (a spreadsheet: one line
per grant), JSON (everything, for tools), and HTML that prints cleanly to PDF (evidence)."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from keycard.durations import format_duration
from starter.reports.access import AccessReport, GrantRow

TEMPLATES = Path(__file__).parent / "templates"


class Format(StrEnum):
    MD = "md"
    CSV = "csv"
    JSON = "json"
    HTML = "html"


MEDIA_TYPES = {
    Format.MD: "text/markdown; charset=utf-8",
    Format.CSV: "text/csv; charset=utf-8",
    Format.JSON: "application/json",
    Format.HTML: "text/html; charset=utf-8",
}

COLUMNS = (
    "request_id", "requester", "flow", "target", "reason", "ticket", "approved_how",
    "asked_at", "approved_at", "granted_at", "expires_at", "ended_at", "asked", "held",
    "extensions", "ended", "ended_by", "removal", "removal_confirmed_at", "removal_late_by",
    "sessions", "activity", "policy_digest", "policy_commit",
)  # fmt: skip


def render(report: AccessReport, format: Format) -> str:
    if format is Format.JSON:
        return report.model_dump_json(indent=2) + "\n"
    if format is Format.CSV:
        return _csv(report)
    if format is Format.HTML:
        return _html(report)
    return _markdown(report)


def cell(row: GrantRow, column: str) -> str:
    """One value of a row as a person reads it."""
    if column == "approved_how":
        return row.approved_how
    if column == "activity":
        return row.activity_line
    return show(getattr(row, column))


def moment(value: datetime) -> str:
    """A period's bound: the day, or the minute when it is not midnight."""
    if (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0):
        return f"{value:%Y-%m-%d}"
    return f"{value:%Y-%m-%d %H:%M}"


def show(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, list):
        return ", ".join(show(v) for v in value)
    return str(value)


def _csv(report: AccessReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in report.rows:
        writer.writerow([_spreadsheet_safe(cell(row, c)) for c in COLUMNS])
    return out.getvalue()


def _spreadsheet_safe(text: str) -> str:
    """A reason typed by a person must not run as a formula when the CSV is opened."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _markdown(report: AccessReport) -> str:
    s, e = report.summary, report.exceptions
    lines = [
        f"# Access report: {moment(report.since)} to {moment(report.until)} (UTC)",
        "",
        f"Generated {report.generated_at:%Y-%m-%d %H:%M} UTC from the audit trail in Temporal's "
        "history" + _filters(report) + ".",
        "",
        "## Summary",
        "",
        f"- {s.requests} request(s), {s.grants} grant(s); outcomes: "
        + (", ".join(f"{k} {v}" for k, v in s.outcomes.items()) or "none"),
        "- grants by flow: " + _counts(s.grants_by_flow),
        "- grants by person: " + _counts(s.grants_by_person),
        "- automatic approvals by rule: " + _counts(s.auto_approvals_by_rule),
        f"- break-glass uses: {len(s.break_glass)}"
        + "".join(
            f"\n  - {u.request_id} by {u.requester} at {u.at:%Y-%m-%d %H:%M:%S}: "
            f"{_md(u.justification)} (review: {u.reviewed})"
            for u in s.break_glass
        ),
        "- refused decisions: " + _counts(s.refused_by_code),
        *(
            f"  - self-approval attempt: {r.actor} on {r.request_id} at {r.at:%Y-%m-%d %H:%M:%S}"
            for r in s.self_approval_attempts
        ),
        "- policies the requests were decided under:"
        + "".join(
            f"\n  - {f.flow}: "
            + " → ".join(
                f"{p.digest[:19]} (commit {(p.commit or 'unknown')[:7]}, {p.requests} request(s))"
                for p in f.policies
            )
            for f in s.policies
        ),
        "",
        "## Exceptions",
        "",
        f"- removal later than 60 s past expiry: {len(e.late_removals)}"
        + "".join(
            f"\n  - {r.request_id} {r.target}: {format_duration(r.removal_late_by)} late"
            for r in e.late_removals
            if r.removal_late_by
        ),
        f"- break-glass uses found unjustified or never reviewed: {len(e.break_glass_to_follow_up)}"
        + "".join(
            f"\n  - {u.request_id} by {u.requester}: {_md(u.reviewed)}"
            for u in e.break_glass_to_follow_up
        ),
        f"- calls after a grant ended (its session outlived it): {len(e.calls_after_end)}"
        + "".join(
            f"\n  - {r.request_id} {r.target}: {r.activity.after_end} call(s)"
            for r in e.calls_after_end
            if r.activity
        ),
        f"- grants without a human approver: {len(e.without_a_human_approver)}"
        + "".join(f"\n  - {r.request_id} ({r.approved_how})" for r in e.without_a_human_approver),
        f"- requests still open: {len(e.still_open)}"
        + "".join(
            f"\n  - {o.request_id} {o.state} since {o.since:%Y-%m-%d %H:%M}" for o in e.still_open
        ),
        f"- config changes in the period: {len(e.config_changes)}"
        + "".join(
            f"\n  - {c.at:%Y-%m-%d %H:%M:%S} {c.digest[:19]} "
            f"(commit {(c.commit or 'unknown')[:7]}{', uncommitted changes' if c.dirty else ''}) "
            f"on {_md(c.worker)}: {_md(c.what)}"
            for c in e.config_changes
        ),
        f"- access no request held (drift sweep): {len(e.drift)}"
        + "".join(
            f"\n  - {d.at:%Y-%m-%d %H:%M:%S} {d.action} ({d.kind}): {_md(d.principal)} in "
            f"{_md(d.target)}: {_md(d.why)}"
            for d in e.drift
        ),
        "",
        "## Grants",
        "",
        "| request | requester | flow / target | reason | approved | granted | ended | asked / held | removal | sessions | activity | policy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report.rows:
        lines.append(
            "| "
            + " | ".join(
                _md(text)
                for text in (
                    r.request_id,
                    r.requester,
                    f"{r.flow} / {r.target}",
                    r.reason + (f" ({r.ticket})" if r.ticket else ""),
                    r.approved_how,
                    show(r.granted_at),
                    f"{show(r.ended_at)} {r.ended}" + (f" by {r.ended_by}" if r.ended_by else ""),
                    f"{show(r.asked)} / {show(r.held)}",
                    r.removal
                    + (f", {format_duration(r.removal_late_by)} late" if r.removal_late_by else ""),
                    r.sessions or "",
                    r.activity_line,
                    (r.policy_digest or "")[:19]
                    + (f" @{r.policy_commit[:7]}" if r.policy_commit else ""),
                )
            )
            + " |"
        )
    if not report.rows:
        lines.append("| (no grants in the period) | | | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def _html(report: AccessReport) -> str:
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"])
    )
    environment.filters["show"] = show
    template = environment.get_template("access.html")
    return template.render(
        report=report, columns=COLUMNS, cell=cell, moment=moment, filters=_filters(report)
    )


def _filters(report: AccessReport) -> str:
    parts = [
        f"flow {report.flow}" if report.flow else "",
        f"person {report.person}" if report.person else "",
    ]
    shown = [p for p in parts if p]
    return f", for {' and '.join(shown)}" if shown else ""


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"


def _md(text: str) -> str:
    """Text in a Markdown table cell: pipes and line breaks cannot end the cell early."""
    return text.replace("|", "\\|").replace("\n", " ")
