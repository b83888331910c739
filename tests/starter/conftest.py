"""The HTTP API on the real workflows: an app per test, called in-process through httpx."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI

from keycard.config import ApiSettings, parse_config
from keycard.models import Role
from starter.api.app import ApiOptions
from starter.api.auth import config_entry, new_token
from starter.run.http import create_app
from tests.harness import CONFIG, Stack, running_stack

# A third flow only carol may request (to show /v1/flows filtering), with break-glass.
API_CONFIG = (
    CONFIG
    + """
  - name: restricted
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: ReadOnlyAccess}
    durations: [1h]
    reason_required: false
    requesters: {users: [carol@example.com]}
    approvers: {users: [bob@example.com]}
    break_glass: true
"""
)

IDENTITIES = {
    "alice": ("alice@example.com", Role.USER),
    "bob": ("bob@example.com", Role.USER),
    "carol": ("carol@example.com", Role.USER),
    "dave": ("dave@example.com", Role.USER),
    "admin": ("erin@example.com", Role.ADMIN),
    "ci": ("ci@example.com", Role.SERVICE),
}
TOKENS = {who: new_token() for who in IDENTITIES}


def api_config(account_id: str = "111111111111"):
    """The test flows with every test token. A grant is one workflow per (target, person) on the
    shared dev server, so tests that grant use an account of their own."""
    entries = [
        config_entry(TOKENS[who], email, role, name=f"test {who}")
        for who, (email, role) in IDENTITIES.items()
    ]
    config = parse_config(API_CONFIG.replace("111111111111", account_id))
    return config.model_copy(update={"api": ApiSettings(tokens=entries)})


def new_account_id() -> str:
    return str(secrets.randbelow(10**12)).zfill(12)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


@dataclass
class Api:
    app: FastAPI
    stack: Stack
    http: httpx.AsyncClient
    account_id: str

    def has_access(self, email: str) -> bool:
        return self.stack.cloud.has(email, self.account_id)

    async def create(self, who: str = "alice", **body) -> dict:
        body = {"flow": "prod-power-user", "target": "prod", "reason": "incident 4312", **body}
        response = await self.http.post("/v1/requests", json=body, headers=auth(who))
        assert response.status_code == 201, response.text
        return response.json()

    async def decide(self, request_id: str, verb: str, who: str, **body) -> httpx.Response:
        return await self.http.post(
            f"/v1/requests/{request_id}/{verb}", json=body or None, headers=auth(who)
        )

    async def get(self, request_id: str, who: str = "alice") -> dict:
        response = await self.http.get(f"/v1/requests/{request_id}", headers=auth(who))
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture
async def api(dev_env) -> AsyncIterator[Api]:
    account_id = new_account_id()
    async with running_stack(dev_env.client, config=api_config(account_id)) as stack:
        app = create_app(stack.keycard, options=ApiOptions(wait_timeout=timedelta(seconds=30)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http:
            yield Api(app, stack, http, account_id)
