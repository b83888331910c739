"""Approvers named as Slack user groups join a request's approvers when it starts."""

from __future__ import annotations

from temporalio import activity

from activities.notify import ConsoleNotifier
from activities.slack import SlackNotConfigured
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import Actor, SlackApproversInput, SlackApproversResult
from tests.harness import ALICE, CONFIG, running_stack
from tests.polling import eventually

ALICE_ACTOR = Actor(email=ALICE.email)
SLACK_GROUPS = CONFIG.replace(
    "approvers: {groups: [sre-leads]}",
    "approvers: {groups: [sre-leads], slack_groups: [oncall, '@dbas']}",
)


async def _pending(stack, request_id: str) -> bool:
    return "request.pending" in stack.audit.types(request_id)


async def test_slack_group_members_are_added_once(dev_env):
    asked: list[list[str]] = []

    @activity.defn(name=names.RESOLVE_SLACK_APPROVERS)
    async def resolve(input: SlackApproversInput) -> SlackApproversResult:
        asked.append(input.groups)
        return SlackApproversResult(emails=["dave@example.com", "bob@example.com"])

    async with running_stack(
        dev_env.client,
        parse_config(SLACK_GROUPS),
        extra_activities=[ConsoleNotifier().send, resolve],
    ) as stack:
        started = await stack.keycard.request(
            flow="prod-power-user", target="prod", reason="incident", requester=ALICE
        )
        await eventually(lambda: _pending(stack, started.id))
        view = await stack.keycard.get(started.id)
        await stack.keycard.cancel(view.id, ALICE_ACTOR)  # leave nothing running behind
    assert asked == [["oncall", "dbas"]]
    assert view.approvers == ["bob@example.com", "carol@example.com", "dave@example.com"]
    pending = [e for e in stack.audit.events if e.type == "request.pending"]
    assert [e.detail["approvers"] for e in pending] == [view.approvers]


async def test_without_slack_the_request_goes_on_with_the_other_approvers(dev_env):
    async with running_stack(
        dev_env.client,
        parse_config(SLACK_GROUPS),
        extra_activities=[ConsoleNotifier().send, SlackNotConfigured().resolve_approvers],
    ) as stack:
        started = await stack.keycard.request(
            flow="prod-power-user", target="prod", reason="incident", requester=ALICE
        )
        await eventually(lambda: _pending(stack, started.id))
        view = await stack.keycard.get(started.id)
        await stack.keycard.cancel(view.id, ALICE_ACTOR)  # leave nothing running behind
    assert view.state == "PENDING"
    assert view.approvers == ["bob@example.com", "carol@example.com"]
    [pending] = [e for e in stack.audit.events if e.type == "request.pending"]
    assert pending.detail["approver_lookup_error"] == (
        "flow names Slack user groups (oncall, dbas) but Slack is not configured: "
        "set SLACK_BOT_TOKEN on the worker"
    )
