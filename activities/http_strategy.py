"""`strategy: http`: any internal system becomes a target by answering one signed endpoint.

For each operation Keycard POSTs JSON to the flow's `http.url`:

    {"operation": "resolve" | "exists" | "grant" | "revoke",
     "person": "alice@example.com",
     "target": {"name": "billing-db", "settings": {"database": "billing"}},
     "principal_id": "...", "resource_id": "..."}          (not for resolve)

with these headers, so the endpoint can check that Keycard sent it and drop a replay:

    X-Keycard-Timestamp: 1733300000                       seconds since the epoch
    X-Keycard-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the flow's secret>
    Idempotency-Key: <the same for every retry of one call>
    plus the flow's own `http.headers` (${VAR} read from the worker's environment)

It answers 2xx with JSON: resolve `{"principal_id": ..., "resource_id": ...}` (both optional:
the person's email, and the endpoint's host with the target's name), exists `{"exists": bool}`,
grant and revoke anything (they must be idempotent). 408, 425, 429 and 5xx, and a connection that
fails, are retried (Retry-After is honoured); any other status refuses the operation with the
answer's `error` or `message`, which the request shows. A removal is never given up.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.strategy_adapter import sdk_activities
from keycard.schema import ENV_REF_PATTERN
from keycard.sdk.strategy import Grant, Refused, Resolved, Strategy
from keycard.strategies import HttpOptions

RETRYABLE = frozenset({408, 425, 429})
SIGNATURE_HEADER = "X-Keycard-Signature"
TIMESTAMP_HEADER = "X-Keycard-Timestamp"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Keycard-Signature value: what an endpoint recomputes to know Keycard sent the body."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


class HttpStrategy(Strategy):
    """One flow's endpoint (its `http:` settings)."""

    def __init__(
        self,
        options: HttpOptions,
        client: httpx.AsyncClient,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._options = options
        self._client = client
        self._environ = os.environ if environ is None else environ

    async def check(self, targets: dict[str, dict[str, str]]) -> list[str]:
        """What `keycard doctor` can know without calling the endpoint: its secret and header
        variables are set on this worker."""
        problems = []
        try:
            self._secret()
        except ApplicationError as err:
            problems.append(err.message)
        for value in self._options.headers.values():
            try:
                self._expand(value)
            except ApplicationError as err:
                problems.append(err.message)
        return problems

    async def resolve(self, person: str, target: str, settings: dict[str, str]) -> Resolved:
        answer = await self._call(
            "resolve", {"person": person, "target": _target(target, settings)}
        )
        try:
            return Resolved(
                principal_id=str(answer.get("principal_id") or person),
                resource_id=str(
                    answer.get("resource_id") or f"{urlsplit(self._options.url).netloc}/{target}"
                ),
            )
        except ValueError as err:
            raise Refused(f"{self._options.url} answered resolve with {answer!r}: {err}") from err

    async def exists(self, grant: Grant) -> bool:
        answer = await self._call("exists", _about(grant))
        if not isinstance(answer.get("exists"), bool):
            raise ApplicationError(  # retried: the endpoint may be mid-deploy
                f"{self._options.url} answered exists without a true/false `exists`: {answer!r}",
                type="HttpBadAnswer",
            )
        return answer["exists"]

    async def grant(self, grant: Grant) -> None:
        await self._call("grant", _about(grant))

    async def revoke(self, grant: Grant) -> None:
        await self._call("revoke", _about(grant))

    async def _call(self, operation: str, about: dict[str, Any]) -> dict[str, Any]:
        options = self._options
        body = json.dumps({"operation": operation, **about}, sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "keycard",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self._secret(), timestamp, body),
            "Idempotency-Key": _idempotency_key(operation, about),
            **{name: self._expand(value) for name, value in options.headers.items()},
        }
        try:
            response = await self._client.post(
                options.url,
                content=body,
                headers=headers,
                timeout=options.timeout.total_seconds(),
            )
        except httpx.HTTPError as err:
            raise ApplicationError(
                f"{options.url} could not be reached for {operation}: {type(err).__name__}: {err}",
                type="HttpUnavailable",
            ) from err
        if response.is_success:
            return _json(response)
        said = _said(response)
        if response.status_code in RETRYABLE or response.status_code >= 500:
            raise ApplicationError(
                f"{options.url} answered {operation} with {response.status_code}: {said}",
                type="HttpUnavailable",
                next_retry_delay=_retry_after(response),
            )
        raise Refused(f"{options.url} refused {operation} ({response.status_code}): {said}")

    def _secret(self) -> str:
        try:
            return self._options.secret.resolve(dict(self._environ))
        except LookupError as err:
            # Retried: setting the variable and restarting the worker lets it go on.
            raise ApplicationError(
                f"the http strategy's secret is not set on this worker: {err}",
                type="HttpNotConfigured",
            ) from err

    def _expand(self, value: str) -> str:
        def read(match: Any) -> str:
            name = ENV_REF_PATTERN.match(match.group(0)).group(1)  # type: ignore[union-attr]
            if not self._environ.get(name):
                raise ApplicationError(
                    f"environment variable {name} (an http header) is not set on this worker",
                    type="HttpNotConfigured",
                )
            return self._environ[name]

        return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", read, value)


def _target(name: str, settings: dict[str, str]) -> dict[str, Any]:
    return {"name": name, "settings": settings}


def _about(grant: Grant) -> dict[str, Any]:
    return {
        "person": grant.person,
        "principal_id": grant.principal_id,
        "resource_id": grant.resource_id,
        "target": _target(grant.target, grant.settings),
    }


def _idempotency_key(operation: str, about: dict[str, Any]) -> str:
    """The same for every retry of one activity (one grant, one removal); new for the next."""
    try:
        info = activity.info()
        scope = f"{info.workflow_id}/{info.workflow_run_id}/{info.activity_id}"
    except RuntimeError:  # not in an activity (a check)
        scope = str(time.time_ns())
    seed = f"{scope}/{operation}/{about.get('resource_id')}/{about.get('principal_id')}"
    return hashlib.sha256(seed.encode()).hexdigest()[:32]


def _json(response: httpx.Response) -> dict[str, Any]:
    if not response.content.strip():
        return {}
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _said(response: httpx.Response) -> str:
    answer = _json(response)
    text = answer.get("error") or answer.get("message") or response.text
    return str(text).strip()[:300] or response.reason_phrase


def _retry_after(response: httpx.Response) -> timedelta | None:
    value = response.headers.get("Retry-After")
    try:
        return timedelta(seconds=max(1, int(value))) if value else None
    except ValueError:
        return None


def for_flow(flow: Any, context: Any) -> Strategy:
    """The strategy of one http flow, for `keycard doctor`."""
    return HttpStrategy(flow.http, httpx.AsyncClient(), getattr(context, "environ", None))


def http_activities(context: Any) -> list[Callable[..., Any]]:
    """The http strategy's activities: each call reads its flow's `http:` settings from the spec."""
    client = httpx.AsyncClient()
    environ = getattr(context, "environ", None)

    def pick(spec: Any) -> Strategy:
        options = HttpOptions.model_validate(spec.options.get("http") or {})
        return HttpStrategy(options, client, environ)

    return sdk_activities("http", pick)
