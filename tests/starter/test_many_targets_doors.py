"""One request, many targets, through the HTTP API, the CLI (over the API) and the web console:
each door takes several targets, and each shows every target with its own state."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx

from keycard.config import ApiSettings, parse_config
from starter.api.app import ApiOptions
from starter.api.auth import config_entry
from starter.run.http import create_app
from starter.run.serve import running_api
from tests.harness import running_stack
from tests.polling import eventually
from tests.starter.conftest import IDENTITIES, TOKENS, auth, new_account_id
from tests.starter.test_cli_api import (
    keycard,
    request_id,
    server_logs,  # noqa: F401 (autouse: logs out of stdout)
)
from tests.starter.test_console import post, said, sign_in

FLOW = """
flows:
  - name: fleet
    label: Fleet PowerUser
    strategy: aws_sso
    targets:
      - {name: eu, label: EU, account_id: "EU_ACCOUNT", permission_set: PowerUserAccess}
      - {name: us, label: US, account_id: "US_ACCOUNT", permission_set: PowerUserAccess}
      - {name: ap, label: AP, account_id: "AP_ACCOUNT", permission_set: PowerUserAccess}
    durations: [1h]
    reason_required: false
    approvers: {users: [bob@example.com, carol@example.com]}
"""


@asynccontextmanager
async def fleet(dev_env) -> AsyncIterator[tuple]:
    """The API app over a stack whose three targets are accounts of this test's own (a grant is
    one workflow per target and person on the shared dev server)."""
    accounts = {name: new_account_id() for name in ("EU", "US", "AP")}
    text = FLOW
    for name, account in accounts.items():
        text = text.replace(f"{name}_ACCOUNT", account)
    entries = [
        config_entry(TOKENS[who], email, role, name=f"test {who}")
        for who, (email, role) in IDENTITIES.items()
    ]
    config = parse_config(text).model_copy(update={"api": ApiSettings(tokens=entries)})
    async with running_stack(dev_env.client, config=config) as stack:
        app = create_app(stack.keycard, options=ApiOptions(wait_timeout=timedelta(seconds=30)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http:
            yield app, stack, http, accounts


async def test_several_targets_over_the_api(dev_env):
    async with fleet(dev_env) as (_, stack, http, accounts):
        made = await http.post(
            "/v1/requests", json={"flow": "fleet", "targets": ["eu", "us"]}, headers=auth("alice")
        )
        assert made.status_code == 201, made.text
        body = made.json()
        assert [(t["name"], t["label"], t["state"]) for t in body["targets"]] == [
            ("eu", "EU", "waiting"),
            ("us", "US", "waiting"),
        ]
        approved = await http.post(f"/v1/requests/{body['id']}/approve", headers=auth("bob"))
        assert approved.status_code == 200, approved.text
        active = await http.get(
            f"/v1/requests/{body['id']}", headers=auth("alice"), params={"wait": "active"}
        )
        assert active.json()["state"] == "ACTIVE"
        assert [t["state"] for t in active.json()["targets"]] == ["active", "active"]
        assert stack.cloud.has("alice@example.com", accounts["EU"])
        assert stack.cloud.has("alice@example.com", accounts["US"])
        assert not stack.cloud.has("alice@example.com", accounts["AP"])

        unknown = await http.post(
            "/v1/requests", json={"flow": "fleet", "targets": ["eu", "mars"]}, headers=auth("alice")
        )
        assert unknown.status_code == 422
        assert unknown.json()["detail"] == ("flow fleet has no target 'mars'; targets: eu, us, ap")
        schema = (await http.get("/openapi.json")).json()
        assert "targets" in schema["components"]["schemas"]["NewRequest"]["properties"]

        revoked = await http.post(f"/v1/requests/{body['id']}/revoke", headers=auth("bob"))
        assert revoked.status_code == 200, revoked.text

        async def gone():
            view = (await http.get(f"/v1/requests/{body['id']}", headers=auth("alice"))).json()
            return view if view["state"] == "ENDED" else None

        ended = await eventually(gone, timeout=30)
        assert [(t["state"], t["removed"]) for t in ended["targets"]] == [("ended", True)] * 2
        assert not stack.cloud.has("alice@example.com", accounts["EU"])


async def test_several_targets_from_the_cli(dev_env):
    async with fleet(dev_env) as (app, _, _http, _accounts), running_api(app) as server:
        asked = await keycard(
            server.url, "alice", "request", "fleet", "-t", "eu,us", "--target", "ap",
        )  # fmt: skip
        assert asked.exit_code == 0, asked.output
        rid = request_id(asked.stdout)
        assert "alice@example.com → Fleet PowerUser (EU, US, AP), 1h" in asked.stdout
        for line in (
            "target eu (EU): waiting",
            "target us (US): waiting",
            "target ap (AP): waiting",
        ):
            assert f"  {line}\n" in asked.stdout
        shown = await keycard(server.url, "alice", "status", rid, "-o", "json")
        assert [t["name"] for t in json.loads(shown.stdout)["targets"]] == ["eu", "us", "ap"]
        cancelled = await keycard(server.url, "alice", "cancel", rid)
        assert cancelled.exit_code == 0, cancelled.output


async def test_several_targets_from_the_console(dev_env):
    async with fleet(dev_env) as (app, _, http, _accounts):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as alice:
            await sign_in(alice, "alice")
            form = await alice.get("/new")
            assert '<select id="fleet-target" name="target" multiple size="3" required>' in (
                form.text
            )
            token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
            answer = await alice.post(
                "/new",
                content=f"csrf={token}&flow=fleet&target=eu&target=ap&duration=1h&reason=",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert answer.status_code == 303, said(answer) or answer.text[:300]
            rid = answer.headers["location"].removeprefix("/requests/")
            page = await alice.get(f"/requests/{rid}")
            assert "<h1>Fleet PowerUser on EU, AP " in page.text
            assert '<dt>Target EU</dt><dd><span class="state waiting">waiting</span></dd>' in (
                page.text
            )
            assert '<dt>Target AP</dt><dd><span class="state waiting">waiting</span></dd>' in (
                page.text
            )
            refused = await post(
                alice, "/new", "/new", flow="fleet", target="mars", duration="1h", reason=""
            )
            assert refused.status_code == 422
            assert said(refused) == "flow fleet has no target 'mars'; targets: eu, us, ap"
            await http.post(f"/v1/requests/{rid}/cancel", headers=auth("alice"))
