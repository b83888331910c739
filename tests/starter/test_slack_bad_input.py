"""Hostile and malformed calls to the Slack endpoint: each is refused with a sentence (an HTTP
problem for what never came from Slack, an ephemeral message for a click that cannot be done),
never a 5xx or a traceback, and changes nothing: no request, no decision, no message posted."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

import pytest

from keycard import slack_blocks as ids
from keycard.models import RequestState
from tests.harness import ALICE, unique_id
from tests.slack_fake import (
    SIGNING_SECRET,
    SlackStack,
    block_action,
    command_body,
    interaction_body,
    signed_headers,
    slack_stack,
)

GRANT_ID = "grant:aws_sso:111111111111:ps-PowerUserAccess:u-alice"


@dataclass(frozen=True)
class Call:
    """A call to /slack/events: its body, and how its headers differ from a correctly signed one."""

    name: str
    body: str | Callable[[str], str]  # given the pending request's id
    status: int
    says: str  # in the problem's detail, or in the ephemeral message for a 200
    headers: Callable[[str], dict[str, str]] = field(default=lambda body: signed_headers(body))


def _click(user: str, action_id: str, value: str) -> str:
    action = {"type": "button", "action_id": action_id, "block_id": "decide:x", "value": value}
    return interaction_body(block_action(user, None, action))


def _extend(user: str, value: str) -> Callable[[str], str]:
    def body(request_id: str) -> str:
        option = {"value": value.format(id=request_id), "text": {"type": "plain_text", "text": "x"}}
        action = {"type": "static_select", "action_id": ids.EXTEND, "block_id": "extend:x"}
        return interaction_body(block_action(user, None, {**action, "selected_option": option}))

    return body


def _payload(text: str) -> str:
    return "payload=" + quote(text)


def _now() -> int:  # at the call: a suite runs for minutes after this module is collected
    return int(time.time())


CALLS = [
    # Never from Slack: refused before anything reads the body.
    Call("unsigned", command_body("UALICE"), 401, "not a Unix time", lambda body: {
        "Content-Type": "application/x-www-form-urlencoded"}),
    Call("a forged signature", command_body("UALICE"), 401, "invalid request", lambda body: {
        **signed_headers(body), "X-Slack-Signature": "v0=" + "0" * 64}),
    Call("signed with another secret", command_body("UALICE"), 401, "invalid request",
         lambda body: signed_headers(body, secret=SIGNING_SECRET + "x")),
    Call("signed ten minutes ago", command_body("UALICE"), 401, "invalid request",
         lambda body: signed_headers(body, timestamp=_now() - 600)),
    Call("signed ten minutes ahead", command_body("UALICE"), 401, "invalid request",
         lambda body: signed_headers(body, timestamp=_now() + 600)),
    Call("a timestamp that is not a number", command_body("UALICE"), 401, "not a Unix time",
         lambda body: {**signed_headers(body), "X-Slack-Request-Timestamp": "yesterday"}),
    Call("no timestamp", command_body("UALICE"), 401, "not a Unix time",
         lambda body: {k: v for k, v in signed_headers(body).items() if "Timestamp" not in k}),
    # Signed, but not what Slack sends.
    Call("a payload that is not JSON", "payload=not-json", 400, "not a JSON object"),
    Call("a payload cut short", _payload('{"type": "block_actions"'), 400, "not a JSON object"),
    Call("a payload that is a list", _payload("[1, 2]"), 400, "not a JSON object"),
    Call("a payload that is a string", _payload('"approve"'), 400, "not a JSON object"),
    Call("a payload that is not UTF-8", "payload=%FF%FE", 400, "not a JSON object"),
    # From Slack, but nothing can be done: the person is told why, in Slack.
    Call("/access with a word it does not know", command_body("UALICE", "frobnicate"), 200,
         "opens the request form"),
    Call("approve on a grant workflow's id", _click("UBOB", "keycard.approve", GRANT_ID), 200,
         "no request"),
    Call("deny on a request that does not exist", _click("UBOB", "keycard.deny", "req-nope"),
         200, "no request"),
    Call("approve on an id of 5000 characters", _click("UBOB", "keycard.approve", "r" * 5000),
         200, "no request"),
    Call("approve by someone Slack does not know", lambda rid: _click(
        "UNOBODY", "keycard.approve", rid), 200, "could not look up your Slack profile"),
    Call("an extension that overflows", _extend("UALICE", "{id} 999999999999h"), 200, "366d"),
    Call("an extension in words", _extend("UALICE", "{id} forever"), 200, "such as 30m"),
    Call("an extension with no duration", _extend("UALICE", "{id}"), 200, "such as 30m"),
]  # fmt: skip


@pytest.fixture(scope="module")
async def slack(dev_env):
    async with slack_stack(dev_env.client) as s:
        view = await s.keycard.request(
            flow="prod-power-user", target="prod", reason="incident 4312", requester=ALICE,
            request_id=unique_id(), duration="1h", fields={"incident": "4312"},
        )  # fmt: skip
        yield s, view.id


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
async def test_a_bad_slack_call_is_refused_with_a_sentence_and_changes_nothing(slack, call: Call):
    s, request_id = slack
    s: SlackStack
    before = await s.keycard.get(request_id)
    posted, views = len(s.slack.calls), len(s.slack.views)
    body = call.body(request_id) if callable(call.body) else call.body

    answer = await s.http.post("/slack/events", content=body, headers=call.headers(body))

    assert answer.status_code == call.status, answer.text[:300]
    assert "Traceback" not in answer.text
    if call.status != 200 or answer.content not in (b"", b"{}"):
        said = answer.text  # a problem, or the slash command's own answer
        assert _whispers(s, posted) is None and len(s.slack.views) == views
    else:
        whispers = await s.slack.wait_for(lambda: _whispers(s, posted))
        said = " ".join(w.args.get("text", "") for w in whispers)
        assert "try again" not in said
    assert call.says in " ".join(said.split()), said[:300]
    after = await s.keycard.get(request_id)
    assert after.state is RequestState.PENDING
    assert (after.approvals, after.extensions) == (before.approvals, before.extensions)
    assert json.dumps(after.model_dump(mode="json")) == json.dumps(before.model_dump(mode="json"))


def _whispers(s: SlackStack, since: int):
    found = [c for c in s.slack.calls[since:] if c.method == "chat.postEphemeral"]
    return found or None
