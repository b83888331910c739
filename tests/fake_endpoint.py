"""A company's own access endpoint, as the http strategy calls it: checks every signature, keeps
memberships, and can fail on purpose (a status for the next N calls)."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.local_http import serving

SECRET = "s3cret-for-tests"


@dataclass
class Endpoint:
    url: str = ""
    members: set[tuple[str, str]] = field(default_factory=set)  # (principal_id, resource_id)
    calls: list[dict] = field(default_factory=list)  # each call: body, headers, status answered
    fail_next: list[int] = field(default_factory=list)  # statuses to answer, one per call
    known_people: set[str] = field(default_factory=lambda: {"alice@example.com", "bob@example.com"})

    def of(self, operation: str) -> list[dict]:
        return [c for c in self.calls if c["body"].get("operation") == operation]

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        timestamp = request.headers.get("X-Keycard-Timestamp", "")
        expected = hmac.new(SECRET.encode(), timestamp.encode() + b"." + raw, hashlib.sha256)
        signed = request.headers.get("X-Keycard-Signature") == f"sha256={expected.hexdigest()}"
        body = json.loads(raw) if raw else {}
        call = {"body": body, "headers": dict(request.headers), "signed": signed}
        self.calls.append(call)
        if not signed:
            call["status"] = 401
            return web.json_response({"error": "bad signature"}, status=401)
        if self.fail_next:
            status = self.fail_next.pop(0)
            call["status"] = status
            headers = {"Retry-After": "1"} if status in (429, 503) else {}
            return web.json_response({"error": f"failing on purpose ({status})"}, status=status,
                                     headers=headers)  # fmt: skip
        call["status"] = 200
        operation = body["operation"]
        if operation == "resolve":
            if body["person"] not in self.known_people:
                call["status"] = 404
                return web.json_response({"error": f"no account for {body['person']}"}, status=404)
            target = body["target"]
            resource = (
                f"{target['settings'].get('database', '?')}/{target['settings'].get('role', '?')}"
            )
            return web.json_response(
                {"principal_id": f"db-{body['person']}", "resource_id": resource}
            )
        key = (body["principal_id"], body["resource_id"])
        if operation == "exists":
            return web.json_response({"exists": key in self.members})
        if operation == "grant":
            self.members.add(key)
        elif operation == "revoke":
            self.members.discard(key)
        return web.json_response({})


@asynccontextmanager
async def running_endpoint() -> AsyncIterator[Endpoint]:
    endpoint = Endpoint()
    app = web.Application()
    app.router.add_post("/keycard", endpoint.handle)
    async with serving(app) as url:
        endpoint.url = f"{url}/keycard"
        yield endpoint
