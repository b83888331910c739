"""A flow's `reason:` rules (min_length, pattern, ticket) through the front doors: the API refuses
a reason that misses one and says which, the ticket is found and linked on the request (view,
audit, CLI, Slack, console), and the Slack form puts the refusal next to the reason."""

from __future__ import annotations

from datetime import timedelta

import httpx

from keycard import slack_blocks as blocks
from keycard.config import ApiSettings, parse_config
from keycard.models import RequestView
from starter.api.app import ApiOptions
from starter.api.auth import config_entry
from starter.cli.terminal import describe
from starter.run.http import create_app
from tests.harness import running_stack
from tests.polling import eventually
from tests.starter.conftest import IDENTITIES, TOKENS, auth
from tests.starter.test_console import sign_in

CONFIG = """
flows:
  - name: prod
    strategy: aws_sso
    targets: [{name: prod, account_id: "111111111111", permission_set: PowerUserAccess}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
    reason:
      min_length: 12
      hint: "name the Jira ticket, e.g. OPS-4312: restart billing"
      ticket:
        pattern: '[A-Z][A-Z0-9]+-[0-9]+'
        url: https://example.atlassian.net/browse/{ticket}
"""


def config():
    entries = [
        config_entry(TOKENS[who], email, role, name=f"test {who}")
        for who, (email, role) in IDENTITIES.items()
    ]
    return parse_config(CONFIG).model_copy(update={"api": ApiSettings(tokens=entries)})


async def test_the_api_refuses_a_reason_the_flow_does_not_accept_and_links_its_ticket(dev_env):
    async with running_stack(dev_env.client, config=config()) as stack:
        app = create_app(stack.keycard, options=ApiOptions(wait_timeout=timedelta(seconds=30)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http:

            async def ask(reason: str) -> httpx.Response:
                body = {"flow": "prod", "target": "prod", "reason": reason}
                return await http.post("/v1/requests", json=body, headers=auth("alice"))

            short = await ask("OPS-1 fix")
            assert short.status_code == 422
            assert short.json()["code"] == "ReasonTooShort"
            assert short.json()["detail"] == (
                "flow prod needs a reason of at least 12 characters; this one has 9 "
                "(name the Jira ticket, e.g. OPS-4312: restart billing)"
            )
            untracked = await ask("restart the billing job")
            assert untracked.status_code == 422
            assert untracked.json()["code"] == "TicketRequired"

            flows = (await http.get("/v1/flows", headers=auth("alice"))).json()["flows"]
            assert flows[0]["reason"]["ticket"]["pattern"] == "[A-Z][A-Z0-9]+-[0-9]+"
            assert flows[0]["reason"]["min_length"] == 12

            made = await ask("OPS-4312: restart billing")
            assert made.status_code == 201, made.text
            ticket = made.json()["ticket"]
            assert ticket == {
                "key": "OPS-4312",
                "url": "https://example.atlassian.net/browse/OPS-4312",
            }
            request_id = made.json()["id"]

            async def created():
                return stack.audit.of(request_id, "request.created")

            event = (await eventually(created))[0]
            assert event.detail["ticket"] == ticket

            view = RequestView.model_validate(made.json())
            assert "  ticket:    OPS-4312 https://example.atlassian.net/browse/OPS-4312" in (
                describe(view)
            )
            message = str(blocks.approval_message(view))
            assert "*Ticket:* <https://example.atlassian.net/browse/OPS-4312|OPS-4312>" in message

            await sign_in(http, "alice")  # the console's page of the request
            page = await http.get(f"/requests/{request_id}")
            assert page.status_code == 200, page.text[:300]
            assert 'href="https://example.atlassian.net/browse/OPS-4312"' in page.text


def test_the_slack_form_shows_the_hint_and_puts_a_refusal_by_the_reason():
    flow = parse_config(CONFIG).flow("prod")
    modal = blocks.request_modal([flow], flow)
    reason = next(b for b in modal["blocks"] if b.get("block_id") == blocks.REASON_BLOCK)
    assert reason["element"]["placeholder"]["text"] == (
        "name the Jira ticket, e.g. OPS-4312: restart billing"
    )
    assert reason["optional"] is False
