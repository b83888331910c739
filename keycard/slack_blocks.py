"""Keycard in Slack as Block Kit: pure functions from flows and requests to blocks, and back.

Both the Slack app (starter/slack/app.py) and the Slack notifier (activities/slack.py) build their
messages here, so tests can compare payloads directly. Anything a person typed (reasons, field
values, comments) goes through `escape` before it lands in mrkdwn: a reason of `<!channel>` pings
nobody. Plain-text elements (modal labels, options) are not parsed by Slack and need no escaping.

One module for every message, modal and home tab, longer than most on purpose: the app and the
notifier must render a request the same way, and a reviewer checks the escaping in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, Field

from keycard.config import PromptField
from keycard.durations import format_duration
from keycard.models import (
    PER_TARGET_EVENTS,
    Actor,
    LifecycleEvent,
    Requester,
    RequestState,
    RequestView,
    ReviewFinding,
)
from keycard.policy import MAX_TARGETS

# --- ids: every callback, action and block id the app and the notifier share ------------------

DEFAULT_COMMAND = "/access"
REQUEST_MODAL = "keycard.request"  # the /access modal's callback_id
FLOW_SELECT = "keycard.flow"  # changing the flow updates the modal (dispatch_action)
APPROVE = "keycard.approve"
DENY = "keycard.deny"
CANCEL = "keycard.cancel"
REVOKE = "keycard.revoke"
EXTEND = "keycard.extend"  # a static_select: option value "<request id> <duration>"
DECISION_ACTIONS = (APPROVE, DENY, CANCEL, REVOKE)
REVIEW = "keycard.review"  # the break-glass announcement's button: opens the review modal
REVIEW_MODAL = "keycard.review_form"  # its callback_id; private_metadata is the request id
FINDING_BLOCK = "finding"
COMMENT_BLOCK = "comment"

FLOW_BLOCK = "flow"
REASON_BLOCK = "reason"
START_BLOCK = "start_at"
VALUE = "value"  # the action_id of every modal input but the flow select

# Slack's limits: option text 75 characters, section text 3000, fallback text 4000.
_OPTION_TEXT = 75
_SECTION_TEXT = 3000


def target_block(flow: str) -> str:
    """Per flow, so choosing another flow clears the choices Slack would otherwise carry over."""
    return f"target:{flow}"


def duration_block(flow: str) -> str:
    return f"duration:{flow}"


def field_block(flow: str, field: str) -> str:
    return f"field:{flow}:{field}"


# --- text ----------------------------------------------------------------------------------------


def escape(text: object) -> str:
    """Make text safe for mrkdwn: `<!channel>`, `<@U123>` and links show as typed, ping nobody."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(actor: Actor | Requester | None) -> str:
    """`<@U123>` for people Slack knows (the one markup we write ourselves), else their email."""
    if actor is None:
        return "Keycard"
    if actor.slack_user_id:
        return f"<@{actor.slack_user_id}>"
    if isinstance(actor, Actor) and not actor.email and actor.rule:
        return f"rule `{escape(actor.rule)}`"
    return escape(actor.email or "someone")


def until(moment: datetime, since: datetime | None = None) -> str:
    """`14:30 UTC`, with the date when it is not the same day as `since`."""
    if since is not None and moment.date() != since.date():
        return f"{moment:%a %d %b %H:%M} UTC"
    return f"{moment:%H:%M} UTC"


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _plain(text: str, limit: int = _OPTION_TEXT) -> dict[str, Any]:
    return {"type": "plain_text", "text": _truncate(text, limit), "emoji": True}


def _option(label: str, value: str) -> dict[str, Any]:
    return {"text": _plain(label), "value": value}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _truncate(text, _SECTION_TEXT)}}


def note(text: str) -> list[dict[str, Any]]:
    """A message that is one mrkdwn paragraph; `text` must already be escaped."""
    return [_section(text)]


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {
        "type": "button",
        "text": _plain(text),
        "action_id": action_id,
        "value": value,
    }
    if style:
        button["style"] = style
    return button


# --- the /access modal ---------------------------------------------------------------------------


