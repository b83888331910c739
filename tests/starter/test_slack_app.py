"""The Slack app end to end: signed requests to the real Bolt endpoint, the real workflows on the
dev server, and the fake Slack Web API standing in for Slack."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from urllib.parse import parse_qsl

import pytest
import yaml
from fastapi import FastAPI

from keycard import slack_blocks as ids
from keycard.models import Actor, Requester, RequestState, RequestView
from keycard.settings import SlackSettings
from starter.slack import review as slack_review
from starter.slack.app import attach_slack, run_socket_mode
from tests.polling import eventually
from tests.slack_fake import (
    APP_TOKEN,
    BOT_TOKEN,
    SLACK_CONFIG,
    SlackStack,
    block_action,
    button_click,
    command_body,
    select_option,
    slack_stack,
    view_submission,
)

CHANNEL = "C0PRODACCESS"


def power_user_values(reason: str, **overrides) -> dict:
    flow = "prod-power-user"
    values = {
        ids.FLOW_BLOCK: {
            ids.FLOW_SELECT: {"type": "static_select", "selected_option": {"value": flow}}
        },
        ids.target_block(flow): {  # the flow has two targets: a multiple select
            ids.VALUE: {"type": "multi_static_select", "selected_options": [{"value": "prod"}]}
        },
        ids.duration_block(flow): {
            ids.VALUE: {"type": "static_select", "selected_option": {"value": "1h"}}
        },
        ids.REASON_BLOCK: {ids.VALUE: {"type": "plain_text_input", "value": reason}},
        ids.field_block(flow, "incident"): {
            ids.VALUE: {"type": "plain_text_input", "value": "4312"}
        },
        ids.field_block(flow, "pages"): {ids.VALUE: {"type": "number_input", "value": "3"}},
        ids.field_block(flow, "customer_impact"): {
            ids.VALUE: {"type": "checkboxes", "selected_options": [{"value": "true"}]}
        },
        ids.field_block(flow, "change"): {
            ids.VALUE: {"type": "static_select", "selected_option": {"value": "hotfix"}}
        },
        ids.field_block(flow, "buddy"): {
            ids.VALUE: {"type": "users_select", "selected_user": "UDAVE"}
        },
    }
    values.update(overrides)
    return values


async def open_form(s: SlackStack, user_id: str, flow: str) -> dict:
    """/access, then pick `flow`: returns the updated modal as Slack holds it."""
    opened = len(s.slack.views)
    response = await s.command(user_id)
    assert response.status_code == 200
    modal = await s.slack.wait_for(
        lambda: s.slack.views[opened] if len(s.slack.views) > opened else None
    )
    chosen = block_action(
        user_id,
        None,
        {
            "type": "static_select",
            "action_id": ids.FLOW_SELECT,
            "block_id": ids.FLOW_BLOCK,
            "selected_option": {"value": flow},
        },
        view=modal,
    )
    assert (await s.interact(chosen)).status_code == 200
    return await s.slack.wait_for(
        lambda: s.slack.views[opened + 1] if len(s.slack.views) > opened + 1 else None
    )


async def request_access(s: SlackStack, user_id: str, values: dict) -> RequestView:
    """Submit the modal and return the request once its approval message is out."""
    form = await open_form(
        s, user_id, values[ids.FLOW_BLOCK][ids.FLOW_SELECT]["selected_option"]["value"]
    )
    response = await s.interact(view_submission(user_id, form, values))
    assert response.status_code == 200
    assert response.content in (b"", b"{}"), response.content  # closed, no errors
    page = await s.slack.wait_for(lambda: _pending_for(s))
    return page


def _pending_for(s: SlackStack):
    for call in s.slack.called("chat.postMessage"):
        for block in call.args.get("blocks") or []:
            if block.get("type") == "actions" and block["block_id"].startswith("decide:"):
                return block["block_id"].removeprefix("decide:")
    return None


def approval_messages(s: SlackStack, request_id: str):
    return [
        m
        for m in s.slack.messages.values()
        if m.thread_ts is None and f"`{request_id}`" in m.content() and "requests" in m.text
    ]


async def test_the_whole_story_in_slack(dev_env):
    async with slack_stack(dev_env.client) as s:
        slack = s.slack

        # Only Slack may talk to the endpoint: a forged or a stale signature gets 401.
        body = command_body("UALICE")
        assert (await s.send(body, secret="not-the-secret")).status_code == 401
        stale = int(time.time()) - 10 * 60
        assert (await s.send(body, timestamp=stale)).status_code == 401
        assert slack.views == []

        # /access opens the form with the flows Alice may request; choosing one fills it in.
        form = await open_form(s, "UALICE", "prod-power-user")
        first = slack.views[0]
        flow_options = first["blocks"][0]["element"]["options"]
        assert [o["value"] for o in flow_options] == ["prod-power-user", "prod-admin"]
        assert slack.called("views.update")[0].args["view_id"] == first["id"]
        block_ids = [b.get("block_id") for b in form["blocks"]]
        assert "target:prod-power-user" in block_ids and "field:prod-power-user:buddy" in block_ids

        # Submitting starts the request; the approval message goes to the flow's channel.
        reason = "<!channel> incident for <@UBOB> & friends"
        response = await s.interact(view_submission("UALICE", form, power_user_values(reason)))
        assert response.status_code == 200 and response.content in (b"", b"{}")
        request_id = await slack.wait_for(lambda: _pending_for(s))
        view = await s.keycard.get(request_id)
        assert view.state is RequestState.PENDING
        assert view.requester.slack_user_id == "UALICE"
        assert view.approvers == ["bob@example.com", "carol@example.com"]  # from @sre-leads
        created = await s.stack.audit.wait_for(request_id, "request.created")
        assert created.actor.via == "slack"  # asked in Slack, audited as such
        assert view.fields == {
            "incident": "4312",
            "pages": 3,
            "customer_impact": True,
            "change": "hotfix",
            "buddy": "dave@example.com",
        }
        [approval] = slack.in_channel(CHANNEL)
        assert approval.actions() == [ids.APPROVE, ids.DENY]
        shown = approval.content()
        assert "<@UALICE> requests *Prod PowerUser* on *Production* for *1h*" in shown
        assert "&lt;!channel&gt; incident for &lt;@UBOB&gt; &amp; friends" in shown
        assert "<!channel>" not in shown and "<@UBOB>" not in shown  # nobody is pinged
        assert "*incident:* 4312" in shown and "*customer_impact:* yes" in shown

        # Alice hears it is waiting, with a Cancel button, in her DM.
        [waiting] = await slack.wait_for(lambda: slack.in_channel("DUALICE"))
        assert waiting.actions() == [ids.CANCEL]

        # A click the workflow refuses gets an ephemeral answer; nothing changes.
        await s.interact(button_click("UDAVE", approval, ids.APPROVE))
        refusal = await slack.wait_for(lambda: slack.ephemeral)
        assert refusal[0]["user"] == "UDAVE" and refusal[0]["channel"] == CHANNEL
        assert "dave@example.com is not an approver of flow prod-power-user" in refusal[0]["text"]
        await s.interact(button_click("UALICE", approval, ids.APPROVE))
        await slack.wait_for(lambda: len(slack.ephemeral) == 2)
        assert "cannot approve their own request" in slack.ephemeral[1]["text"]
        assert approval.edits == 0
        assert (await s.keycard.get(request_id)).approvals == []

        # Bob approves (with a double click): one approval, the message is edited in place.
        click = button_click("UBOB", approval, ids.APPROVE)
        await s.interact(click)
        await s.interact(click)
        await slack.wait_for(lambda: approval.edits and not approval.actions())
        assert ":white_check_mark: Approved by <@UBOB>" in approval.content()
        [thread_line] = await slack.wait_for(lambda: slack.thread(approval))
        assert thread_line.startswith(":key: Access granted until ")
        granted = await s.keycard.get(request_id)
        assert granted.state is RequestState.ACTIVE
        assert [a.actor.slack_user_id for a in granted.approvals] == ["UBOB"]
        assert s.stack.cloud.has("alice@example.com")
        assert len(slack.ephemeral) == 2  # the double click was no refusal either

        # Alice's DMs: the waiting message now says who approved; a new one has the controls.
        assert "Approved by <@UBOB>" in waiting.content() and waiting.actions() == []
        grant_dm = await slack.wait_for(
            lambda: next(
                (m for m in slack.in_channel("DUALICE") if ids.REVOKE in m.actions()), None
            )
        )
        # With the date when the access ends on another day (a run in the hour before midnight).
        assert f"until *{ids.until(granted.expires_at, granted.granted_at)}*" in grant_dm.content()
        assert grant_dm.actions() == [ids.REVOKE, ids.EXTEND]

        # Shortly before it expires (this flow warns 59m59s ahead), Alice is warned.
        warning = await slack.wait_for(
            lambda: next((m for m in slack.in_channel("DUALICE") if "alarm_clock" in m.text), None)
        )
        assert f"ends at *{ids.until(granted.expires_at, granted.granted_at)}*" in warning.content()
        assert warning.actions() == [ids.REVOKE, ids.EXTEND]

        # Extending from the DM: the thread and the DM show the new end.
        await s.interact(select_option("UALICE", grant_dm, ids.EXTEND, f"{request_id} 30m"))
        await slack.wait_for(lambda: len(slack.thread(approval)) == 2)
        extended = await s.keycard.get(request_id)
        assert extended.expires_at == granted.expires_at + (extended.duration / 2)
        assert slack.thread(approval)[1].startswith(":stopwatch: Extended by 30m by <@UALICE>")
        ends = ids.until(extended.expires_at, extended.granted_at)
        await slack.wait_for(lambda: f"*{ends}*" in grant_dm.content())

        # /access list answers ephemerally with what is open.
        await s.command("UALICE", "list")
        [listing] = await slack.wait_for(lambda: slack.responses)
        assert listing["response_type"] == "ephemeral"
        assert f"`{request_id}`" in str(listing["blocks"]) and "active until" in str(listing)

        # Revoking from the DM ends the access; the thread, the DM and a note say so.
        await s.interact(button_click("UALICE", grant_dm, ids.REVOKE))
        handle = dev_env.client.get_workflow_handle(request_id, result_type=RequestView)
        final = await handle.result()
        assert final.state is RequestState.ENDED
        assert not s.stack.cloud.has("alice@example.com")
        assert slack.thread(approval)[2] == ":lock: Access revoked by <@UALICE>"
        assert grant_dm.actions() == [] and "ended" in grant_dm.content()
        assert warning.actions() == []
        assert any("has ended" in m.text for m in slack.in_channel("DUALICE"))

        # A stale button (an old client still showing it) is refused, not acted on.
        await s.interact(button_click("UCAROL", _as_pending(approval, request_id), ids.APPROVE))
        await slack.wait_for(lambda: len(slack.ephemeral) == 3)
        assert (
            f"request {request_id} is ENDED; it can no longer be approved"
            in (slack.ephemeral[2]["text"])
        )


def _as_pending(message, request_id):
    """The message as a client that missed the edit still shows it."""
    stale = type(message)(**{**message.__dict__})
    stale.blocks = [
        *message.blocks,
        {
            "type": "actions",
            "block_id": f"decide:{request_id}",
            "elements": [
                {"type": "button", "action_id": ids.APPROVE, "value": request_id, "text": {}}
            ],
        },
    ]
    return stale


ALICE = Requester(email="alice@example.com", slack_user_id="UALICE", name="Alice")


async def test_a_slack_outage_never_delays_a_grant_or_its_revocation(dev_env):
    async with slack_stack(dev_env.client) as s:
        slack, cloud = s.slack, s.stack.cloud
        slack.outage = [(500, None), (429, 1)]  # Slack answers nothing but errors

        view = await s.keycard.request(flow="prod-admin", target="prod", requester=ALICE)
        await s.keycard.approve(view.id, Actor(email="bob@example.com"))
        await s.keycard.approve(view.id, Actor(email="carol@example.com"))

        async def state(wanted: RequestState):
            return (await s.keycard.get(view.id)).state is wanted

        await eventually(lambda: state(RequestState.ACTIVE))
        assert cloud.has("alice@example.com", ps="AdministratorAccess")
        await s.keycard.revoke(view.id, Actor(email="bob@example.com"), "done")
        await eventually(lambda: state(RequestState.ENDED))
        assert not cloud.has("alice@example.com", ps="AdministratorAccess")

        # All the while Slack refused every call; the notifier keeps trying, rate limited or not.
        assert slack.calls and all(c.status != 200 for c in slack.calls)
        await slack.wait_for(lambda: {c.status for c in slack.calls} == {500, 429})
        assert slack.messages == {}

        # Slack recovers; the messages catch up, in order, and the request completes.
        slack.outage = None
        handle = dev_env.client.get_workflow_handle(view.id, result_type=RequestView)
        final = await handle.result()
        assert final.state is RequestState.ENDED
        bob_dm, carol_dm = slack.in_channel("DUBOB"), slack.in_channel("DUCAROL")
        for [approval] in (bob_dm, carol_dm):
            assert approval.actions() == []
            assert "Approved by bob@example.com and carol@example.com (2 of 2 approvals)" in (
                approval.content()
            )
            assert [line.split(" until")[0] for line in slack.thread(approval)] == [
                ":key: Access granted",
                ":lock: Access revoked by bob@example.com: “done”",
                ":scissors: AWS sessions opened under this access are cut too",
            ]
        notes = [m.text for m in slack.in_channel("DUALICE")]
        assert any("has ended" in n for n in notes)
        # Each message was posted once, whatever the retries.
        posted = [c for c in slack.called("chat.postMessage") if c.args.get("thread_ts") is None]
        assert len(posted) == len(
            {(m.channel, m.ts) for m in slack.messages.values() if not m.thread_ts}
        )


async def test_two_approvals_in_the_approvers_dms(dev_env):
    async with slack_stack(dev_env.client) as s:
        slack = s.slack
        view = await s.keycard.request(flow="prod-admin", target="prod", requester=ALICE)
        [bob_dm] = await slack.wait_for(lambda: slack.in_channel("DUBOB"))
        [carol_dm] = await slack.wait_for(lambda: slack.in_channel("DUCAROL"))
        assert slack.in_channel(CHANNEL) == []  # the flow names no channel
        assert "0 of 2 approvals" in bob_dm.content()

        await s.interact(button_click("UBOB", bob_dm, ids.APPROVE))
        await slack.wait_for(lambda: "1 of 2 approvals: <@UBOB>" in carol_dm.content())
        assert carol_dm.actions() == [ids.APPROVE, ids.DENY]  # still waiting for one more
        assert bob_dm.actions() == [ids.APPROVE, ids.DENY]

        await s.interact(button_click("UBOB", bob_dm, ids.APPROVE))  # again: the same update

        await s.interact(button_click("UCAROL", carol_dm, ids.APPROVE))
        for message in (bob_dm, carol_dm):
            await slack.wait_for(lambda m=message: not m.actions())
            assert "Approved by <@UBOB> and <@UCAROL> (2 of 2 approvals)" in message.content()
        await eventually(lambda: _active(s, view.id))
        approved = await s.keycard.get(view.id)
        assert [a.actor.email for a in approved.approvals] == [
            "bob@example.com",
            "carol@example.com",
        ]
        assert slack.ephemeral == []
        await s.keycard.revoke(view.id, Actor(email="bob@example.com"))  # leave nothing behind


async def _active(s: SlackStack, request_id: str) -> bool:
    return (await s.keycard.get(request_id)).state is RequestState.ACTIVE


async def test_deny_and_cancel_edit_the_messages(dev_env):
    async with slack_stack(dev_env.client) as s:
        slack = s.slack
        denied = await s.keycard.request(flow="prod-admin", target="prod", requester=ALICE)
        [bob_dm] = await slack.wait_for(lambda: slack.in_channel("DUBOB"))
        await s.interact(button_click("UBOB", bob_dm, ids.DENY))
        await slack.wait_for(lambda: not bob_dm.actions())
        assert ":no_entry: Denied by <@UBOB>" in bob_dm.content()
        [waiting] = slack.in_channel("DUALICE")
        await slack.wait_for(lambda: "Denied by <@UBOB>" in waiting.content())
        assert waiting.actions() == []
        assert (await s.keycard.get(denied.id)).state is RequestState.DENIED

        cancelled = await s.keycard.request(flow="prod-admin", target="prod", requester=ALICE)
        mine = await slack.wait_for(
            lambda: next((m for m in slack.in_channel("DUALICE") if m.actions()), None)
        )
        await s.interact(button_click("UBOB", mine, ids.CANCEL))  # not Bob's to cancel
        [refusal] = await slack.wait_for(lambda: slack.ephemeral)
        assert "only alice@example.com (or an admin) can cancel this request" in refusal["text"]
        await s.interact(button_click("UALICE", mine, ids.CANCEL))
        await slack.wait_for(lambda: "Cancelled by <@UALICE>" in mine.content())
        assert mine.actions() == []
        assert (await s.keycard.get(cancelled.id)).state is RequestState.CANCELLED


async def test_the_flows_rules_come_back_as_field_errors(dev_env):
    async with slack_stack(dev_env.client) as s:
        form = await open_form(s, "UALICE", "prod-power-user")
        flow = "prod-power-user"
        tampered = power_user_values(
            "   ",
            **{
                ids.duration_block(flow): {
                    ids.VALUE: {"type": "static_select", "selected_option": {"value": "1h"}}
                }
            },
        )
        response = await s.interact(view_submission("UALICE", form, tampered))
        assert response.status_code == 200
        assert response.json() == {
            "response_action": "errors",
            "errors": {ids.REASON_BLOCK: "flow prod-power-user requires a reason for access"},
        }
        too_long = power_user_values(
            "incident 4312",
            **{
                ids.duration_block(flow): {
                    ids.VALUE: {"type": "static_select", "selected_option": {"value": "9h"}}
                }
            },
        )
        response = await s.interact(view_submission("UALICE", form, too_long))
        assert response.json()["errors"] == {
            ids.duration_block(flow): "flow prod-power-user does not offer 9h; "
            "choose one of: 1h, 30m, 2h"
        }
        no_buddy_email = power_user_values(
            "incident 4312",
            **{
                ids.field_block(flow, "buddy"): {
                    ids.VALUE: {"type": "users_select", "selected_user": "UNOMAIL"}
                }
            },
        )
        response = await s.interact(view_submission("UALICE", form, no_buddy_email))
        assert list(response.json()["errors"]) == [ids.field_block(flow, "buddy")]
        assert s.slack.called("chat.postMessage") == []  # nothing was started


TICKETED = """
  - name: ticketed
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: ReadOnlyAccess}
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
    reason:
      hint: "the Jira ticket first: OPS-4312 restart billing"
      ticket: {pattern: 'OPS-[0-9]+', url: "https://example.atlassian.net/browse/{ticket}"}
    slack: {channel: "#prod-access"}
