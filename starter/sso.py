"""Single sign-on for the console: OpenID Connect, authorization code with PKCE (Authlib).

Configured by the environment, like every other secret:

    KEYCARD_OIDC_ISSUER         https://login.example.com (its /.well-known/openid-configuration)
    KEYCARD_OIDC_CLIENT_ID      the console's client id at the identity provider
    KEYCARD_OIDC_CLIENT_SECRET  its secret (omit for a public client: PKCE alone)
    KEYCARD_OIDC_SCOPES         default "openid email profile"
    KEYCARD_OIDC_CLI_CLIENT_ID  the public client `keycard login` uses (the device flow); default
                                the console's client id
    KEYCARD_PUBLIC_URL          the console's address as browsers reach it, for the redirect URI
                                (register {KEYCARD_PUBLIC_URL}/signin/sso/callback at the provider)

The ID token's `email` claim is the person (refused when the provider says `email_verified:
false`); `api.admins` in keycard.yaml names the people who are admins when they sign in this way.
Authlib checks the ID token's signature against the provider's keys, its issuer, audience, expiry
and nonce; the state and PKCE verifier live in the signed session until the callback.

The API accepts, beside Keycard tokens, the ID tokens `keycard login` gets from the same provider
(BearerVerifier): signed by the provider's published keys, issued by the issuer, for the console's
or the CLI's client, unexpired, with a verified email.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

ISSUER_ENV = "KEYCARD_OIDC_ISSUER"
CLIENT_ID_ENV = "KEYCARD_OIDC_CLIENT_ID"
CLIENT_SECRET_ENV = "KEYCARD_OIDC_CLIENT_SECRET"  # noqa: S105 -- the variable's name
SCOPES_ENV = "KEYCARD_OIDC_SCOPES"
CLI_CLIENT_ID_ENV = "KEYCARD_OIDC_CLI_CLIENT_ID"
LEEWAY_SECONDS = 120  # clock skew allowed on exp and iat, as Authlib allows for the console
METADATA_TTL_SECONDS = 3600
PUBLIC_URL_ENV = "KEYCARD_PUBLIC_URL"
CALLBACK_PATH = "/signin/sso/callback"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class SsoSettingsError(ValueError):
    """The OIDC settings are incomplete or unsafe; the message says which and what to do."""


@dataclass(frozen=True)
class SsoSettings:
    issuer: str
    client_id: str
    client_secret: str | None = None
    scopes: str = "openid email profile"
    cli_client_id: str | None = None

    @property
    def audiences(self) -> set[str]:
        """The clients whose ID tokens the API accepts as bearer tokens."""
        return {self.client_id, self.cli_client_id or self.client_id}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SsoSettings | None:
        env = os.environ if environ is None else environ
        issuer = env.get(ISSUER_ENV, "").strip().rstrip("/")
        client_id = env.get(CLIENT_ID_ENV, "").strip()
        if not issuer and not client_id:
            return None
        if not issuer or not client_id:
            missing = ISSUER_ENV if not issuer else CLIENT_ID_ENV
            raise SsoSettingsError(
                f"single sign-on needs {ISSUER_ENV} and {CLIENT_ID_ENV}; {missing} is not set"
            )
        _require_https(ISSUER_ENV, issuer)
        scopes = env.get(SCOPES_ENV, "").strip() or cls.scopes
        if "openid" not in scopes.split():
            raise SsoSettingsError(f"{SCOPES_ENV} must include openid, not {scopes!r}")
        cli = env.get(CLI_CLIENT_ID_ENV, "").strip() or None
        return cls(issuer, client_id, env.get(CLIENT_SECRET_ENV) or None, scopes, cli)

    def client(self) -> StarletteOAuth2App:
        oauth = OAuth()
        return oauth.register(
            name="keycard",
            server_metadata_url=f"{self.issuer}/.well-known/openid-configuration",
            client_id=self.client_id,
            client_secret=self.client_secret,
            client_kwargs={
                "scope": self.scopes,
                "code_challenge_method": "S256",
                # a public client (no secret) authenticates with PKCE alone
                **({} if self.client_secret else {"token_endpoint_auth_method": "none"}),
            },
        )


def public_url(environ: Mapping[str, str] | None = None) -> str | None:
    env = os.environ if environ is None else environ
    url = env.get(PUBLIC_URL_ENV, "").strip().rstrip("/")
    if url:
        _require_https(PUBLIC_URL_ENV, url)
    return url or None


def _require_https(name: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        return
    raise SsoSettingsError(
        f"{name} must be an https:// URL (http:// only on this machine, for testing), not {url!r}"
    )


class BearerRefused(Exception):
    """An SSO bearer token that does not hold; the message says why, for the caller."""


class BearerVerifier:
    """Checks ID tokens from the provider (`keycard login`'s) presented to the API as bearer
    tokens. The provider's metadata and keys are fetched once and kept; an unknown key id fetches
    them again (the provider rotated its keys)."""

    def __init__(self, settings: SsoSettings, transport: httpx.AsyncBaseTransport | None = None):
        self.settings = settings
        self._transport = transport
        self._keys: KeySet | None = None
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def email(self, token: str) -> str:
        try:
            claims = _decode(token, await self._key_set())
        except InvalidKeyIdError:  # signed with a key we have not seen: the provider rotated
            claims = _decode(token, await self._key_set(refresh=True))
        return self._check(claims)

    def _check(self, claims: dict[str, Any]) -> str:
        now = time.time()
        if str(claims.get("iss", "")).rstrip("/") != self.settings.issuer:
            raise BearerRefused("the token comes from another identity provider")
        audience = claims.get("aud")
        audiences = {audience} if isinstance(audience, str) else set(audience or [])
        if not audiences & self.settings.audiences:
            raise BearerRefused("the token was issued to another application")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] < now - LEEWAY_SECONDS:
            raise BearerRefused("the token has expired: run `keycard login` again")
        email = str(claims.get("email") or "").strip().lower()
        if not email or claims.get("email_verified") is False:
            raise BearerRefused("the token carries no verified email address")
        return email

    async def _key_set(self, refresh: bool = False) -> KeySet:
        async with self._lock:
            stale = time.monotonic() - self._fetched > METADATA_TTL_SECONDS
            if self._keys is None or refresh or stale:
                async with httpx.AsyncClient(transport=self._transport, timeout=10) as http:
                    metadata = await _json(
                        http, f"{self.settings.issuer}/.well-known/openid-configuration"
                    )
                    self._keys = KeySet.import_key_set(await _json(http, metadata["jwks_uri"]))
                self._fetched = time.monotonic()
            return self._keys


ALGORITHMS = ["RS256", "ES256", "PS256", "EdDSA"]


def _decode(token: str, keys: KeySet) -> dict[str, Any]:
    try:
        return jwt.decode(token, keys, algorithms=ALGORITHMS).claims
    except InvalidKeyIdError:
        raise
    except (JoseError, ValueError):
        raise BearerRefused("the token is not one the identity provider signed") from None


async def _json(http: httpx.AsyncClient, url: str) -> Any:
    try:
        answer = await http.get(url)
        answer.raise_for_status()
        return answer.json()
    except (httpx.HTTPError, ValueError, KeyError) as err:
        raise BearerRefused(
            f"the identity provider did not answer ({type(err).__name__})"
        ) from None