def request_modal(
    flows: Sequence[Any],
    selected: Any | None = None,
    *,
    reason: str = "",
    private_metadata: str = "",
) -> dict[str, Any]:
    """The request form: flow first; the chosen flow's targets, durations and fields after it."""
    if selected is None and len(flows) == 1:
        selected = flows[0]
    flow_select: dict[str, Any] = {
        "type": "static_select",
        "action_id": FLOW_SELECT,
        "placeholder": _plain("Choose what you need"),
        "options": [_option(f.display, f.name) for f in flows],
    }
    if selected is not None:
        flow_select["initial_option"] = _option(selected.display, selected.name)
    blocks: list[dict[str, Any]] = [
        {
            "type": "input",
            "block_id": FLOW_BLOCK,
            "dispatch_action": True,
            "label": _plain("Access"),
            "element": flow_select,
        }
    ]
    if selected is None:
        blocks.append(_context("Choose an access flow to see its targets and durations."))
    else:
        blocks.extend(_flow_inputs(selected))
    reason_input: dict[str, Any] = {
        "type": "plain_text_input",
        "action_id": VALUE,
        "multiline": True,
        "max_length": 1000,
        "placeholder": _plain(_reason_hint(selected)),
    }
    if reason:
        reason_input["initial_value"] = reason
    blocks.append(
        {
            "type": "input",
            "block_id": REASON_BLOCK,
            "label": _plain("Reason"),
            "optional": selected is not None and not selected.reason_required,
            "element": reason_input,
        }
    )
    if selected is not None:
        blocks.append(
            {
                "type": "input",
                "block_id": START_BLOCK,
                "label": _plain("Start at"),
                "optional": True,
                "hint": _plain(
                    "Leave empty to start as soon as approved; up to "
                    f"{format_duration(selected.max_start_delay)} ahead"
                ),
                "element": {"type": "datetimepicker", "action_id": VALUE},
            }
        )
        blocks.extend(field_input(selected.name, spec) for spec in selected.fields)
    return {
        "type": "modal",
        "callback_id": REQUEST_MODAL,
        "title": _plain("Request access", 24),
        "submit": _plain("Request", 24),
        "close": _plain("Cancel", 24),
        "private_metadata": private_metadata,
        "blocks": blocks,
    }


def _flow_inputs(flow: Any) -> list[dict[str, Any]]:
    targets = [_option(t.display, t.name) for t in flow.targets]
    # Several targets: pick one or more, each granted on its own under the one approval.
    many = len(targets) > 1
    target_select: dict[str, Any] = {
        "type": "multi_static_select" if many else "static_select",
        "action_id": VALUE,
        "placeholder": _plain("Where (one or more)" if many else "Where"),
        "options": targets,
    }
    if many:
        target_select["max_selected_items"] = min(len(targets), MAX_TARGETS)
    else:
        target_select["initial_option"] = targets[0]
    durations = [_option(format_duration(d), format_duration(d)) for d in flow.durations]
    about = [escape(flow.description)] if flow.description else []
    if flow.approval_steps:
        steps = [f"{s.name or f'step-{n}'} ({s.count})" for n, s in enumerate(flow.steps, 1)]
        about.append(f"approved in steps: {_and(steps)}")
    else:
        needed = flow.approvals_required
        about.append(f"{needed} approval{'s' if needed > 1 else ''} needed")
    blocks = [
        _context(" · ".join(about)),
        {
            "type": "input",
            "block_id": target_block(flow.name),
            "label": _plain("Targets" if many else "Target"),
            "element": target_select,
            **(
                {"hint": _plain("One approval covers them all; each is granted on its own.")}
                if many
                else {}
            ),
        },
        {
            "type": "input",
            "block_id": duration_block(flow.name),
            "label": _plain("Duration"),
            "element": {
                "type": "static_select",
                "action_id": VALUE,
                "options": durations,
                "initial_option": durations[0],
            },
        },
    ]
    return blocks


def field_input(flow: str, spec: PromptField) -> dict[str, Any]:
    """One extra question, rendered by its type."""
    label = spec.label or spec.name
    element: dict[str, Any]
    optional = not spec.required
    match spec.type:
        case "int":
            element = {"type": "number_input", "is_decimal_allowed": False}
        case "bool":
            element = {"type": "checkboxes", "options": [_option(label, "true")]}
            optional = True  # unticked means false, which is an answer
        case "choice":
            element = {"type": "static_select", "options": [_option(c, c) for c in spec.choices]}
        case "user":
            element = {"type": "users_select"}
        case _:
            element = {"type": "plain_text_input"}
    element["action_id"] = VALUE
    block: dict[str, Any] = {
        "type": "input",
        "block_id": field_block(flow, spec.name),
        "label": _plain(label, 2000),
        "optional": optional,
        "element": element,
    }
    if spec.description:
        block["hint"] = _plain(spec.description, 2000)
    return block