"""


async def test_a_reason_without_its_ticket_is_refused_on_the_form_and_the_ticket_is_linked(
    dev_env,
):
    async with slack_stack(dev_env.client, SLACK_CONFIG + TICKETED) as s:
        form = await open_form(s, "UALICE", "ticketed")
        reason_block = next(b for b in form["blocks"] if b.get("block_id") == ids.REASON_BLOCK)
        assert reason_block["element"]["placeholder"]["text"] == (
            "the Jira ticket first: OPS-4312 restart billing"
        )
        values = {
            ids.FLOW_BLOCK: {
                ids.FLOW_SELECT: {"type": "static_select", "selected_option": {"value": "ticketed"}}
            },
            ids.target_block("ticketed"): {
                ids.VALUE: {"type": "static_select", "selected_option": {"value": "prod"}}
            },
            ids.REASON_BLOCK: {ids.VALUE: {"type": "plain_text_input", "value": "restart billing"}},
        }
        response = await s.interact(view_submission("UALICE", form, values))
        assert response.json() == {
            "response_action": "errors",
            "errors": {
                ids.REASON_BLOCK: "flow ticketed needs a ticket in the reason, matching "
                "OPS-[0-9]+ (the Jira ticket first: OPS-4312 restart billing)"
            },
        }
        assert s.slack.called("chat.postMessage") == []  # nothing was started

        alice = Requester(email="alice@example.com", slack_user_id="UALICE", name="Alice")
        view = await s.keycard.request(
            flow="ticketed", target="prod", requester=alice, reason="OPS-4312 restart billing"
        )
        [approval] = await s.slack.wait_for(lambda: approval_messages(s, view.id))
        assert "*Ticket:* <https://example.atlassian.net/browse/OPS-4312|OPS-4312>" in (
            approval.content()
        )


EMERGENCY = """
  - name: emergency
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: AdministratorAccess}
    durations: [15m]
    reason_required: false
    approvers: {users: [bob@example.com, carol@example.com]}
    break_glass: true
    slack: {channel: "#prod-access", security_channel: "#security"}
