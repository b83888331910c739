"""The API server carries the Slack endpoint exactly when Slack is configured."""

from __future__ import annotations

import httpx

from keycard.config import parse_config
from starter.client import KeycardClient
from starter.run.http import create_app
from starter.slack.app import slack_serving
from tests.harness import CONFIG
from tests.slack_fake import SIGNING_SECRET, signed_headers


async def post_slack_event(app) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keycard") as http:
        return await http.post(
            "/slack/events",
            content=b"command=%2Faccess&user_id=U1",
            headers={
                "content-type": "application/x-www-form-urlencoded",
                "x-slack-request-timestamp": "1",
                "x-slack-signature": "v0=forged",
            },
        )


async def test_slack_endpoint_is_mounted_and_verifies_signatures(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "shh")
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    keycard = KeycardClient(None, parse_config(CONFIG))  # type: ignore[arg-type]
    app = create_app(keycard)
    async with slack_serving(app, keycard) as slack:
        assert slack is not None
        response = await post_slack_event(app)
    assert response.status_code == 401  # there, and a forged signature is refused


async def test_without_slack_settings_there_is_no_slack_endpoint(monkeypatch):
    for name in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "SLACK_APP_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    keycard = KeycardClient(None, parse_config(CONFIG))  # type: ignore[arg-type]
    app = create_app(keycard)
    async with slack_serving(app, keycard) as slack:
        assert slack is None
        response = await post_slack_event(app)
    assert response.status_code == 404


async def test_a_signed_interaction_whose_payload_is_not_json_is_a_bad_request(monkeypatch):
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-test")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", SIGNING_SECRET)
    monkeypatch.delenv("SLACK_APP_TOKEN", raising=False)
    keycard = KeycardClient(None, parse_config(CONFIG))  # type: ignore[arg-type]
    app = create_app(keycard)
    answers = []
    async with slack_serving(app, keycard):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keycard") as http:
            for body in ("payload=not-json", "payload=%7B%22type%22%3A", "payload=%5B1%2C2%5D"):
                answers.append(
                    await http.post("/slack/events", content=body, headers=signed_headers(body))
                )
    for answer in answers:
        assert answer.status_code == 400, answer.text
        assert "payload" in answer.text
