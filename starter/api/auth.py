"""Bearer tokens of the HTTP API: made with `secrets`, stored as hashes, checked in constant time.

A token is `kc_` and 43 random URL-safe characters (256 bits). keycard.yaml holds only its SHA-256:
with that much randomness a fast hash is enough (nothing to guess from the hash, no password to
stretch), and a leaked config file still lets nobody in.

`authenticate` is the FastAPI dependency that turns `Authorization: Bearer` into an Identity.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from keycard.config import ApiToken
from keycard.models import Actor, Role
from starter.api.problems import ApiProblem

TOKEN_PREFIX = "kc_"  # noqa: S105 -- a marker that makes a leaked token recognisable
HASH_PREFIX = "sha256:"


def new_token() -> str:
    """A fresh token; shown once to the person who made it, never stored."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return HASH_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def config_entry(token: str, email: str, role: Role, name: str = "") -> ApiToken:
    """The keycard.yaml entry for `token` (its hash, never the token)."""
    return ApiToken(hash=hash_token(token), email=email, role=role.value, name=name)


def config_line(entry: ApiToken) -> str:
    """The entry as one YAML list item, to paste under `api: tokens:` in keycard.yaml."""
    line = f'- {{hash: "{entry.hash}", email: {entry.email}, role: {entry.role}'
    if entry.name:
        line += f", name: {_yaml_string(entry.name)}"
    return line + "}"


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Identity:
    """Who is calling: the person (or service) a valid token stands for."""

    email: str
    role: Role
    name: str = ""

    def actor(self) -> Actor:
        return Actor(email=self.email, role=self.role, via="api")


class TokenBook:
    """The tokens keycard.yaml lists, looked up by hash.

    Every stored hash is compared, with `hmac.compare_digest`, whatever matched earlier: how long a
    lookup takes says nothing about which token, or how much of one, was right.
    """

    def __init__(self, tokens: Iterable[ApiToken]):
        self._entries = [
            (
                t.hash.encode(),
                Identity(email=t.email, role=Role(t.role), name=t.name),
            )
            for t in tokens
        ]

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, token: str) -> Identity | None:
        return self.identify_hash(hash_token(token))

    def identify_hash(self, token_hash: str) -> Identity | None:
        """Who the token with this hash stands for (the console's sessions keep only the hash)."""
        presented = token_hash.encode()
        found = None
        for stored, identity in self._entries:
            if hmac.compare_digest(presented, stored):
                found = identity
        return found


# --- the FastAPI dependency every authenticated route uses --------------------------------------

_bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="kc_...",
    description="a Keycard API token (keycard token create)",
)


async def authenticate(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Identity:
    if credentials is None:
        raise ApiProblem(
            HTTPStatus.UNAUTHORIZED,
            "this needs an API token: send the header `Authorization: Bearer <token>` "
            "(an admin makes one with `keycard token create`)",
            "MissingToken",
            headers={"WWW-Authenticate": 'Bearer realm="keycard"'},
        )
    identity = request.app.state.tokens.identify(credentials.credentials)
    verifier = getattr(request.app.state, "bearer_verifier", None)
    if (
        identity is None
        and verifier is not None
        and not credentials.credentials.startswith(TOKEN_PREFIX)
    ):
        identity = await _signed_in_elsewhere(request, verifier, credentials.credentials)
    if identity is None:
        raise ApiProblem(
            HTTPStatus.UNAUTHORIZED,
            "the API token is not valid (unknown, mistyped or removed from keycard.yaml); "
            "ask a Keycard admin for a new one",
            "InvalidToken",
            headers={"WWW-Authenticate": 'Bearer realm="keycard", error="invalid_token"'},
        )
    request.state.identity = identity  # for the access log: who, never the token
    return identity


async def _signed_in_elsewhere(request: Request, verifier: Any, token: str) -> Identity:
    """The person an ID token from `keycard login` (the identity provider) stands for."""
    from starter.sso import BearerRefused

    try:
        email = await verifier.email(token)
    except BearerRefused as refused:
        raise ApiProblem(
            HTTPStatus.UNAUTHORIZED,
            f"the sign-in is not valid ({refused}); run `keycard login` again",
            "InvalidToken",
            headers={"WWW-Authenticate": 'Bearer realm="keycard", error="invalid_token"'},
        ) from None
    admins = request.app.state.keycard.config.api.admins
    return Identity(email=email, role=Role.ADMIN if email in admins else Role.USER, name="sso")