"""


async def test_break_glass_is_announced_in_the_flows_channel_and_to_security(dev_env, monkeypatch):
    async with slack_stack(dev_env.client, SLACK_CONFIG + EMERGENCY) as s:
        s.slack.channels["#security"] = "C0SECURITY"
        alice = Requester(email="alice@example.com", slack_user_id="UALICE", name="Alice")
        view = await s.keycard.request(flow="emergency", target="prod", requester=alice)
        [approval] = await s.slack.wait_for(lambda: approval_messages(s, view.id))

        await s.keycard.break_glass(
            view.id, Actor(email="alice@example.com"), "prod database down, bob unreachable"
        )

        def announced(channel: str):
            return [
                m
                for m in s.slack.in_channel(channel)
                if "Break-glass" in m.content() and m.ts != approval.ts
            ]

        [security] = await s.slack.wait_for(lambda: announced("C0SECURITY"))
        [loud] = await s.slack.wait_for(lambda: announced("C0PRODACCESS"))
        for message in (security, loud):
            assert message.content().startswith(
                ":rotating_light: *Break-glass*: <@UALICE> approved their own request"
            )
            assert "prod database down, bob unreachable" in message.content()
            assert "bypassing bob@example.com" in message.content()
        # The approval message itself is marked, without buttons.
        await s.slack.wait_for(lambda: "Break-glass" in approval.content())
        assert approval.actions() == []
        await s.keycard.revoke(view.id, Actor(email="alice@example.com"), "fixed")
        await s.keycard.wait(view.id, until=(RequestState.ENDED,))

        # An approver reviews it from the announcement: a button, then a modal.
        assert loud.actions() == [ids.REVIEW]
        form = await _review_form(s, "UBOB", loud)
        assert form["private_metadata"] == view.id
        assert "prod database down, bob unreachable" in json.dumps(form["blocks"])
        answer = await _submit_review(s, "UBOB", form, "unjustified")
        assert ids.COMMENT_BLOCK in answer["errors"]  # unjustified needs a comment
        answer = await _submit_review(s, "UALICE", form, "justified")
        assert "cannot review it" in answer["errors"][ids.FINDING_BLOCK]
        # A review that outlasts Slack's patience closes the modal; its outcome comes as a DM.
        monkeypatch.setattr(slack_review, "REVIEW_ANSWER_WITHIN", 0)
        assert await _submit_review(s, "UALICE", form, "justified") == {}
        await s.slack.wait_for(
            lambda: [
                c
                for c in s.slack.called("chat.postMessage")
                if c.args.get("channel") == "UALICE" and "was not recorded" in c.args["text"]
            ]
        )
        monkeypatch.undo()
        assert (await _submit_review(s, "UCAROL", form, None))["errors"][ids.FINDING_BLOCK]
        answer = await _submit_review(s, "UBOB", form, "unjustified", "carol was reachable")
        assert answer == {}  # recorded: the modal closes
        reviewed = await s.keycard.wait(view.id, until=(RequestState.ENDED,))
        assert reviewed.review is not None and reviewed.review.by.email == "bob@example.com"
        assert (reviewed.review.finding, reviewed.review.comment) == (
            "unjustified",
            "carol was reachable",
        )
        await s.slack.wait_for(
            lambda: [m for m in s.slack.messages.values() if "Break-glass reviewed by" in m.text]
        )

        # A second look says who reviewed it, instead of opening the form again.
        opened = len(s.slack.views)
        assert (await s.interact(button_click("UCAROL", security, ids.REVIEW))).status_code == 200
        [whisper] = await s.slack.wait_for(lambda: s.slack.called("chat.postEphemeral"))
        assert whisper.args["user"] == "UCAROL"
        assert f"`{view.id}` was reviewed already: unjustified, by <@UBOB>" in whisper.args["text"]
        assert len(s.slack.views) == opened


async def _review_form(s: SlackStack, user_id: str, message) -> dict:
    opened = len(s.slack.views)
    assert (await s.interact(button_click(user_id, message, ids.REVIEW))).status_code == 200
    return await s.slack.wait_for(
        lambda: s.slack.views[opened] if len(s.slack.views) > opened else None
    )


async def _submit_review(
    s: SlackStack, user_id: str, form: dict, finding: str | None, comment: str = ""
) -> dict:
    values: dict = {ids.COMMENT_BLOCK: {ids.VALUE: {"type": "plain_text_input", "value": comment}}}
    if finding is not None:
        values[ids.FINDING_BLOCK] = {
            ids.VALUE: {"type": "radio_buttons", "selected_option": {"value": finding}}
        }
    response = await s.interact(view_submission(user_id, form, values))
    assert response.status_code == 200
    return json.loads(response.content or b"{}")


async def test_who_may_use_it(dev_env):
    async with slack_stack(dev_env.client) as s:
        # A profile without an email cannot be mapped to anyone.
        await s.command("UNOMAIL")
        [answer] = await s.slack.wait_for(lambda: s.slack.responses)
        assert answer["response_type"] == "ephemeral"
        assert "email on their Slack profile" in answer["text"]
        assert s.slack.views == []

        # Carol may request break-glass; Alice is not offered it.
        await s.command("UCAROL")
        [carols] = await s.slack.wait_for(lambda: s.slack.views)
        assert [o["value"] for o in carols["blocks"][0]["element"]["options"]] == [
            "prod-power-user",
            "prod-admin",
            "break-glass",
        ]

        await s.command("UALICE", "help")
        assert len(s.slack.responses) == 1  # answered in the ack itself


async def test_socket_mode_needs_no_public_url(dev_env):
    async with slack_stack(dev_env.client) as s:
        settings = SlackSettings(bot_token=BOT_TOKEN, app_token=APP_TOKEN, api_url=s.slack.api_url)
        app = attach_slack(FastAPI(), s.keycard, settings)
        assert app is not None
        stop = asyncio.Event()
        connection = asyncio.create_task(run_socket_mode(app, APP_TOKEN, stop))
        try:
            await s.slack.wait_for(lambda: s.slack.sockets)
            command = dict(parse_qsl(command_body("UALICE")))
            envelope = await s.slack.send_envelope("slash_commands", command)
            [modal] = await s.slack.wait_for(lambda: s.slack.views)
            assert modal["callback_id"] == ids.REQUEST_MODAL
            await s.slack.wait_for(
                lambda: any(a.get("envelope_id") == envelope for a in s.slack.socket_acks)
            )
        finally:
            stop.set()
            await connection


def test_attach_slack_mounts_http_only_when_configured():
    api = FastAPI()
    assert attach_slack(api, None, SlackSettings()) is None  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="SLACK_SIGNING_SECRET"):
        attach_slack(api, None, SlackSettings(bot_token=BOT_TOKEN))  # type: ignore[arg-type]


def test_the_manifest_matches_the_app():
    manifest = yaml.safe_load(Path("slack-manifest.yaml").read_text())
    assert [c["command"] for c in manifest["features"]["slash_commands"]] == [ids.DEFAULT_COMMAND]
    assert manifest["settings"]["interactivity"]["is_enabled"] is True
    assert manifest["settings"]["socket_mode_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) >= {
        "commands",
        "chat:write",
        "im:write",
        "users:read",
        "users:read.email",
        "usergroups:read",
    }


NUDGED = """
  - name: nudged
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: ReadOnlyAccess}
    durations: [1h]
    reason_required: false
    approvers: {users: [bob@example.com, carol@example.com]}
    reminders: [1s]
    escalate_after: 2s
    escalation: {approvers: {users: [dave@example.com]}}
    slack: {channel: "#prod-access"}
