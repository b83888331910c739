"""Notifications when no chat is configured: readable lines on the console, with the next command."""

from __future__ import annotations

import structlog
from temporalio import activity

from keycard import temporal as names
from keycard.durations import format_duration
from keycard.models import PER_TARGET_EVENTS, Notification, NotificationResult

log = structlog.get_logger("keycard.notify")


def console_line(notification: Notification) -> str | None:
    """What a person should read for this event, or None when it needs no announcement."""
    event, view = notification.event, notification.view
    who = event.actor.display if event.actor else "Keycard"
    # A request naming several targets: an event about one of them names that one.
    target = event.target.label if event.type in PER_TARGET_EVENTS else view.targets_label
    what = f"{view.flow_label} ({target})"
    match event.type:
        case "request.created":
            approvers = ", ".join(view.approvers) or "an admin"
            return (
                f"{view.requester.email} asks for {what} for {format_duration(view.duration)}: "
                f"{view.reason or '(no reason)'}. Approvers: {approvers}. "
                f"Approve with: keycard approve {view.id} --as <approver>"
            )
        case "request.approved":
            return f"{who} approved {view.id} ({len(view.approvals)} of {view.approvals_required})"
        case "request.denied" | "request.cancelled" | "request.expired":
            return f"{view.id} is {view.state.value}: {view.end_reason}"
        case "access.scheduled":
            return (
                f"{view.id} is approved; {view.requester.email} gets {what} at "
                f"{view.start_at:%Y-%m-%d %H:%M:%S} UTC, not before"
            )
        case "access.granted":
            return f"{view.requester.email} now has {what} until {view.expires_at:%H:%M:%S} UTC"
        case "access.expiring":
            return f"{view.requester.email}'s {what} ends at {view.expires_at:%H:%M:%S} UTC"
        case "access.extended":
            return f"{who} extended {view.id}; access now ends {view.expires_at:%H:%M:%S} UTC"
        case "access.revoked" | "access.ended":
            return f"{view.requester.email} no longer has {what} ({view.end_reason})"
        case "access.grant_failed" if view.targets and not view.state.finished:
            return (
                f"{view.id}: {what} could not be granted ({event.detail.get('error')}); "
                "its other targets go ahead"
            )
        case "access.grant_failed":
            return f"{view.id} FAILED: {view.end_reason}"
        case "access.revoke_retrying":
            return f"ALERT: removing {what} from {view.requester.email} keeps failing; retrying"
        case "access.sessions_ended":
            return (
                f"{view.requester.email}'s AWS sessions of {what} issued before "
                f"{event.detail.get('denied_before')} are denied (end_sessions)"
            )
        case "access.sessions_not_ended":
            return (
                f"ALERT: {view.requester.email}'s AWS sessions of {what} could not be cut: "
                f"{event.detail.get('error')}"
            )
        case "access.activity":
            return f"what {view.requester.email} did with {what}: {event.detail.get('summary')}"
        case "break_glass.reviewed":
            comment = event.detail.get("comment")
            return (
                f"{who} reviewed the break-glass use of {view.id}: "
                f"{event.detail.get('finding')}" + (f" ({comment})" if comment else "")
            )
        case "break_glass.review_overdue":
            return f"ALERT: the break-glass use of {view.id} was not reviewed: {event.detail.get('reason')}"
        case "decision.refused":
            attempted = event.detail.get("attempted_by") or {}  # reported by the refused signal
            by = attempted.get("email") or attempted.get("rule") or who
            return f"refused {event.detail.get('decision')} by {by}: {event.detail.get('reason')}"
        case "request.reminded":
            approvers = ", ".join(event.detail.get("approvers", [])) or "an admin"
            return (
                f"reminder: {view.id} has waited {event.detail.get('waited')} for a decision; "
                f"can approve: {approvers}"
            )
        case "request.escalated":
            added = ", ".join(event.detail.get("added", [])) or "nobody new"
            return (
                f"{view.id} escalated after {event.detail.get('waited')}: also asking {added}. "
                f"Approve with: keycard approve {view.id} --as <approver>"
            )
        case "request.routed":
            approvers = ", ".join(event.detail.get("approvers", [])) or "nobody (admins only)"
            return f"{view.id} goes to {approvers} ({event.detail.get('by')})"
        case "request.auto_approved":
            return f"{view.id} approved automatically by {who}: {event.detail.get('reason')}"
        case "hook.failed":
            return (
                f"hook {event.detail.get('hook')} failed on {view.id}: {event.detail.get('error')}"
                f" ({event.detail.get('outcome')})"
            )
        case "break_glass.used":
            return (
                f"BREAK-GLASS: {view.requester.email} approved their own request {view.id} for "
                f"{what}, {format_duration(view.duration)}. Justification: "
                f"{event.detail.get('justification')}. Bypassed approvers: "
                f"{', '.join(event.detail.get('bypassed_approvers', [])) or 'none'}. REVIEW IT."
            )
    return None


# Events a person must not miss: the console shows them as warnings.
LOUD_EVENTS = frozenset(
    {
        "break_glass.used",
        "break_glass.review_overdue",
        "access.revoke_retrying",
        "access.sessions_not_ended",
        "hook.failed",
    }
)


class ConsoleNotifier:
    """`notify.send` without chat: log lines; with `console_url`, the request's page in each."""

    def __init__(self, console_url: str | None = None):
        self._console_url = console_url

    @activity.defn(name=names.SEND_NOTIFICATION)
    async def send(self, notification: Notification) -> NotificationResult:
        line = console_line(notification)
        if line and self._console_url:
            line += f" ({self._console_url}/requests/{notification.view.id})"
        if line:
            emit = log.warning if notification.event.type in LOUD_EVENTS else log.info
            emit(line, request_id=notification.view.id, lifecycle_event=notification.event.type)
        return NotificationResult(messages=notification.messages)
