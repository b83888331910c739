"""Block Kit builders: pure functions, compared directly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.notify import console_line
from keycard import slack_blocks as b
from keycard.config import parse_config
from keycard.models import (
    Actor,
    Approval,
    Extension,
    LifecycleEvent,
    Notification,
    Requester,
    RequestState,
    RequestView,
    TargetRef,
    TargetStatus,
)
from tests.slack_fake import SLACK_CONFIG

CONFIG = parse_config(SLACK_CONFIG)
POWER = CONFIG.flow("prod-power-user")
ADMIN = CONFIG.flow("prod-admin")
T0 = datetime(2026, 11, 21, 13, 30, tzinfo=UTC)
BOB = Actor(email="bob@example.com", slack_user_id="UBOB")


def view(**changes) -> RequestView:
    base = RequestView(
        id="req-abc",
        state=RequestState.PENDING,
        requester=Requester(email="alice@example.com", slack_user_id="UALICE"),
        flow="prod-power-user",
        flow_label="Prod PowerUser",
        strategy="aws_sso",
        target="prod",
        target_label="Production",
        duration=timedelta(hours=1),
        reason="incident 4312",
        approvals_required=1,
        approvers=["bob@example.com"],
        requested_at=T0,
    )
    return base.model_copy(update=changes)


def event(type_: str, v: RequestView, actor: Actor | None = None, **detail) -> LifecycleEvent:
    return LifecycleEvent(
        id="req-abc/1",
        type=type_,
        time=T0,
        request_id=v.id,
        workflow_id=v.id,
        run_id="run",
        actor=actor,
        requester=v.requester,
        flow=v.flow,
        target=TargetRef(name="prod", label="Production", strategy="aws_sso"),
        duration=v.duration,
        reason=v.reason,
        state=v.state,
        detail=detail,
    )


def test_escape_neutralises_mentions_and_links():
    assert b.escape("<!channel> <@U123> <https://x|y> a&b") == (
        "&lt;!channel&gt; &lt;@U123&gt; &lt;https://x|y&gt; a&amp;b"
    )


def test_mention_prefers_slack_ids_and_escapes_the_rest():
    assert b.mention(BOB) == "<@UBOB>"
    assert b.mention(Actor(email="o'<b>@example.com")) == "o'&lt;b&gt;@example.com"
    assert b.mention(Actor(rule="oncall")) == "rule `oncall`"


def test_until_adds_the_date_only_when_another_day():
    assert b.until(T0, T0) == "13:30 UTC"
    assert b.until(T0 + timedelta(days=1), T0) == "Sun 22 Nov 13:30 UTC"


def test_the_modal_renders_each_field_by_its_type():
    modal = b.request_modal([POWER, ADMIN], POWER, reason="typed before", private_metadata="m")
    assert modal["callback_id"] == b.REQUEST_MODAL and modal["private_metadata"] == "m"
    blocks = {block.get("block_id"): block for block in modal["blocks"]}
    flow = blocks[b.FLOW_BLOCK]
    assert flow["dispatch_action"] is True
    assert flow["element"]["action_id"] == b.FLOW_SELECT
    assert flow["element"]["initial_option"]["value"] == "prod-power-user"
    assert [o["value"] for o in blocks["target:prod-power-user"]["element"]["options"]] == [
        "prod",
        "staging",
    ]
    durations = blocks["duration:prod-power-user"]["element"]
    assert [o["value"] for o in durations["options"]] == ["1h", "30m", "2h"]
    assert durations["initial_option"]["value"] == "1h"
    reason = blocks[b.REASON_BLOCK]
    assert reason["optional"] is False and reason["element"]["initial_value"] == "typed before"
    elements = {
        name: blocks[f"field:prod-power-user:{name}"]["element"]
        for name in ("incident", "pages", "customer_impact", "change", "buddy")
    }
    assert {name: e["type"] for name, e in elements.items()} == {
        "incident": "plain_text_input",
        "pages": "number_input",
        "customer_impact": "checkboxes",
        "change": "static_select",
        "buddy": "users_select",
    }
    assert [o["value"] for o in elements["change"]["options"]] == ["hotfix", "migration"]
    assert blocks["field:prod-power-user:incident"]["optional"] is False
    assert blocks["field:prod-power-user:pages"]["optional"] is True


def test_the_modal_before_a_flow_is_chosen():
    modal = b.request_modal([POWER, ADMIN])
    assert [block.get("block_id") for block in modal["blocks"]] == [b.FLOW_BLOCK, None, "reason"]
    assert "initial_option" not in modal["blocks"][0]["element"]


def test_reading_the_form_back():
    state = {
        "flow": {
            b.FLOW_SELECT: {
                "type": "static_select",
                "selected_option": {"value": "prod-power-user"},
            }
        },
        "target:prod-power-user": {
            "value": {"type": "static_select", "selected_option": {"value": "prod"}}
        },
        "duration:prod-power-user": {"value": {"type": "static_select", "selected_option": None}},
        "reason": {"value": {"type": "plain_text_input", "value": "why"}},
        "field:prod-power-user:pages": {"value": {"type": "number_input", "value": "2"}},
        "field:prod-power-user:customer_impact": {
            "value": {"type": "checkboxes", "selected_options": []}
        },
        "field:prod-power-user:buddy": {
            "value": {"type": "users_select", "selected_user": "UDAVE"}
        },
        "field:prod-power-user:incident": {"value": {"type": "plain_text_input", "value": None}},
        "field:prod-admin:stale": {"value": {"type": "plain_text_input", "value": "other flow"}},
    }
    form = b.read_request_form({"state": {"values": state}})
    assert form == b.RequestForm(
        flow="prod-power-user",
        target="prod",
        duration=None,
        reason="why",
        fields={"pages": "2", "customer_impact": False, "buddy": "UDAVE"},
        user_fields=["buddy"],
    )


def test_with_a_console_messages_link_to_the_requests_page():
    pending = view()
    url = "https://keycard.example.com"
    link = "<https://keycard.example.com/requests/req-abc|req-abc> (open in Keycard)"

    [context] = [blk for blk in b.approval_message(pending, url) if blk["type"] == "context"]
    assert context["elements"][0]["text"].startswith(link + " · 0 of 1 approvals")
    waiting = b.requester_message(pending, url)
    assert any(link in str(blk) for blk in waiting)
    assert all("keycard.example.com" not in str(blk) for blk in b.approval_message(pending))


def test_the_approval_message_while_pending():
    pending = view(reason="<!here> please", fields={"incident": "<@U1>", "customer_impact": True})
    assert b.approval_message(pending) == [
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "<@UALICE> requests *Prod PowerUser* on *Production* for *1h*",
            },
        },
        {
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": "*Reason:* &lt;!here&gt; please\n*incident:* &lt;@U1&gt;\n"
                "*customer_impact:* yes",
            },
        },
        {
            "type": "context",
            "elements": [
                {
                    "type": "mrkdwn",
                    "text": "`req-abc` · 0 of 1 approvals · approvers: bob@example.com",
                }
            ],
        },
        {
            "type": "actions",
            "block_id": "decide:req-abc",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Approve", "emoji": True},
                    "action_id": b.APPROVE,
                    "value": "req-abc",
                    "style": "primary",
                },
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Deny", "emoji": True},
                    "action_id": b.DENY,
                    "value": "req-abc",
                    "style": "danger",
                },
            ],
        },
    ]


@pytest.mark.parametrize(
    ("changes", "line"),
    [
        (
            {
                "state": RequestState.PENDING,
                "approvals_required": 2,
                "approvals": [Approval(actor=BOB, at=T0)],
            },
            None,
        ),
        (
            # request.approved is recorded just before the last approval moves the request on
            {"state": RequestState.PENDING, "approvals": [Approval(actor=BOB, at=T0)]},
            ":white_check_mark: Approved by <@UBOB>",
        ),
        (
            {
                "state": RequestState.ACTIVE,
                "approvals_required": 2,
                "approvals": [
                    Approval(actor=BOB, at=T0),
                    Approval(actor=Actor(email="carol@example.com"), at=T0),
                ],
            },
            ":white_check_mark: Approved by <@UBOB> and carol@example.com (2 of 2 approvals)",
        ),
        (
            {"state": RequestState.GRANTING, "decided_by": Actor(rule="oncall")},
            ":white_check_mark: Approved by rule `oncall`",
        ),
        ({"state": RequestState.DENIED, "decided_by": BOB}, ":no_entry: Denied by <@UBOB>"),
        (
            {"state": RequestState.CANCELLED, "decided_by": Actor(email="alice@example.com")},
            ":heavy_multiplication_x: Cancelled by alice@example.com",
        ),
        (
            {"state": RequestState.EXPIRED, "end_reason": "no decision within 1h"},
            ":hourglass: Expired: no decision within 1h",
        ),
        (
            {"state": RequestState.FAILED, "end_reason": "no user <x>"},
            ":warning: Failed: no user &lt;x&gt;",
        ),
    ],
)
def test_decision_lines(changes, line):
    decided = view(**changes)
    assert b.decision_line(decided) == line
    message = b.approval_message(decided)
    if line is None:
        assert message[-1]["type"] == "actions"
    else:
        assert all(block["type"] != "actions" for block in message)
        assert message[-2] == {"type": "section", "text": {"type": "mrkdwn", "text": line}}


def test_the_grant_dm_offers_what_the_flow_allows():
    active = view(state=RequestState.ACTIVE, granted_at=T0, expires_at=T0 + timedelta(hours=1))
    message = b.grant_message(active, POWER)
    assert message[0]["text"]["text"] == (
        "You have *Prod PowerUser* on *Production* until *14:30 UTC*."
    )
    [controls] = [block for block in message if block["type"] == "actions"]
    revoke, extend = controls["elements"]
    assert revoke["action_id"] == b.REVOKE and revoke["value"] == "req-abc"
    # max 3h, 1h used: +1h and +2h fit, so do +30m; nothing beyond the maximum is offered.
    assert [o["value"] for o in extend["options"]] == ["req-abc 1h", "req-abc 30m", "req-abc 2h"]

    extended = active.model_copy(
        update={
            "extensions": [
                Extension(actor=BOB, at=T0, duration=timedelta(hours=1), expires_at=T0),
                Extension(actor=BOB, at=T0, duration=timedelta(minutes=30), expires_at=T0),
            ]
        }
    )
    assert b.extension_choices(extended, POWER) == [timedelta(minutes=30)]
    # prod-admin allows no extension; its requester may still end access early.
    assert [e["action_id"] for e in b.grant_message(active, ADMIN)[-1]["elements"]] == [b.REVOKE]
    no_early_revoke = ADMIN.model_copy(update={"allow_early_revoke": False})
    assert all(block["type"] != "actions" for block in b.grant_message(active, no_early_revoke))


def test_the_grant_dm_once_access_ended():
    ended = view(
        state=RequestState.ENDED,
        granted_at=T0,
        expires_at=T0 + timedelta(hours=1),
        ended_at=T0 + timedelta(minutes=20),
        end_reason="revoked early by alice@example.com",
    )
    message = b.grant_message(ended, POWER)
    assert message[0]["text"]["text"] == (
        "Your access to *Prod PowerUser* on *Production* ended at 13:50 UTC "
        "(revoked early by alice@example.com)."
    )
    assert all(block["type"] != "actions" for block in message)
    assert b.expiring_message(ended, POWER) == message


def test_the_timeline():
    active = view(state=RequestState.ACTIVE, granted_at=T0, expires_at=T0 + timedelta(hours=1))
    assert b.timeline_line(event("access.granted", active), active) == (
        ":key: Access granted until 14:30 UTC"
    )
    extended = active.model_copy(
        update={
            "expires_at": T0 + timedelta(hours=2),
            "extensions": [Extension(actor=BOB, at=T0, duration=timedelta(hours=1), expires_at=T0)],
        }
    )
    line = b.timeline_line(event("access.extended", extended, BOB, comment="<!channel>"), extended)
    assert line == (
        ":stopwatch: Extended by 1h by <@UBOB>: “&lt;!channel&gt;”; now until 15:30 UTC"
    )
    assert b.timeline_line(event("access.revoked", active, BOB), active) == (
        ":lock: Access revoked by <@UBOB>"
    )
    assert b.timeline_line(event("access.ended", active), active) == (
        ":lock: Access ended: the time was up"
    )
    assert b.timeline_line(event("request.approved", active, BOB), active) is None


def test_the_timeline_after_the_access():
    ended = view(state=RequestState.ENDED, granted_at=T0, break_glass=True)
    summary = "2 call(s) (1 write(s), 0 error(s)) to ec2; 13:31 to 13:40 UTC"
    assert b.timeline_line(event("access.activity", ended, summary=summary), ended) == (
        f":mag: What was done with it, from CloudTrail: {summary}"
    )
    reviewed = event("break_glass.reviewed", ended, BOB, finding="unjustified", comment="<b>")
    assert b.timeline_line(reviewed, ended) == (
        ":x: Break-glass reviewed by <@UBOB>: unjustified: “&lt;b&gt;”"
    )
    overdue = event("break_glass.review_overdue", ended, reason="not reviewed within 7d")
    assert b.timeline_line(overdue, ended) == (
        ":rotating_light: Break-glass use not reviewed: not reviewed within 7d"
    )


def test_the_request_list():
    active = view(state=RequestState.ACTIVE, expires_at=T0 + timedelta(hours=1))
    pending = view(id="req-def", reason="")
    shown = b.request_list([active, pending], T0)
    texts = [block["text"]["text"] for block in shown]
    assert texts[1] == (
        "*Prod PowerUser* on *Production* · 1h · active until 14:30 UTC\n`req-abc` · incident 4312"
    )
    assert texts[2].endswith("pending, 0 of 1 approvals\n`req-def` · (no reason)")
    assert b.request_list([], T0)[0]["text"]["text"] == "You have no pending or active requests."


def test_the_requesters_dm_speaks_to_them_and_shows_what_went_wrong():
    waiting = view(notes=["on_request failed: PagerDuty unreachable (a person decides instead)"])
    assert b.requester_text(waiting) == (
        "Your request for *Prod PowerUser* on *Production* (1h) is waiting for 0 of 1 approvals."
    )
    assert ":warning: on_request failed: PagerDuty unreachable (a person decides instead)" in (
        all_text(b.requester_message(waiting))
    )
    approved = view(state=RequestState.ACTIVE, approvals=[Approval(actor=BOB, at=T0)])
    assert b.requester_text(approved).startswith("Your request for *Prod PowerUser*")
    assert "<@UALICE> requests" not in b.requester_text(approved)  # not the approvers' wording
    ended = view(state=RequestState.ENDED, end_reason="expired")
    assert b.ended_note(ended) == (
        "Your access to *Prod PowerUser* on *Production* has ended (expired). `req-abc`"
    )


def test_break_glass_is_announced_loudly_and_marked_on_the_approval():
    used = view(
        state=RequestState.GRANTING,
        break_glass=True,
        approvals=[Approval(actor=Actor(email="alice@example.com", slack_user_id="UALICE"), at=T0)],
        decided_by=Actor(email="alice@example.com", slack_user_id="UALICE"),
    )
    announced = b.break_glass_message(
        used,
        event("break_glass.used", used, justification="prod DB <!channel> down",
              bypassed_approvers=["bob@example.com"]),
    )  # fmt: skip
    text = announced[0]["text"]["text"]
    assert text.startswith(":rotating_light: *Break-glass*: <@UALICE> approved their own request")
    assert "bypassing bob@example.com" in text and "prod DB &lt;!channel&gt; down" in text
    assert b.decision_line(used).startswith(":rotating_light: *Break-glass*")
    assert "Break-glass" not in (b.decision_line(view(state=RequestState.GRANTING,
        approvals=[Approval(actor=BOB, at=T0)])) or "")  # fmt: skip


def all_text(message: list[dict]) -> str:
    """Every text a message shows: sections and context elements."""
    found = []
    for block in message:
        if "text" in block:
            found.append(block["text"]["text"])
        found.extend(e["text"] for e in block.get("elements", []) if "text" in e)
    return "\n".join(t if isinstance(t, str) else t.get("text", "") for t in found)


def test_the_approval_message_shows_each_step_met_or_who_can_still_approve():
    from keycard.models import ApprovalStepView

    steps = [
        ApprovalStepView(
            name="sre",
            count=1,
            approvers=["bob@example.com", "carol@example.com"],
            approved_by=["bob@example.com"],
        ),
        ApprovalStepView(
            name="security",
            count=1,
            approvers=["security@example.com", "carol@example.com", "alice@example.com"],
        ),
    ]
    pending = view(
        approval_steps=steps,
        approvals_required=2,
        approvals=[Approval(actor=BOB, at=T0)],
    )
    text = str(b.approval_message(pending))
    assert "*Approval steps*\\n:white_check_mark: *sre*: bob@example.com\\n" in text
    # the requester (alice) and whoever approved already are not offered
    assert (
        ":hourglass_flowing_sand: *security*: 0 of 1 · can approve: security@example.com, "
        "carol@example.com"
    ) in text
    assert b.decision_line(pending) is None  # still waiting: Approve / Deny stay


def test_the_form_says_a_stepped_flow_is_approved_in_steps():
    flow = parse_config(
        SLACK_CONFIG.replace(
            "    approvers: {users: [bob@example.com, carol@example.com, dave@example.com]}\n"
            "    approvals_required: 2",
            "    approval_steps:\n"
            "      - {name: sre, approvers: {users: [bob@example.com, carol@example.com]}}\n"
            "      - {name: dba, approvers: {users: [dave@example.com, carol@example.com]}}",
        )
    ).flow("prod-admin")
    modal = b.request_modal([flow], flow)
    assert "approved in steps: sre (1) and dba (1)" in str(modal)


def test_the_form_offers_a_start_time_and_reads_it_in_utc():
    modal = b.request_modal([POWER], POWER)
    [start] = [block for block in modal["blocks"] if block.get("block_id") == b.START_BLOCK]
    assert start["optional"] is True
    assert start["element"] == {"type": "datetimepicker", "action_id": b.VALUE}
    assert "up to 7d ahead" in start["hint"]["text"]
    picked = {
        "state": {
            "values": {
                b.FLOW_BLOCK: {
                    b.FLOW_SELECT: {
                        "type": "static_select",
                        "selected_option": {"value": "prod-power-user"},
                    }
                },
                b.START_BLOCK: {
                    b.VALUE: {"type": "datetimepicker", "selected_date_time": 1796461200}
                },
            }
        }
    }
    assert b.read_request_form(picked).start_at == datetime(2026, 12, 5, 9, 0, tzinfo=UTC)


def test_an_approved_request_with_a_later_start_says_when_and_keeps_cancel():
    scheduled = view(
        state=RequestState.SCHEDULED,
        start_at=T0 + timedelta(days=1),
        approvals=[Approval(actor=BOB, at=T0)],
        decided_by=BOB,
        decided_at=T0,
    )
    assert b.decision_line(scheduled) == (
        ":white_check_mark: Approved by <@UBOB>\n:calendar: Access begins at Sun 22 Nov 13:30 UTC"
    )
    assert "keycard.cancel" in str(b.requester_message(scheduled))


def several(*states: tuple[str, str, str | None]) -> list[TargetStatus]:
    return [TargetStatus(name=n, label=n.title(), state=s, error=e) for n, s, e in states]


def test_a_request_naming_several_targets_is_shown_with_each():
    modal = b.request_modal([POWER], POWER)
    [target] = [x for x in modal["blocks"] if x.get("block_id") == b.target_block(POWER.name)]
    assert target["element"]["type"] == "multi_static_select"
    assert [o["value"] for o in target["element"]["options"]] == ["prod", "staging"]
    picked = {
        "type": "multi_static_select",
        "selected_options": [{"value": "prod"}, {"value": "staging"}],
    }
    form = b.read_request_form(
        {"state": {"values": {
            "flow": {b.FLOW_SELECT: {"type": "static_select", "selected_option": {"value": POWER.name}}},
            b.target_block(POWER.name): {b.VALUE: picked},
        }}}
    )  # fmt: skip
    assert form.target == ["prod", "staging"]

    targets = several(("prod", "active", None), ("staging", "failed", "AccessDenied: no"))
    active = view(state=RequestState.ACTIVE, granted_at=T0, expires_at=T0 + timedelta(hours=1))
    active = active.model_copy(update={"targets": targets})
    assert "on *Prod, Staging* for *1h*" in all_text(b.approval_message(active))
    grant = all_text(b.grant_message(active, POWER))
    assert "You have *Prod PowerUser* on *Prod, Staging* until" in grant
    assert ":warning: Not granted:\n*Staging*: AccessDenied: no" in grant
    failed = event("access.grant_failed", active, error="AccessDenied: no", stage="grant")
    failed = failed.model_copy(
        update={"target": TargetRef(name="staging", label="Staging", strategy="aws_sso")}
    )
    assert b.timeline_line(failed, active) == "*Staging*: :warning: Not granted: AccessDenied: no"
    assert b.first_target_in(active, "active") == "prod"
    line = console_line(Notification(event=failed, view=active))
    assert line == (
        "req-abc: Prod PowerUser (Staging) could not be granted (AccessDenied: no); "
        "its other targets go ahead"
    )