"""


async def test_a_reminder_and_an_escalation_reach_the_thread_and_the_dms(dev_env):
    async with slack_stack(dev_env.client, SLACK_CONFIG + NUDGED) as s:
        slack = s.slack
        view = await s.keycard.request(flow="nudged", target="prod", requester=ALICE)
        [approval] = await slack.wait_for(lambda: approval_messages(s, view.id))
        assert approval.channel == "C0PRODACCESS"

        def thread(word: str):
            return [m for m in slack.in_channel("C0PRODACCESS", approval.ts) if word in m.text]

        [reminder] = await slack.wait_for(lambda: thread("Reminder"))
        assert "has waited 1s for a decision" in reminder.text
        assert "Can approve: bob@example.com, carol@example.com" in reminder.text
        for dm in ("DUBOB", "DUCAROL"):  # the approval message again, buttons and all
            [again] = await slack.wait_for(lambda dm=dm: slack.in_channel(dm) or None)
            assert again.actions() == ["keycard.approve", "keycard.deny"]

        [escalated] = await slack.wait_for(lambda: thread("escalated"))
        assert "also asking dave@example.com" in escalated.text
        [daves] = await slack.wait_for(lambda: slack.in_channel("DUDAVE") or None)
        assert daves.actions() == ["keycard.approve", "keycard.deny"]
        told = await slack.wait_for(
            lambda: [m for m in slack.in_channel("DUALICE") if "now also goes to" in m.content()]
        )
        assert "dave@example.com" in told[0].content()

        await s.keycard.approve(view.id, Actor(email="dave@example.com"))
        for channel in ("C0PRODACCESS", "DUBOB", "DUCAROL", "DUDAVE"):  # every copy says so
            await slack.wait_for(
                lambda channel=channel: all(
                    "Approved by dave@example.com" in m.content() and m.actions() == []
                    for m in slack.in_channel(channel)
                    if "requests" in m.text
                )
            )
        await s.keycard.revoke(view.id, Actor(email="bob@example.com"))


async def test_several_targets_in_one_request_from_slack(dev_env):
    flow = "prod-power-user"
    async with slack_stack(dev_env.client) as s:
        slack = s.slack
        form = await open_form(s, "UALICE", flow)
        [target] = [b for b in form["blocks"] if b.get("block_id") == ids.target_block(flow)]
        assert target["element"]["type"] == "multi_static_select"
        assert target["label"]["text"] == "Targets"
        both = {
            "type": "multi_static_select",
            "selected_options": [{"value": "prod"}, {"value": "staging"}],
        }
        values = power_user_values("incident 4312", **{ids.target_block(flow): {ids.VALUE: both}})
        request_id = await request_access(s, "UALICE", values)
        [approval] = slack.in_channel(CHANNEL)
        assert "requests *Prod PowerUser* on *Production, Staging* for *1h*" in approval.content()

        await s.interact(button_click("UBOB", approval, ids.APPROVE))
        lines = await slack.wait_for(lambda: len(slack.thread(approval)) >= 2)
        lines = sorted(slack.thread(approval))
        assert lines[0].startswith("*Production*: :key: Access granted until ")
        assert lines[1].startswith("*Staging*: :key: Access granted until ")
        view = await s.keycard.get(request_id)
        assert [t.state for t in view.targets] == ["active", "active"]

        def grant_dms():
            return [m for m in slack.in_channel("DUALICE") if ids.REVOKE in m.actions()]

        [grant_dm] = await slack.wait_for(grant_dms)  # one message for both targets
        assert "You have *Prod PowerUser* on *Production, Staging* until" in grant_dm.content()

        await s.keycard.revoke(request_id, Actor(email="bob@example.com"))

        def revoked():
            lines = [line for line in slack.thread(approval) if "Access revoked by" in line]
            return sorted(lines) if len(lines) == 2 else None

        assert await slack.wait_for(revoked) == [
            "*Production*: :lock: Access revoked by bob@example.com",
            "*Staging*: :lock: Access revoked by bob@example.com",
        ]
        notes = await slack.wait_for(
            lambda: [m for m in slack.in_channel("DUALICE") if "has ended" in m.text]
        )
        assert len(notes) == 1  # one note for both
        assert grant_dms() == []  # the one grant message, edited: its controls are gone
        assert "Your access to *Prod PowerUser* on *Production, Staging* ended" in (
            grant_dm.content()
        )