class RequestForm(BaseModel):
    """What a person put in the modal, before any checks."""

    flow: str | None = None
    target: str | list[str] | None = Field(default=None, description="one or several")
    duration: str | None = None
    reason: str = ""
    start_at: datetime | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    user_fields: list[str] = Field(
        default_factory=list, description="fields holding a Slack user id, to turn into an email"
    )


def read_request_form(view: dict[str, Any]) -> RequestForm:
    """The modal's state as a RequestForm; blocks of other flows (Slack may keep them) are ignored."""
    values: dict[str, dict[str, Any]] = view.get("state", {}).get("values", {})
    flow = _input_value(values.get(FLOW_BLOCK, {}).get(FLOW_SELECT))
    picked = (values.get(START_BLOCK, {}).get(VALUE) or {}).get("selected_date_time")
    form = RequestForm(
        flow=flow,
        reason=str(_input_value(values.get(REASON_BLOCK, {}).get(VALUE)) or ""),
        start_at=datetime.fromtimestamp(int(picked), UTC) if picked else None,
    )
    if not flow:
        return form
    form.target = _input_value(values.get(target_block(flow), {}).get(VALUE))
    form.duration = _input_value(values.get(duration_block(flow), {}).get(VALUE))
    prefix = field_block(flow, "")
    for block_id, actions in values.items():
        if not block_id.startswith(prefix) or VALUE not in actions:
            continue
        name = block_id.removeprefix(prefix)
        state = actions[VALUE]
        value = _input_value(state)
        if value is None or value == "":
            continue
        form.fields[name] = value
        if state.get("type") == "users_select":
            form.user_fields.append(name)
    return form


def _input_value(state: dict[str, Any] | None) -> Any:
    if not state:
        return None
    match state.get("type"):
        case "static_select" | "radio_buttons":
            option = state.get("selected_option")
            return option["value"] if option else None
        case "multi_static_select":
            return [option["value"] for option in state.get("selected_options") or []] or None
        case "checkboxes":
            return bool(state.get("selected_options"))
        case "users_select":
            return state.get("selected_user")
        case _:  # plain_text_input, number_input
            return state.get("value")


# --- the approval message (channel or approvers' DMs) ------------------------------------------


def _reason_hint(flow: Any | None) -> str:
    rules = getattr(flow, "reason", None)
    if rules is not None and rules.hint:
        return str(rules.hint)
    return "What is it for? An incident number helps approvers."


def ticket_link(view: RequestView) -> str:
    """The reason's ticket as a Slack link (or its key alone), or "" when it names none."""
    if view.ticket is None:
        return ""
    if view.ticket.url:
        return f"<{view.ticket.url}|{escape(view.ticket.key)}>"
    return escape(view.ticket.key)


def request_line(view: RequestView) -> str:
    return (
        f"{mention(view.requester)} requests *{escape(view.flow_label)}* on "
        f"*{escape(view.targets_label)}* for *{format_duration(view.duration)}*"
    )


def _details(view: RequestView) -> list[dict[str, Any]]:
    reason = escape(view.reason) if view.reason else "_(no reason given)_"
    lines = [f"*Reason:* {reason}"]
    if view.start_at is not None:
        lines.append(f"*Starts:* {until(view.start_at, view.requested_at)} (a scheduled start)")
    if view.ticket is not None:
        lines.append(f"*Ticket:* {ticket_link(view)}")
    lines.extend(f"*{escape(name)}:* {escape(_show(value))}" for name, value in view.fields.items())
    if view.submitted_by is not None:
        lines.append(f"*Submitted by:* {mention(view.submitted_by)}")
    return [_section("\n".join(lines))]


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _approvals(view: RequestView) -> str:
    who = _and([mention(a.actor) for a in view.approvals])
    count = f"{len(view.approvals)} of {view.approvals_required} approvals"
    return f"{count}: {who}" if view.approvals else count


