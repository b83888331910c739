"""The console's single sign-on against a local OpenID Connect provider (tests/fake_idp.py):
signing in and out, admins named in keycard.yaml, and every way a sign-in can be forged or stale
refused with a sentence."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest
from itsdangerous import TimestampSigner

from keycard.config import ApiSettings
from starter.run.http import create_app
from starter.sso import SsoSettings, SsoSettingsError
from starter.web import ConsoleOptions
from tests.fake_idp import CLIENT_ID, CLIENT_SECRET, FakeIdp
from tests.starter.conftest import Api
from tests.starter.test_console import browser, csrf, said

SECRET = "a-test-session-key-of-plenty-of-characters"


@pytest.fixture
async def idp() -> AsyncIterator[FakeIdp]:
    provider = FakeIdp()
    await provider.start()
    yield provider
    await provider.stop()


@pytest.fixture
def sso_app(api: Api, idp: FakeIdp, monkeypatch):
    monkeypatch.setenv("KEYCARD_CONSOLE_SECRET", SECRET)
    config = api.stack.keycard.config
    admins = config.model_copy(
        update={"api": ApiSettings(tokens=config.api.tokens, admins=["erin@example.com"])}
    )
    sso = SsoSettings(issuer=idp.url, client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    api.stack.keycard.config = admins
    yield create_app(api.stack.keycard, admins, console=ConsoleOptions(sso=sso))
    api.stack.keycard.config = config


async def through_the_provider(http: httpx.AsyncClient) -> httpx.Response:
    """Click "Sign in with single sign-on", let the provider sign the person in, and come back."""
    start = await http.get("/signin/sso")
    assert start.status_code == 302, start.text[:300]
    async with httpx.AsyncClient() as browser_to_idp:
        back = await browser_to_idp.get(start.headers["location"])
    assert back.status_code == 302, back.text
    callback = urlsplit(back.headers["location"])
    return await http.get(f"{callback.path}?{callback.query}")


async def test_signing_in_and_out_with_single_sign_on(api: Api, idp: FakeIdp, sso_app):
    async with browser(api, sso_app) as http:
        page = await http.get("/signin")
        assert "Sign in with single sign-on" in page.text

        signed_in = await through_the_provider(http)
        assert signed_in.status_code == 303, said(signed_in) or signed_in.text[:300]
        home = await http.get("/")
        assert home.status_code == 200 and "alice@example.com" in home.text
        assert "Access now" not in home.text  # alice is no admin

        out = await http.post("/signout", data={"csrf": csrf(home)})
        assert out.headers["location"] == "/signin"
        assert (await http.get("/")).headers["location"] == "/signin"


async def test_the_admins_keycard_yaml_names_are_admins(api: Api, idp: FakeIdp, sso_app):
    idp.user = "erin@example.com"
    async with browser(api, sso_app) as http:
        await through_the_provider(http)
        assert (await http.get("/access")).status_code == 200


@pytest.mark.parametrize(
    ("knob", "status", "words"),
    [
        ({"email_verified": False}, 403, "verified email address"),
        ({"token_lifetime": -600}, 401, "did not complete"),  # past the 2 min clock leeway
        ({"foreign_key": True}, 401, "did not complete"),
    ],
    ids=["unverified email", "expired ID token", "ID token signed by someone else"],
)
async def test_a_sign_in_the_provider_did_not_vouch_for_is_refused(
    api: Api, idp: FakeIdp, sso_app, knob: dict, status: int, words: str
):
    for name, value in knob.items():
        setattr(idp, name, value)
    async with browser(api, sso_app) as http:
        answer = await through_the_provider(http)
        assert answer.status_code == status and words in said(answer)
        assert (await http.get("/")).headers["location"] == "/signin"


async def test_a_forged_or_replayed_callback_is_refused(api: Api, idp: FakeIdp, sso_app):
    async with browser(api, sso_app) as http:
        forged = await http.get("/signin/sso/callback?code=made-up&state=made-up")
        assert forged.status_code == 401 and "did not complete" in said(forged)

        start = await http.get("/signin/sso")
        async with httpx.AsyncClient() as to_idp:
            back = urlsplit((await to_idp.get(start.headers["location"])).headers["location"])
        assert (await http.get(f"{back.path}?{back.query}")).status_code == 303
        await http.post("/signout", data={"csrf": csrf(await http.get("/"))})
        replayed = await http.get(f"{back.path}?{back.query}")  # the same code and state again
        assert replayed.status_code == 401
        assert (await http.get("/")).headers["location"] == "/signin"


async def test_an_expired_session_is_signed_out(api: Api, idp: FakeIdp, sso_app, monkeypatch):
    """A session cookie past its 8 hours, correctly signed, counts for nothing."""
    session = base64.b64encode(json.dumps({"sso_email": "alice@example.com"}).encode())
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: int(time.time()) - 9 * 3600)
    stale = TimestampSigner(SECRET).sign(session).decode()
    monkeypatch.undo()
    monkeypatch.setenv("KEYCARD_CONSOLE_SECRET", SECRET)
    fresh = TimestampSigner(SECRET).sign(session).decode()
    async with browser(api, sso_app) as http:
        http.cookies.set("keycard_session", stale)
        assert (await http.get("/")).headers.get("location") == "/signin"
        http.cookies.set("keycard_session", fresh)  # the same, signed now: it works
        assert (await http.get("/")).status_code == 200


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"KEYCARD_OIDC_ISSUER": "https://login.example.com"}, "KEYCARD_OIDC_CLIENT_ID is not set"),
        ({"KEYCARD_OIDC_CLIENT_ID": "x"}, "KEYCARD_OIDC_ISSUER is not set"),
        (
            {"KEYCARD_OIDC_ISSUER": "http://login.example.com", "KEYCARD_OIDC_CLIENT_ID": "x"},
            "must be an https:// URL",
        ),
        (
            {"KEYCARD_OIDC_ISSUER": "https://l.example.com", "KEYCARD_OIDC_CLIENT_ID": "x",
             "KEYCARD_OIDC_SCOPES": "email"},
            "must include openid",
        ),
        ({"KEYCARD_PUBLIC_URL": "http://keycard.example.com"}, "must be an https:// URL"),
    ],
    ids=["no client id", "no issuer", "http issuer", "no openid scope", "http public url"],
)  # fmt: skip
def test_incomplete_or_unsafe_settings_are_refused_with_what_to_fix(env: dict, words: str):
    with pytest.raises(SsoSettingsError, match=words):
        ConsoleOptions.from_env(env)


def test_a_public_https_address_makes_the_cookie_secure():
    options = ConsoleOptions.from_env({"KEYCARD_PUBLIC_URL": "https://keycard.example.com/"})
    assert options.public_url == "https://keycard.example.com" and options.https_only
    assert not ConsoleOptions.from_env({}).https_only
