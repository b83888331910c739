"""Reminders and escalation on the time-skipping server: durable timers beside the wait for a
decision, each firing only while the request still waits."""

from __future__ import annotations

from datetime import timedelta

from keycard.config import parse_config
from keycard.models import Actor, RequestState
from tests.harness import BOB, CONFIG, ask, running_stack
from tests.polling import eventually

NUDGED = CONFIG.replace(
    "    approval_timeout: 1h\n",
    "    approval_timeout: 1h\n"
    "    reminders: [45m, 15m]\n"
    "    escalate_after: 30m\n"
    "    escalation: {approvers: {users: [dave@example.com, bob@example.com]}}\n",
)
DAVE = Actor(email="dave@example.com")


async def _types(stack, request_id: str) -> list[str]:
    return stack.audit.types(request_id)


async def test_reminders_then_escalation_while_it_waits_and_nothing_after_the_decision(time_env):
    async with running_stack(time_env.client, parse_config(NUDGED)) as stack:
        view = await ask(stack)
        await eventually(lambda: _has(stack, view.id, "request.pending"))
        assert "request.reminded" not in stack.audit.types(view.id)

        await time_env.sleep(timedelta(minutes=16))
        [first] = await eventually(lambda: _events(stack, view.id, "request.reminded"))
        assert first.detail == {
            "reminder": 1,
            "waited": "15m",
            "approvers": ["bob@example.com", "carol@example.com"],
        }
        assert "request.escalated" not in stack.audit.types(view.id)

        await time_env.sleep(timedelta(minutes=15))
        [escalated] = await eventually(lambda: _events(stack, view.id, "request.escalated"))
        # bob was an approver already: only dave is new
        assert escalated.detail == {
            "waited": "30m",
            "added": ["dave@example.com"],
            "approvers": ["bob@example.com", "carol@example.com", "dave@example.com"],
        }
        pending = await stack.keycard.get(view.id)
        assert pending.approvers == ["bob@example.com", "carol@example.com", "dave@example.com"]

        await time_env.sleep(timedelta(minutes=15))
        reminders = await eventually(
            lambda: _events(stack, view.id, "request.reminded", at_least=2)
        )
        assert reminders[1].detail["reminder"] == 2
        assert "dave@example.com" in reminders[1].detail["approvers"]

        approved = await stack.keycard.approve(view.id, DAVE)  # the backup approver decides
        assert approved.state in (RequestState.GRANTING, RequestState.ACTIVE)
        await time_env.sleep(timedelta(minutes=30))
        assert [t for t in stack.audit.types(view.id) if t.startswith("request.")] == [
            "request.created",
            "request.pending",
            "request.reminded",
            "request.escalated",
            "request.reminded",
            "request.approved",
        ]
        await stack.keycard.revoke(view.id, BOB)


async def test_a_request_decided_before_its_first_reminder_is_never_nudged(time_env):
    async with running_stack(time_env.client, parse_config(NUDGED)) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        await time_env.sleep(timedelta(minutes=40))  # past 15m and 30m; before expiry_warning
        await eventually(lambda: _has(stack, view.id, "access.granted"))
        types = stack.audit.types(view.id)
        assert "request.reminded" not in types and "request.escalated" not in types
        history = await time_env.client.get_workflow_handle(view.id).fetch_history()
        fired = [e for e in history.events if e.HasField("timer_fired_event_attributes")]
        assert fired == []  # the reminder and escalation timers were cancelled, not fired
        await stack.keycard.revoke(view.id, BOB)


async def _has(stack, request_id: str, type: str) -> bool:
    return type in stack.audit.types(request_id)


async def _events(stack, request_id: str, type: str, at_least: int = 1):
    found = stack.audit.of(request_id, type)
    return found if len(found) >= at_least else None