def step_lines(view: RequestView) -> list[str]:
    """One line per approval step: met, by whom; or how many more, and who can still approve."""
    lines = []
    for step in view.approval_steps:
        if step.satisfied:
            lines.append(f":white_check_mark: *{escape(step.name)}*: {_and(step.approved_by)}")
            continue
        can = view.can_still_approve(step)
        lines.append(
            f":hourglass_flowing_sand: *{escape(step.name)}*: {len(step.approved_by)} of "
            f"{step.count}" + (f" · can approve: {escape(', '.join(can))}" if can else "")
        )
    return lines


def reminder_text(view: RequestView, detail: dict[str, Any]) -> str:
    """The thread reply of a reminder: how long it has waited, and who can still decide."""
    text = (
        f":bell: Reminder: {mention(view.requester)}'s request for *{escape(view.flow_label)}* on "
        f"*{escape(view.targets_label)}* has waited {escape(detail.get('waited', ''))} for a decision."
    )
    if detail.get("still_needed"):
        text += f" Still needed: {escape(detail['still_needed'])}."
    if detail.get("approvers"):
        text += f" Can approve: {escape(', '.join(detail['approvers']))}."
    return text


def escalation_text(view: RequestView, detail: dict[str, Any]) -> str:
    added = ", ".join(detail.get("added") or []) or "nobody new"
    return (
        f":arrow_double_up: No decision after {escape(detail.get('waited', ''))}: escalated, also "
        f"asking {escape(added)}."
    )


def escalation_requester_text(view: RequestView, detail: dict[str, Any]) -> str:
    added = ", ".join(detail.get("added") or []) or "nobody new"
    return (
        f"Nobody has decided your request `{view.id}` after {escape(detail.get('waited', ''))}: "
        f"it now also goes to {escape(added)}."
    )


def _and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def decision_line(view: RequestView) -> str | None:
    """How the request was decided, or None while it waits: `Approved by @bob`."""
    line = _decision_line(view)
    if line is not None and view.break_glass:
        line = ":rotating_light: *Break-glass*: the requester approved their own request\n" + line
    return line


def _decision_line(view: RequestView) -> str | None:
    state = view.state
    # `request.approved` is recorded just before the last approval moves the request on.
    if state is RequestState.PENDING and len(view.approvals) < view.approvals_required:
        return None
    if state is RequestState.DENIED:
        return f":no_entry: Denied by {mention(view.decided_by)}"
    if state is RequestState.CANCELLED:
        return f":heavy_multiplication_x: Cancelled by {mention(view.decided_by)}"
    if state is RequestState.EXPIRED:
        return f":hourglass: Expired: {escape(view.end_reason or 'no decision in time')}"
    if state is RequestState.FAILED and not view.approvals and view.decided_by is None:
        return f":warning: Failed: {escape(view.end_reason or 'unknown error')}"
    if view.approvals and len(view.approvals) >= view.approvals_required:
        line = f":white_check_mark: Approved by {_and([mention(a.actor) for a in view.approvals])}"
        if view.approvals_required > 1:
            line += f" ({len(view.approvals)} of {view.approvals_required} approvals)"
    else:
        line = f":white_check_mark: Approved by {mention(view.decided_by)}"
    if state is RequestState.FAILED:
        line += f"\n:warning: Failed: {escape(view.end_reason or 'unknown error')}"
    if state is RequestState.SCHEDULED and view.start_at is not None:
        line += f"\n:calendar: Access begins at {until(view.start_at, view.decided_at)}"
    return line


def _comment(event: LifecycleEvent | None) -> str:
    comment = (event.detail.get("comment") if event else None) or ""
    return f": “{escape(comment)}”" if comment else ""


