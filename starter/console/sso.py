"""Single sign-on for the console: OpenID Connect, authorization code with PKCE (Authlib).

Configured by the environment, like every other secret:

    KEYCARD_OIDC_ISSUER         https://login.example.com (its /.well-known/openid-configuration)
    KEYCARD_OIDC_CLIENT_ID      the console's client id at the identity provider
    KEYCARD_OIDC_CLIENT_SECRET  its secret (omit for a public client: PKCE alone)
    KEYCARD_OIDC_SCOPES         default "openid email profile"
    KEYCARD_PUBLIC_URL          the console's address as browsers reach it, for the redirect URI
                                (register {KEYCARD_PUBLIC_URL}/signin/sso/callback at the provider)

The ID token's `email` claim is the person (refused when the provider says `email_verified:
false`); `api.admins` in keycard.yaml names the people who are admins when they sign in this way.
Authlib checks the ID token's signature against the provider's keys, its issuer, audience, expiry
and nonce; the state and PKCE verifier live in the signed session until the callback.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from authlib.integrations.starlette_client import OAuth, StarletteOAuth2App

ISSUER_ENV = "KEYCARD_OIDC_ISSUER"
CLIENT_ID_ENV = "KEYCARD_OIDC_CLIENT_ID"
CLIENT_SECRET_ENV = "KEYCARD_OIDC_CLIENT_SECRET"  # noqa: S105 -- the variable's name
SCOPES_ENV = "KEYCARD_OIDC_SCOPES"
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
        return cls(issuer, client_id, env.get(CLIENT_SECRET_ENV) or None, scopes)

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
