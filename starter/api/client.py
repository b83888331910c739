"""KeycardApiClient: the HTTP API from Python (httpx), for the CLI on laptops and scripts in CI.

It has KeycardClient's shape (starter/protocol.py), so a CLI command reads the same in either
mode; the acting person is the token's (an `actor` given is ignored). A refusal arrives as an RFC 9457 problem and is raised
as ApiRefusal, a PolicyError whose message is the problem's sentence.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from keycard.durations import format_duration
from keycard.models import Actor, Requester, RequestState, RequestView, ReviewFinding
from keycard.policy import PolicyError, Refusal
from starter.pages import RequestPage

API_URL_ENV = "KEYCARD_API_URL"
CREDENTIALS_ENV = "KEYCARD_CREDENTIALS"
EXPIRY_MARGIN_SECONDS = 60  # renew a signed-in token this close to its end
TOKEN_ENV = "KEYCARD_TOKEN"  # noqa: S105 -- the variable's name, not a token
# A `wait=active` call is held up to 60 s by the server; give it room before timing out here.
HTTP_TIMEOUT = httpx.Timeout(10.0, read=90.0)
SIGN_IN_TIMEOUT = httpx.Timeout(10.0)  # renewing a sign-in at the identity provider

KIND_OF_STATUS = {
    HTTPStatus.UNAUTHORIZED: Refusal.FORBIDDEN,
    HTTPStatus.FORBIDDEN: Refusal.FORBIDDEN,
    HTTPStatus.CONFLICT: Refusal.CONFLICT,
}


class ApiRefusal(PolicyError):
    """The API answered with a problem: `status` is the HTTP status, the message its sentence."""

    def __init__(self, status: int, code: str, message: str):
        kind = KIND_OF_STATUS.get(HTTPStatus(status), Refusal.INVALID)
        super().__init__(code, message, kind)
        self.status = status


class ApiUnavailable(Exception):
    """The API could not be reached, or failed on its side; nothing to do but try again."""


def api_from_env(environ: Mapping[str, str] | None = None) -> KeycardApiClient | None:
    """The API client when KEYCARD_API_URL is set, with KEYCARD_TOKEN or the `keycard login`
    sign-in kept for that URL; None without KEYCARD_API_URL (operator mode)."""
    env = os.environ if environ is None else environ
    url = env.get(API_URL_ENV, "").strip()
    if not url:
        return None
    token = env.get(TOKEN_ENV, "").strip()
    if not token:
        token = stored_token(url, env) or ""
    if not token:
        raise ApiUnavailable(
            f"{API_URL_ENV} is set but you are not signed in: run `keycard login` (single "
            f"sign-on), or set {TOKEN_ENV} to your Keycard API token (or unset {API_URL_ENV} to "
            "talk to Temporal directly as an operator)"
        )
    return KeycardApiClient(url, token)


class KeycardApiClient:
    """Request, decide on and read requests through the HTTP API, as the token's owner."""

    def __init__(
        self, base_url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._transport = transport

    def __repr__(self) -> str:  # never the token
        return f"KeycardApiClient({self.base_url!r})"

    # --- asking ----------------------------------------------------------------------------------

    async def request(
        self,
        *,
        flow: str,
        target: str | Sequence[str],
        requester: Requester | None = None,
        duration: str | timedelta | None = None,
        reason: str | None = None,
        fields: Mapping[str, Any] | None = None,
        start_at: datetime | None = None,
        wait: bool = False,
        idempotency_key: str | None = None,
    ) -> RequestView:
        """`requester` is honoured for service tokens only; the API refuses it from others."""
        body: dict[str, Any] = {
            "flow": flow,
            **({"target": target} if isinstance(target, str) else {"targets": list(target)}),
            "duration": _duration(duration),
            "reason": reason or "",
            "fields": dict(fields or {}),
        }
        if start_at is not None:
            body["start_at"] = start_at.isoformat()
        if requester is not None:
            body["requester"] = requester.email
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        params = {"wait": "active"} if wait else {}
        return RequestView.model_validate(
            await self._call("POST", "/v1/requests", json=body, params=params, headers=headers)
        )

    # --- deciding (the actor is the token's owner; `actor` is accepted and ignored) ---------------

    async def approve(
        self, request_id: str, actor: Actor | None = None, comment: str = ""
    ) -> RequestView:
        return await self._decide(request_id, "approve", {"comment": comment})

    async def deny(
        self, request_id: str, actor: Actor | None = None, comment: str = ""
    ) -> RequestView:
        return await self._decide(request_id, "deny", {"comment": comment})

    async def cancel(
        self, request_id: str, actor: Actor | None = None, comment: str = ""
    ) -> RequestView:
        return await self._decide(request_id, "cancel", {"comment": comment})

    async def revoke(
        self, request_id: str, actor: Actor | None = None, comment: str = ""
    ) -> RequestView:
        return await self._decide(request_id, "revoke", {"comment": comment})

    async def extend(
        self, request_id: str, actor: Actor | None, duration: str | timedelta, comment: str = ""
    ) -> RequestView:
        body = {"duration": _duration(duration), "comment": comment}
        return await self._decide(request_id, "extend", body)

    async def break_glass(
        self, request_id: str, actor: Actor | None, justification: str
    ) -> RequestView:
        return await self._decide(request_id, "break-glass", {"justification": justification})

    async def review(
        self,
        request_id: str,
        actor: Actor | None = None,
        finding: ReviewFinding = "justified",
        comment: str = "",
    ) -> RequestView:
        return await self._decide(request_id, "review", {"finding": finding, "comment": comment})

    async def _decide(self, request_id: str, verb: str, body: dict[str, Any]) -> RequestView:
        path = f"/v1/requests/{_segment(request_id)}/{verb}"
        return RequestView.model_validate(await self._call("POST", path, json=body))

    # --- reading -----------------------------------------------------------------------------------

    async def get(self, request_id: str) -> RequestView:
        return RequestView.model_validate(
            await self._call("GET", f"/v1/requests/{_segment(request_id)}")
        )

    async def wait(
        self,
        request_id: str,
        *,
        until: Collection[RequestState] = (RequestState.ACTIVE,),
        timeout: timedelta | None = None,
    ) -> RequestView:
        """Hold until the request is ACTIVE or finished (or `timeout` passes), one server-side
        `wait=active` call after another. `until` is accepted for KeycardClient's signature;
        the API waits for ACTIVE."""
        del until
        path = f"/v1/requests/{_segment(request_id)}"
        loop_until = None if timeout is None else time.monotonic() + timeout.total_seconds()
        while True:
            view = RequestView.model_validate(
                await self._call("GET", path, params={"wait": "active"})
            )
            if view.state is RequestState.ACTIVE or view.state.finished:
                return view
            if loop_until is not None and time.monotonic() >= loop_until:
                return view

    async def list(
        self,
        *,
        state: RequestState | str | None = None,
        flow: str | None = None,
        requester: str | None = None,
        target: str | None = None,
        limit: int = 50,
        page_token: str | None = None,
    ) -> RequestPage:
        params = {
            "state": RequestState(state).value if state else None,
            "flow": flow,
            "requester": requester,
            "target": target,
            "limit": limit,
            "page_token": page_token,
        }
        query = {k: v for k, v in params.items() if v is not None}
        return RequestPage.model_validate(await self._call("GET", "/v1/requests", params=query))

    async def flows(self) -> list[dict[str, Any]]:
        return (await self._call("GET", "/v1/flows"))["flows"]

    # --- the wire ------------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self._token}", **kwargs.pop("headers", {})}
        async with httpx.AsyncClient(
            base_url=self.base_url, transport=self._transport, timeout=HTTP_TIMEOUT
        ) as http:
            try:
                response = await http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as err:
                raise ApiUnavailable(
                    f"cannot reach the Keycard API at {self.base_url} ({type(err).__name__}); "
                    f"check {API_URL_ENV}, or whether `keycard serve` is running"
                ) from None
        if response.is_success:
            return response.json()
        problem = _problem(response)
        if response.status_code >= 500:
            raise ApiUnavailable(
                f"the Keycard API failed: {problem.get('detail', response.reason_phrase)}"
            )
        raise ApiRefusal(
            response.status_code,
            str(problem.get("code", response.reason_phrase)),
            str(problem.get("detail") or f"{response.status_code} {response.reason_phrase}"),
        )


# --- sign-ins kept by `keycard login` (starter/cli/login.py) ------------------------------------


def credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CREDENTIALS_ENV):
        return Path(env[CREDENTIALS_ENV])
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "keycard" / "credentials.json"