def approval_message(view: RequestView, console_url: str | None = None) -> list[dict[str, Any]]:
    """Who, what, how long, why, the extra fields; Approve / Deny while pending, the outcome after;
    with `console_url`, a link to the request's page in the web console."""
    blocks = [_section(request_line(view)), *_details(view), *_not_granted(view)]
    if view.approval_steps:
        blocks.append(_section("*Approval steps*\n" + "\n".join(step_lines(view))))
    decided = decision_line(view)
    context = _request_ref(view, console_url)
    if decided is None:
        context += f" · {_approvals(view)}"
        if view.approvers:
            context += " · approvers: " + ", ".join(escape(a) for a in view.approvers)
        blocks.append(_context(context))
        blocks.append(
            {
                "type": "actions",
                "block_id": f"decide:{view.id}",
                "elements": [
                    _button("Approve", APPROVE, view.id, "primary"),
                    _button("Deny", DENY, view.id, "danger"),
                ],
            }
        )
    else:
        blocks.append(_section(decided))
        blocks.append(_context(context))
    return blocks + _notes(view)


def _notes(view: RequestView) -> list[dict[str, Any]]:
    """What went wrong on the way (a hook that failed, say), for everyone the message reaches."""
    if not view.notes:
        return []
    return [_context("\n".join(f":warning: {escape(note)}" for note in view.notes))]


def approval_text(view: RequestView) -> str:
    """The notification text (push, screen readers) of the approval message."""
    decided = decision_line(view)
    return request_line(view) + (f" — {decided}" if decided else "")


# --- the requester's DMs -------------------------------------------------------------------------


def _what(view: RequestView) -> str:
    return f"*{escape(view.flow_label)}* on *{escape(view.targets_label)}*"


def _not_granted(view: RequestView) -> list[dict[str, Any]]:
    """A request naming several targets: the ones that could not be granted, and why."""
    failed = [t for t in view.targets if t.state == "failed"]
    if not failed:
        return []
    lines = [f"*{escape(t.label)}*: {escape(t.error or 'unknown error')}" for t in failed]
    return [_section(":warning: Not granted:\n" + "\n".join(lines))]


def first_target_in(view: RequestView, state: str) -> str | None:
    """Of a request naming several targets, the first in `state` (the one whose event speaks
    for them all in messages, so each message is sent once)."""
    return next((t.name for t in view.targets if t.state == state), None)


def _request_ref(view: RequestView, console_url: str | None) -> str:
    """The request's id, linked to its page in the console when there is one."""
    if not console_url:
        return f"`{view.id}`"
    return f"<{console_url}/requests/{view.id}|{view.id}> (open in Keycard)"


def requester_message(view: RequestView, console_url: str | None = None) -> list[dict[str, Any]]:
    """ "Your request is waiting", with Cancel (also once approved for a later start); once
    decided, the outcome without buttons."""
    if decision_line(view) is None or view.state is RequestState.SCHEDULED:
        return [
            _section(requester_text(view)),
            _context(
                f"{_request_ref(view, console_url)} · reason: {escape(view.reason) or '(none)'}"
            ),
            *_notes(view),
            {
                "type": "actions",
                "block_id": f"cancel:{view.id}",
                "elements": [_button("Cancel request", CANCEL, view.id)],
            },
        ]
    return [
        _section(requester_text(view)),
        _context(_request_ref(view, console_url)),
        *_notes(view),
    ]


def requester_text(view: RequestView) -> str:
    """The requester's own DM, in the second person: waiting for whom, or how it was decided."""
    asked = f"Your request for {_what(view)} ({format_duration(view.duration)})"
    decided = decision_line(view)
    if decided is None:
        return f"{asked} is waiting for {_approvals(view)}."
    return f"{asked}:\n{decided}"


def break_glass_message(
    view: RequestView, event: LifecycleEvent, console_url: str | None = None
) -> list[dict[str, Any]]:
    """The loud announcement of a break-glass approval, for the flow's and security's channels."""
    bypassed = event.detail.get("bypassed_approvers") or []
    text = (
        f":rotating_light: *Break-glass*: {mention(view.requester)} approved their own request "
        f"for {_what(view)} ({format_duration(view.duration)}), bypassing "
        f"{_and([escape(a) for a in bypassed]) or 'no approver'}.\n"
        f"*Justification:* {escape(event.detail.get('justification') or '(none)')}"
    )
    return [
        _section(text),
        _context(
            f"{_request_ref(view, console_url)} · an approver reviews it afterwards: was the "
            f"emergency real? (here, `keycard review {view.id}`, or the console)"
        ),
        {
            "type": "actions",
            "block_id": f"review:{view.id}",
            "elements": [_button("Review", REVIEW, view.id)],
        },
    ]


# --- the break-glass review modal ---------------------------------------------------------------


