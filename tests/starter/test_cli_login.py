"""`keycard login`: the CLI signs in with single sign-on (the device flow) against a local OpenID
provider, keeps the sign-in to itself, renews it, and the API takes its ID token as the person;
anything else is refused with what to do."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from keycard.config import ApiSettings
from main import app
from starter.run.http import create_app
from starter.run.serve import running_api
from starter.sso import SsoSettings
from starter.web import ConsoleOptions
from tests.fake_idp import CLI_CLIENT_ID, CLIENT_ID, CLIENT_SECRET, FakeIdp
from tests.starter.conftest import Api
from tests.starter.test_cli_api import request_id as request_id_in
from tests.starter.test_console_sso import idp  # noqa: F401 -- the provider fixture

runner = CliRunner()


@pytest.fixture
def sso_api(api: Api, idp: FakeIdp):  # noqa: F811
    config = api.stack.keycard.config
    with_admins = config.model_copy(
        update={"api": ApiSettings(tokens=config.api.tokens, admins=["erin@example.com"])}
    )
    api.stack.keycard.config = with_admins
    sso = SsoSettings(idp.url, CLIENT_ID, CLIENT_SECRET, cli_client_id=CLI_CLIENT_ID)
    yield create_app(api.stack.keycard, with_admins, console=ConsoleOptions(sso=sso))
    api.stack.keycard.config = config


async def keycard(url: str, credentials: Path, *args: str):
    env = {"KEYCARD_API_URL": url, "KEYCARD_TOKEN": "", "KEYCARD_CREDENTIALS": str(credentials)}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


async def test_login_then_use_the_api_as_that_person(sso_api, idp: FakeIdp, tmp_path: Path):  # noqa: F811
    credentials = tmp_path / "credentials.json"
    async with running_api(sso_api) as server:
        signed = await keycard(server.url, credentials, "login", "--no-browser")
        assert signed.exit_code == 0, signed.output
        assert f"Open {idp.url}/activate?user_code=WDJB-MJHT" in signed.stdout
        assert f"Signed in to {server.url} as alice@example.com." in signed.stdout
        assert stat.S_IMODE(credentials.stat().st_mode) == 0o600

        asked = await keycard(
            server.url, credentials, "request", "prod-power-user", "-t", "prod", "-r", "sso",
            "-f", "incident=1",
        )  # fmt: skip
        assert asked.exit_code == 0, asked.output
        request_id = request_id_in(asked.stdout)  # (the in-process server logs to stdout too)
        mine = await keycard(server.url, credentials, "status", request_id)
        assert mine.exit_code == 0 and "alice@example.com → Prod PowerUser" in mine.stdout

        out = await keycard(server.url, credentials, "logout")
        assert out.exit_code == 0 and "Signed out" in out.stdout
        after = await keycard(server.url, credentials, "list")
        assert after.exit_code == 1 and "run `keycard login`" in after.stderr


async def test_an_expired_sign_in_is_renewed_with_the_refresh_token(
    sso_api,
    idp: FakeIdp,  # noqa: F811
    tmp_path: Path,
):
    credentials = tmp_path / "credentials.json"
    async with running_api(sso_api) as server:
        assert (await keycard(server.url, credentials, "login", "--no-browser")).exit_code == 0
        stored = json.loads(credentials.read_text())
        stored[server.url]["expires_at"] = 0  # as if an hour had passed
        old = stored[server.url]["refresh_token"]
        credentials.write_text(json.dumps(stored))

        listed = await keycard(server.url, credentials, "list")
        assert listed.exit_code == 0, listed.output
        renewed = json.loads(credentials.read_text())[server.url]
        assert renewed["refresh_token"] != old and renewed["expires_at"] > 0


async def test_the_api_refuses_tokens_the_provider_did_not_sign_for_it(sso_api, idp: FakeIdp):  # noqa: F811
    idp.foreign_key = True
    async with running_api(sso_api) as server, httpx.AsyncClient() as http:
        # an ID token from the provider's endpoints, signed by a key it does not publish
        device = (await http.post(f"{idp.url}/device", data={"client_id": CLI_CLIENT_ID})).json()
        grant = {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device["device_code"],
            "client_id": CLI_CLIENT_ID,
        }
        await http.post(f"{idp.url}/token", data=grant)  # pending
        forged = (await http.post(f"{idp.url}/token", data=grant)).json()["id_token"]
        answer = await http.get(
            f"{server.url}/v1/requests", headers={"Authorization": f"Bearer {forged}"}
        )
        not_a_jwt = await http.get(
            f"{server.url}/v1/requests", headers={"Authorization": "Bearer a.b.c"}
        )
    assert answer.status_code == 401
    assert "not one the identity provider signed" in answer.json()["detail"]
    assert "run `keycard login` again" in answer.json()["detail"]
    assert not_a_jwt.status_code == 401


async def test_a_declined_sign_in_and_a_keycard_without_sso_say_so(
    api: Api,
    sso_api,
    idp: FakeIdp,  # noqa: F811
    tmp_path: Path,
):
    credentials = tmp_path / "credentials.json"
    idp.device_answer = "decline"
    async with running_api(sso_api) as server:
        declined = await keycard(server.url, credentials, "login", "--no-browser")
    assert declined.exit_code == 1
    assert "the sign-in was declined at the identity provider" in declined.stderr
    assert not credentials.exists()

    async with running_api(create_app(api.stack.keycard)) as plain:
        none = await keycard(plain.url, credentials, "login", "--no-browser")
    assert none.exit_code == 1 and "this Keycard has no single sign-on" in none.stderr
