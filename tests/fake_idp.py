"""A small OpenID Connect provider for the console's single sign-on tests, on a local port.

It does what a real provider does on the wire: discovery, an authorization endpoint that signs in
whoever the test says (where a real one would show its login page), a token endpoint that checks
the code, the client, the redirect URI and the PKCE verifier, and RS256-signed ID tokens whose keys
it publishes. Knobs let a test make it misbehave: an unverified email, an expired or foreign-signed
ID token.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

CLIENT_ID = "keycard-console"
CLIENT_SECRET = "idp-test-secret"
CLI_CLIENT_ID = "keycard-cli"  # a public client: the device flow, no secret


@dataclass
class FakeIdp:
    user: str = "alice@example.com"  # who signs in at the next /authorize
    email_verified: bool = True
    token_lifetime: int = 300  # seconds; negative: issued already expired
    foreign_key: bool = False  # sign ID tokens with a key the provider does not publish
    # The device flow: the person confirms the code (at the second poll) or declines it.
    device_answer: str = "confirm"  # or "decline"
    url: str = ""
    codes: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, dict[str, Any]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    _key: RSAKey = field(
        default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"})
    )

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self._metadata)
        app.router.add_get("/authorize", self._authorize)
        app.router.add_post("/token", self._token)
        app.router.add_post("/device", self._device)
        app.router.add_get("/jwks", self._jwks)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        await self._runner.cleanup()

    async def _metadata(self, request: web.Request) -> web.Response:
        return web.json_response({
            "issuer": self.url,
            "authorization_endpoint": f"{self.url}/authorize",
            "token_endpoint": f"{self.url}/token",
            "device_authorization_endpoint": f"{self.url}/device",
            "jwks_uri": f"{self.url}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        })  # fmt: skip

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response(KeySet([self._key]).as_dict(private=False))

    async def _authorize(self, request: web.Request) -> web.Response:
        q = request.query
        if q.get("client_id") != CLIENT_ID or q.get("response_type") != "code":
            return web.Response(status=400, text="unknown client or response type")
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return web.Response(status=400, text="PKCE is required")
        code = secrets.token_urlsafe(16)
        self.codes[code] = {
            "user": self.user,
            "redirect_uri": q["redirect_uri"],
            "challenge": q["code_challenge"],
            "nonce": q.get("nonce"),
        }
        query = urlencode({"code": code, "state": q.get("state", "")})
        raise web.HTTPFound(f"{q['redirect_uri']}?{query}")

    async def _device(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("client_id") != CLI_CLIENT_ID:
            return web.json_response({"error": "unauthorized_client"}, status=400)
        device_code, user_code = secrets.token_urlsafe(16), "WDJB-MJHT"
        self.devices[device_code] = {"user": self.user, "polls": 0}
        return web.json_response({
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": f"{self.url}/activate",
            "verification_uri_complete": f"{self.url}/activate?user_code={user_code}",
            "interval": 1,
            "expires_in": 60,
        })  # fmt: skip

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") == "urn:ietf:params:oauth:grant-type:device_code":
            return self._device_token(form)
        if form.get("grant_type") == "refresh_token":
            user = self.refresh_tokens.pop(str(form.get("refresh_token", "")), None)
            if user is None or form.get("client_id") != CLI_CLIENT_ID:
                return web.json_response({"error": "invalid_grant"}, status=400)
            return self._tokens(user, CLI_CLIENT_ID, None)
        client_id, secret = _client_credentials(request, form)
        if (client_id, secret) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        grant = self.codes.pop(str(form.get("code", "")), None)  # a code works once
        if grant is None or form.get("redirect_uri") != grant["redirect_uri"]:
            return web.json_response({"error": "invalid_grant"}, status=400)
        verifier = str(form.get("code_verifier", ""))
        digest = hashlib.sha256(verifier.encode()).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != grant["challenge"]:
            return web.json_response({"error": "invalid_grant", "error_description": "PKCE"}, 400)
        return self._tokens(grant["user"], CLIENT_ID, grant["nonce"])

    def _device_token(self, form: Any) -> web.Response:
        device = self.devices.get(str(form.get("device_code", "")))
        if device is None or form.get("client_id") != CLI_CLIENT_ID:
            return web.json_response({"error": "invalid_grant"}, status=400)
        device["polls"] += 1
        if device["polls"] < 2:
            return web.json_response({"error": "authorization_pending"}, status=400)
        del self.devices[str(form["device_code"])]
        if self.device_answer == "decline":
            return web.json_response({"error": "access_denied"}, status=400)
        return self._tokens(device["user"], CLI_CLIENT_ID, None)

    def _tokens(self, user: str, audience: str, nonce: str | None) -> web.Response:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "sub": hashlib.sha256(user.encode()).hexdigest()[:16],
            "aud": audience,
            "iat": now,
            "exp": now + self.token_lifetime,
            "email": user,
            "email_verified": self.email_verified,
        }
        if nonce:
            claims["nonce"] = nonce
        key = RSAKey.generate_key(2048, parameters={"kid": "k1"}) if self.foreign_key else self._key
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, key)
        refresh = secrets.token_urlsafe(16)
        self.refresh_tokens[refresh] = user
        return web.json_response({
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": id_token,
            "refresh_token": refresh,
        })  # fmt: skip


def _client_credentials(request: web.Request, form: Any) -> tuple[str, str]:
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user, password
    return str(form.get("client_id", "")), str(form.get("client_secret", ""))