class ReviewForm(BaseModel):
    """What an approver put in the review modal."""

    request_id: str
    finding: ReviewFinding | None = None
    comment: str = ""


def review_modal(view: RequestView) -> dict[str, Any]:
    """Was the emergency real? Justified or not, with a comment (required when not)."""
    return {
        "type": "modal",
        "callback_id": REVIEW_MODAL,
        "title": _plain("Review break-glass", 24),
        "submit": _plain("Record review", 24),
        "close": _plain("Cancel", 24),
        "private_metadata": view.id,
        "blocks": [
            _section(f"{request_line(view)} (`{view.id}`): approved by themselves."),
            *_details(view),
            *_notes(view),  # the justification is the break-glass note
            {
                "type": "input",
                "block_id": FINDING_BLOCK,
                "label": _plain("Was the emergency real?"),
                "element": {
                    "type": "radio_buttons",
                    "action_id": VALUE,
                    "options": [
                        _option("Justified", "justified"),
                        _option("Unjustified", "unjustified"),
                    ],
                },
            },
            {
                "type": "input",
                "block_id": COMMENT_BLOCK,
                "label": _plain("Comment"),
                "optional": True,
                "hint": _plain("Required when unjustified: what should have happened instead"),
                "element": {
                    "type": "plain_text_input",
                    "action_id": VALUE,
                    "multiline": True,
                    "max_length": 1000,
                },
            },
        ],
    }


def read_review_form(view: dict[str, Any]) -> ReviewForm:
    values: dict[str, dict[str, Any]] = view.get("state", {}).get("values", {})
    finding = _input_value(values.get(FINDING_BLOCK, {}).get(VALUE))
    return ReviewForm(
        request_id=str(view.get("private_metadata") or ""),
        finding=finding if finding in ("justified", "unjustified") else None,
        comment=str(_input_value(values.get(COMMENT_BLOCK, {}).get(VALUE)) or ""),
    )


def extension_choices(view: RequestView, flow: Any | None) -> list[timedelta]:
    """The flow's durations that still fit under its maximum, extensions included."""
    if flow is None or not flow.allow_extension or view.state is not RequestState.ACTIVE:
        return []
    return [d for d in flow.durations if view.total_duration + d <= flow.maximum]


def _access_controls(view: RequestView, flow: Any | None) -> list[dict[str, Any]]:
    if view.state is not RequestState.ACTIVE or flow is None:
        return []
    elements: list[dict[str, Any]] = []
    if flow.allow_early_revoke:
        elements.append(_button("Revoke now", REVOKE, view.id, "danger"))
    choices = extension_choices(view, flow)
    if choices:
        elements.append(
            {
                "type": "static_select",
                "action_id": EXTEND,
                "placeholder": _plain("Extend by…"),
                "options": [
                    _option(f"+{format_duration(d)}", f"{view.id} {format_duration(d)}")
                    for d in choices
                ],
            }
        )
    if not elements:
        return []
    return [{"type": "actions", "block_id": f"access:{view.id}", "elements": elements}]


def grant_message(view: RequestView, flow: Any | None) -> list[dict[str, Any]]:
    """ "You have X until 14:30 UTC" with Revoke and Extend; once over, how it ended."""
    if view.state is RequestState.ACTIVE and view.expires_at is not None:
        text = f"You have {_what(view)} until *{until(view.expires_at, view.granted_at)}*."
        if view.standing_access:
            text += "\nYou already had this access before Keycard; it stays when this ends."
        return [
            _section(text),
            *_not_granted(view),
            _context(f"`{view.id}`"),
            *_access_controls(view, flow),
        ]
    ended = view.ended_at or view.expires_at
    when = f" at {until(ended, view.granted_at)}" if ended else ""
    outcome = f" ({escape(view.end_reason)})" if view.end_reason else ""
    return [
        _section(f"Your access to {_what(view)} ended{when}{outcome}."),
        _context(f"`{view.id}`"),
    ]


def expiring_message(view: RequestView, flow: Any | None) -> list[dict[str, Any]]:
    """The warning shortly before access ends, with Extend where the flow allows it."""
    if view.state is not RequestState.ACTIVE or view.expires_at is None:
        return grant_message(view, flow)
    blocks = [
        _section(
            f":alarm_clock: Your access to {_what(view)} ends at "
            f"*{until(view.expires_at, view.granted_at)}*."
        ),
        _context(f"`{view.id}`"),
    ]
    return blocks + _access_controls(view, flow)


