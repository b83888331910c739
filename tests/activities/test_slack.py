"""The Slack activities against the fake Slack Web API: retries, resumption, user groups."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.slack import SlackApprovers, SlackNotifier
from keycard.models import Actor, MessageRef, Notification, RequestState, SlackApproversInput
from keycard.slack_blocks import EXTEND, REVOKE
from tests.keycard.test_slack_blocks import POWER, T0, event, view
from tests.slack_fake import SLACK_USERS, FakeSlack, web_client_for


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    fake = FakeSlack(
        users=list(SLACK_USERS), groups={"sre-leads": ["UBOB", "UCAROL", "UNOMAIL"], "empty": []}
    )
    await fake.start()
    yield fake
    await fake.stop()


def pending(flow=POWER) -> Notification:
    v = view(approvers=["bob@example.com", "carol@example.com"])
    return Notification(event=event("request.pending", v), view=v, flow=flow)


async def test_rate_limits_retry_after_slacks_retry_after(slack):
    slack.failures = [(429, 7)]
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(SlackNotifier(web_client_for(slack)).send, pending())
    assert raised.value.type == "SlackRateLimited"
    assert raised.value.next_retry_delay == timedelta(seconds=7)
    assert not raised.value.non_retryable


async def test_server_errors_retry(slack):
    slack.failures = [(500, None)]
    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(SlackNotifier(web_client_for(slack)).send, pending())
    assert raised.value.type == "SlackUnavailable" and not raised.value.non_retryable


async def test_a_retried_attempt_resumes_without_posting_twice(slack):
    notifier = SlackNotifier(web_client_for(slack))
    first = ActivityEnvironment()
    beats: list = []
    first.on_heartbeat = lambda *details: beats.append(details)
    slack.failures, slack.fail_methods = [(500, None)], {"conversations.open"}
    with pytest.raises(ApplicationError):
        await first.run(notifier.send, pending())
    assert len(slack.in_channel("C0PRODACCESS")) == 1  # the approval message went out

    second = ActivityEnvironment()
    second.info = dataclasses.replace(second.info, attempt=2, heartbeat_details=list(beats[-1]))
    result = await second.run(notifier.send, pending())

    assert len(slack.in_channel("C0PRODACCESS")) == 1  # and only once
    [dm] = slack.in_channel("DUALICE")
    assert [(m.kind, m.channel) for m in result.messages] == [
        ("approval", "C0PRODACCESS"),
        ("requester", "DUALICE"),
    ]
    assert result.messages[1].ts == dm.ts


async def test_a_message_slack_refuses_for_good_is_skipped(slack):
    lost = POWER.model_copy(update={"slack": POWER.slack.model_copy(update={"channel": "#gone"})})
    result = await ActivityEnvironment().run(
        SlackNotifier(web_client_for(slack)).send, pending(lost)
    )
    assert [m.kind for m in result.messages] == ["requester"]  # the DM still went out
    assert [m.channel for m in slack.messages.values()] == ["DUALICE"]


async def test_edits_go_to_the_messages_the_workflow_kept(slack):
    notifier = SlackNotifier(web_client_for(slack))
    posted = await ActivityEnvironment().run(notifier.send, pending())
    denied_view = view(state=RequestState.DENIED, decided_by=Actor(email="bob@example.com"))
    denied = Notification(
        event=event("request.denied", denied_view),
        view=denied_view,
        messages=posted.messages,
        flow=POWER,
    )
    result = await ActivityEnvironment().run(notifier.send, denied)
    assert result.messages == posted.messages
    assert [(c.args["channel"], c.args["ts"]) for c in slack.called("chat.update")] == [
        (m.channel, m.ts) for m in posted.messages
    ]
    assert all(m.actions() == [] for m in slack.messages.values())


async def test_a_request_that_failed_its_checks_tells_the_requester(slack):
    failed_view = view(
        state=RequestState.FAILED, end_reason="no Identity Center user has the email <x>"
    )
    failed = Notification(
        event=event("access.grant_failed", failed_view), view=failed_view, flow=POWER
    )
    result = await ActivityEnvironment().run(SlackNotifier(web_client_for(slack)).send, failed)
    [note] = slack.in_channel("DUALICE")
    assert "could not go ahead: no Identity Center user has the email &lt;x&gt;" in note.text
    assert result.messages == [MessageRef(kind="note", channel="DUALICE", ts=note.ts)]


async def test_slack_user_groups_resolve_to_their_members_emails(slack):
    approvers = SlackApprovers(web_client_for(slack))
    result = await ActivityEnvironment().run(
        approvers.resolve_approvers, SlackApproversInput(groups=["sre-leads", "empty"])
    )
    # Carol's profile email is lower-cased; a member without an email approves nothing.
    assert result.emails == ["bob@example.com", "carol@example.com"]

    with pytest.raises(ApplicationError) as raised:
        await ActivityEnvironment().run(
            approvers.resolve_approvers, SlackApproversInput(groups=["nope"])
        )
    assert raised.value.type == "NoSuchSlackGroup" and raised.value.non_retryable
    assert raised.value.message == "there is no Slack user group @nope"


async def test_the_expiry_warning_offers_an_extension_until_access_ends(slack):
    notifier = SlackNotifier(web_client_for(slack))
    active = view(
        state=RequestState.ACTIVE,
        granted_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    warned = await ActivityEnvironment().run(
        notifier.send,
        Notification(event=event("access.expiring", active), view=active, flow=POWER),
    )
    [warning] = slack.in_channel("DUALICE")
    assert ":alarm_clock: Your access to *Prod PowerUser* on *Production* ends at *14:30 UTC*." in (
        warning.content()
    )
    assert warning.actions() == [REVOKE, EXTEND]

    ended = active.model_copy(
        update={"state": RequestState.ENDED, "ended_at": T0 + timedelta(hours=1)}
    )
    await ActivityEnvironment().run(
        notifier.send,
        Notification(
            event=event("access.ended", ended), view=ended, messages=warned.messages, flow=POWER
        ),
    )
    assert warning.actions() == []
    assert "ended at 14:30 UTC" in warning.content()
    assert "has ended" in slack.in_channel("DUALICE")[-1].text


async def test_a_rule_approval_still_shows_in_the_flows_channel(slack):
    notifier = SlackNotifier(web_client_for(slack))
    approved = view(state=RequestState.GRANTING, decided_by=Actor(rule="oncall"))
    result = await ActivityEnvironment().run(
        notifier.send,
        Notification(event=event("request.auto_approved", approved), view=approved, flow=POWER),
    )
    [message] = slack.in_channel("C0PRODACCESS")
    assert message.actions() == []
    assert ":white_check_mark: Approved by rule `oncall`" in message.content()
    assert [(m.kind, m.channel) for m in result.messages] == [("approval", "C0PRODACCESS")]