def load_sign_ins(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def save_sign_ins(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
    path.chmod(0o600)  # also when the file existed with looser permissions


def stored_token(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The signed-in ID token for this API, renewed first if it is about to expire; None when
    this API was never signed in to (or the sign-in cannot be renewed: sign in again)."""
    path = credentials_path(environ)
    store = load_sign_ins(path)
    entry = store.get(url.rstrip("/"))
    if not entry:
        return None
    if entry.get("expires_at", 0) - EXPIRY_MARGIN_SECONDS > time.time():
        return entry["id_token"]
    if not entry.get("refresh_token"):
        return None
    try:
        with httpx.Client(timeout=SIGN_IN_TIMEOUT) as http:
            answer = http.post(
                entry["token_endpoint"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": entry["refresh_token"],
                    "client_id": entry["client_id"],
                },
            )
    except httpx.HTTPError as err:
        raise ApiUnavailable(f"the identity provider did not answer ({err}); try again") from None
    if answer.status_code != 200 or "id_token" not in answer.json():
        return None
    store[url.rstrip("/")] = sign_in_entry(answer.json(), entry)
    save_sign_ins(path, store)
    return store[url.rstrip("/")]["id_token"]


def sign_in_entry(tokens: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    claims = token_claims(tokens["id_token"])
    return {
        **base,
        "id_token": tokens["id_token"],
        "refresh_token": tokens.get("refresh_token") or base.get("refresh_token"),
        "expires_at": int(claims.get("exp", time.time() + int(tokens.get("expires_in", 300)))),
        "email": claims.get("email"),
    }


def token_claims(id_token: str) -> dict[str, Any]:
    """The token's claims, unverified: only to know when it ends and whose it is (the API is
    what checks it)."""
    payload = id_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _duration(duration: str | timedelta | None) -> str | None:
    """A duration as the API takes it: `1h30m`, as keycard.yaml and the CLI write it."""
    return format_duration(duration) if isinstance(duration, timedelta) else duration


def _segment(request_id: str) -> str:
    """A request id as one path segment: `../flows` must not reach another route."""
    return quote(request_id, safe="")
