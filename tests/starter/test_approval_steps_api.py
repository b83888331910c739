"""Approval steps through the HTTP API and the console: each step and who can still approve are in
the request, an approval that fills no open step is a 409 saying what is still needed, and the
flow list names the steps."""

from __future__ import annotations

from datetime import timedelta

import httpx

from keycard.config import ApiSettings, parse_config
from starter.api.app import ApiOptions
from starter.api.auth import config_entry
from starter.run.http import create_app
from tests.harness import running_stack
from tests.starter.conftest import IDENTITIES, TOKENS, auth
from tests.starter.test_console import sign_in

CONFIG = """
approver_groups:
  sre-leads: [bob@example.com, dave@example.com]
flows:
  - name: admin
    strategy: aws_sso
    targets: [{name: prod, account_id: "111111111111", permission_set: AdministratorAccess}]
    durations: [1h]
    reason_required: false
    requesters: {users: [alice@example.com]}  # carol alone is security: she may not ask
    approval_steps:
      - {name: sre, approvers: {groups: [sre-leads]}}
      - {name: security, approvers: {users: [carol@example.com]}}
"""


def config():
    entries = [
        config_entry(TOKENS[who], email, role, name=f"test {who}")
        for who, (email, role) in IDENTITIES.items()
    ]
    return parse_config(CONFIG).model_copy(update={"api": ApiSettings(tokens=entries)})


async def test_steps_over_the_api_and_in_the_console(dev_env):
    async with running_stack(dev_env.client, config=config()) as stack:
        app = create_app(stack.keycard, options=ApiOptions(wait_timeout=timedelta(seconds=30)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http:
            flows = (await http.get("/v1/flows", headers=auth("alice"))).json()["flows"]
            assert [
                (s["name"], s["count"], s["approvers"]) for s in flows[0]["approval_steps"]
            ] == [
                ("sre", 1, ["bob@example.com", "dave@example.com"]),
                ("security", 1, ["carol@example.com"]),
            ]
            assert flows[0]["approvals_required"] == 2

            made = await http.post(
                "/v1/requests", json={"flow": "admin", "target": "prod"}, headers=auth("alice")
            )
            assert made.status_code == 201, made.text
            request_id = made.json()["id"]

            def decide(who: str):
                return http.post(f"/v1/requests/{request_id}/approve", headers=auth(who))

            bob = await decide("bob")
            assert bob.status_code == 200, bob.text
            assert bob.json()["state"] == "PENDING"
            assert [s["approved_by"] for s in bob.json()["approval_steps"]] == [
                ["bob@example.com"],
                [],
            ]

            dave = await decide("dave")  # the other SRE lead: sre is met already
            assert dave.status_code == 409, dave.text
            assert dave.json()["code"] == "StepAlreadyMet"
            assert dave.json()["detail"] == (
                "dave@example.com approves in step sre, which is met already (one person counts "
                "in one step at most); still needed: step security: 1 more, from carol@example.com"
            )

            await sign_in(http, "alice")
            page = await http.get(f"/requests/{request_id}")
            assert page.status_code == 200
            assert "<dt>Step sre</dt><dd>met: bob@example.com</dd>" in page.text
            assert "<dt>Step security</dt><dd>0 of 1; can approve: carol@example.com</dd>" in (
                page.text
            )

            carol = await decide("carol")
            assert carol.status_code == 200, carol.text
            assert carol.json()["state"] in ("GRANTING", "ACTIVE")
            revoked = await http.post(f"/v1/requests/{request_id}/revoke", headers=auth("bob"))
            assert revoked.status_code == 200, revoked.text
