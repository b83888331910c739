"""The console notifier's lines for hooks, rules and break-glass (break-glass is loud)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from structlog.testing import capture_logs

from activities.notify import ConsoleNotifier, console_line
from keycard.models import (
    Actor,
    LifecycleEvent,
    Notification,
    Requester,
    RequestState,
    RequestView,
    TargetRef,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VIEW = RequestView(
    id="req-1",
    state=RequestState.GRANTING,
    requester=Requester(email="alice@example.com"),
    flow="prod",
    flow_label="Prod",
    strategy="aws_sso",
    target="prod",
    target_label="Production",
    duration=timedelta(hours=1),
    reason="incident 4312",
    approvals_required=1,
    approvers=["bob@example.com"],
    requested_at=NOW,
    break_glass=True,
)


def notification(type: str, actor: Actor | None = None, **detail) -> Notification:
    event = LifecycleEvent(
        id="req-1/5",
        type=type,  # type: ignore[arg-type]
        time=NOW,
        request_id="req-1",
        workflow_id="req-1",
        run_id="run",
        actor=actor,
        requester=VIEW.requester,
        flow="prod",
        target=TargetRef(name="prod", label="Production", strategy="aws_sso"),
        duration=VIEW.duration,
        reason=VIEW.reason,
        state=VIEW.state,
        detail=detail,
    )
    return Notification(event=event, view=VIEW)


async def test_break_glass_is_printed_as_a_warning():
    alice = Actor(email="alice@example.com")
    used = notification(
        "break_glass.used", alice, justification="db down", bypassed_approvers=["bob@example.com"]
    )
    with capture_logs() as logs:
        await ConsoleNotifier().send(used)
    assert logs == [
        {
            "event": "BREAK-GLASS: alice@example.com approved their own request req-1 for Prod "
            "(Production), 1h. Justification: db down. Bypassed approvers: bob@example.com. "
            "REVIEW IT.",
            "log_level": "warning",
            "request_id": "req-1",
            "lifecycle_event": "break_glass.used",
        }
    ]


def test_rule_and_hook_lines():
    rule = Actor(rule="auto_approve.pagerduty_on_call", via="rule")
    assert console_line(notification("request.auto_approved", rule, reason="on call")) == (
        "req-1 approved automatically by rule:auto_approve.pagerduty_on_call: on call"
    )
    assert console_line(
        notification("request.routed", approvers=["dave@example.com"], by="get_approvers")
    ) == ("req-1 goes to dave@example.com (get_approvers)")
    assert console_line(
        notification("hook.failed", hook="on_request", error="boom", outcome="people decide")
    ) == ("hook on_request failed on req-1: boom (people decide)")


async def test_with_a_console_each_line_links_to_the_requests_page():
    with capture_logs() as logs:
        await ConsoleNotifier(console_url="https://keycard.example.com").send(
            notification("request.approved", Actor(email="bob@example.com"))
        )
    assert logs[0]["event"].endswith("(https://keycard.example.com/requests/req-1)")
