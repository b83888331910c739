"""No configured secret anywhere: a full run's histories, logs, audit lines and messages.

The real worker wiring (build_worker: Slack, audit destinations, AWS through moto) and the real
HTTP API, with every secret Keycard can be given set to a value of its own: the Slack bot token and
signing secret, a PagerDuty key, an audit destination's header, the API's tokens. A request is
asked for with two of those secrets pasted into its reason, approved with a third in the comment,
granted, revoked and ended. Then every workflow history, every log line (ours and Temporal's
core), every audit line and every message sent to Slack is searched for every secret.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
from aiohttp import web

from keycard.config import ApiSettings, parse_config
from keycard.models import RequestState, Role
from keycard.settings import Settings
from starter.api.app import ApiOptions
from starter.api.auth import config_entry, new_token
from starter.client import KeycardClient
from starter.run.demo_aws import seed_demo
from starter.run.http import create_app
from tests import slack_fake
from tests.polling import eventually
from tests.slack_fake import SLACK_USERS, FakeSlack
from worker import build_worker

REGION = "us-east-1"


class Collector:
    """An HTTP audit destination: keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/events", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/events"

    async def _receive(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.text())
        return web.Response(status=204)


async def test_a_full_run_leaves_no_configured_secret_anywhere(
    dev_env, aws, monkeypatch, tmp_path: Path, capfd
):
    alice_token, bob_token = new_token(), new_token()
    found = {
        "slack bot token": "xoxb-" + secrets.token_hex(12),
        "slack signing secret": secrets.token_hex(16),
        "pagerduty key": "u+" + secrets.token_urlsafe(15),
        "audit header": "siem-" + secrets.token_urlsafe(18),
        "alice's api token": alice_token,
        "bob's api token": bob_token,
    }
    slack, collector = FakeSlack(users=list(SLACK_USERS)), Collector()
    await slack.start()
    audit_url = await collector.start()
    monkeypatch.setattr(slack_fake, "BOT_TOKEN", found["slack bot token"])  # what it accepts
    monkeypatch.setenv("SLACK_BOT_TOKEN", found["slack bot token"])
    monkeypatch.setenv("SLACK_SIGNING_SECRET", found["slack signing secret"])
    monkeypatch.setenv("SLACK_API_URL", slack.api_url)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    monkeypatch.setenv("PAGERDUTY_API_KEY", found["pagerduty key"])
    monkeypatch.setenv("KEYCARD_TEST_AUDIT_TOKEN", f"Bearer {found['audit header']}")

    account = f"{uuid.uuid4().int % 10**12:012d}"
    config = parse_config(f"""
flows:
  - name: prod
    strategy: aws_sso
    targets:
      - {{name: prod, account_id: "{account}", permission_set: PowerUserAccess}}
    durations: [1h]
    approvers: {{users: [bob@example.com, carol@example.com]}}
audit:
  destinations:
    - {{type: jsonl, path: "{tmp_path / "audit.jsonl"}"}}
    - type: http
      name: siem
      url: {audit_url}
      headers: {{Authorization: "${{KEYCARD_TEST_AUDIT_TOKEN}}"}}
""")
    config = config.model_copy(
        update={
            "api": ApiSettings(
                tokens=[
                    config_entry(alice_token, "alice@example.com", Role.USER),
                    config_entry(bob_token, "bob@example.com", Role.USER),
                ]
            )
        }
    )
    seed_demo(config, aws, REGION)
    settings = Settings(task_queue=f"secrets-{uuid.uuid4()}", audit_stdout=False)
    keycard = KeycardClient(dev_env.client, config, settings.task_queue)
    app = create_app(keycard, options=ApiOptions(wait_timeout=timedelta(seconds=30)))
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            build_worker(dev_env.client, config, settings),
            httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http,
        ):
            as_alice = {"Authorization": f"Bearer {alice_token}"}
            as_bob = {"Authorization": f"Bearer {bob_token}"}
            reason = f"pasted by mistake: {found['slack bot token']} and {alice_token}"
            created = await http.post(
                "/v1/requests",
                json={"flow": "prod", "target": "prod", "reason": reason},
                headers=as_alice,
            )
            assert created.status_code == 201, created.text
            request_id = created.json()["id"]
            approved = await http.post(
                f"/v1/requests/{request_id}/approve",
                json={"comment": f"ok, my token is {bob_token}"},
                headers=as_bob,
            )
            assert approved.status_code == 200, approved.text
            active = await http.get(f"/v1/requests/{request_id}?wait=active", headers=as_alice)
            assert active.json()["state"] == RequestState.ACTIVE, active.text
            revoked = await http.post(f"/v1/requests/{request_id}/revoke", headers=as_alice)
            assert revoked.status_code == 200, revoked.text
            handle = dev_env.client.get_workflow_handle(request_id)
            try:
                async with asyncio.timeout(60):
                    await handle.result()
            except TimeoutError:
                described = await handle.describe()
                pending = described.raw_description.pending_activities
                raise AssertionError(f"the request did not end: {pending}") from None

            async def delivered() -> bool:  # the siem's last batch, sent before the close
                return any("access.revoked" in body for body in collector.bodies)

            await eventually(delivered)
            grant_ids = [
                e.id
                async for e in dev_env.client.list_workflows(
                    f"WorkflowId STARTS_WITH 'grant:aws_sso:{account}:'"
                )
            ]
            histories = [
                (await dev_env.client.get_workflow_handle(i).fetch_history()).to_json()
                for i in [request_id, *grant_ids]
            ]
    finally:
        await slack.stop()
        await collector._runner.cleanup()

    assert len(histories) == 2  # the request and its grant
    slack_sent = [json.dumps(call.args) for call in slack.calls]
    assert slack_sent, "Slack was told nothing: the run did not exercise it"
    output = capfd.readouterr()
    places = {
        "temporal history": "\n".join(histories),
        "logs": output.out + output.err,
        "audit file": (tmp_path / "audit.jsonl").read_text(encoding="utf-8"),
        "audit destination": "\n".join(collector.bodies),
        "slack messages": "\n".join(slack_sent),
    }
    assert "[redacted]" in places["audit file"]  # the pasted secrets were there to be found
    leaks = [
        f"{secret} in {place}"
        for secret, value in found.items()
        for place, text in places.items()
        if value in text
    ]
    assert leaks == []