def ended_note(view: RequestView) -> str:
    outcome = f" ({escape(view.end_reason)})" if view.end_reason else ""
    return f"Your access to {_what(view)} has ended{outcome}. `{view.id}`"


def failed_note(view: RequestView) -> str:
    return (
        f":warning: Your request for {_what(view)} could not go ahead: "
        f"{escape(view.end_reason or 'unknown error')}"
    )


# --- the timeline, in the approval message's thread ----------------------------------------------


def timeline_line(event: LifecycleEvent, view: RequestView) -> str | None:
    """One line per step after the decision; None for events that are not part of it."""
    line = _timeline_text(event, view)
    if line and view.targets and event.type in PER_TARGET_EVENTS:
        return f"*{escape(event.target.label)}*: {line}"  # one target of several
    return line


def _timeline_text(event: LifecycleEvent, view: RequestView) -> str | None:
    match event.type:
        case "access.granted":
            assert view.expires_at is not None
            line = f":key: Access granted until {until(view.expires_at, view.granted_at)}"
            if view.standing_access:
                line += " (the access existed before Keycard and will stay)"
            return line
        case "access.extended":
            assert view.expires_at is not None
            by = format_duration(view.extensions[-1].duration) if view.extensions else "more time"
            return (
                f":stopwatch: Extended by {by} "
                f"by {mention(event.actor)}{_comment(event)}; "
                f"now until {until(view.expires_at, view.granted_at)}"
            )
        case "access.revoked":
            return f":lock: Access revoked by {mention(event.actor)}{_comment(event)}"
        case "access.ended":
            return ":lock: Access ended: the time was up"
        case "access.grant_failed" if view.targets:
            error = event.detail.get("error") or "unknown error"
            return f":warning: Not granted: {escape(error)}"
        case "access.grant_failed":
            return f":warning: Granting failed: {escape(view.end_reason or 'unknown error')}"
        case "access.sessions_ended":
            return ":scissors: AWS sessions opened under this access are cut too"
        case "access.sessions_not_ended":
            error = event.detail.get("error") or "unknown error"
            return (
                f":rotating_light: The access is gone, but sessions opened under it could not be "
                f"cut ({escape(error)}); they last until the permission set's session duration"
            )
        case "access.activity":
            summary = event.detail.get("summary") or "read"
            return f":mag: What was done with it, from CloudTrail: {escape(str(summary))}"
        case "break_glass.reviewed":
            finding = event.detail.get("finding") or "justified"
            icon = ":white_check_mark:" if finding == "justified" else ":x:"
            return (
                f"{icon} Break-glass reviewed by {mention(event.actor)}: {finding}{_comment(event)}"
            )
        case "break_glass.review_overdue":
            reason = event.detail.get("reason") or "the review window closed"
            return f":rotating_light: Break-glass use not reviewed: {escape(str(reason))}"
        case "access.revoke_retrying":
            error = event.detail.get("error") or "unknown error"
            return (
                f":rotating_light: Removing the access keeps failing ({escape(error)}); "
                "Keycard keeps retrying until it is gone"
            )
    return None


# --- /access list ------------------------------------------------------------------------------


def request_list(
    views: Sequence[RequestView], now: datetime, unread: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The person's pending and active requests, newest first."""
    late = [_context("Could not be read just now: " + ", ".join(f"`{i}`" for i in unread))]
    if not views:
        return [_section("You have no pending or active requests."), *(late if unread else [])]
    blocks: list[dict[str, Any]] = [_section("*Your pending and active requests*")]
    for view in views:
        if view.state is RequestState.ACTIVE and view.expires_at is not None:
            status = f"active until {until(view.expires_at, now)}"
        elif view.state is RequestState.PENDING:
            status = f"pending, {_approvals(view)}"
        else:
            status = view.state.value.lower()
        blocks.append(
            _section(
                f"{_what(view)} · {format_duration(view.duration)} · {status}\n"
                f"`{view.id}` · {escape(view.reason) or '(no reason)'}"
            )
        )
    return blocks + (late if unread else [])
