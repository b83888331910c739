"""The Okta Management API endpoints the okta SDK calls for okta_group, on a local port: users and
groups found by `search`, a user's groups, adding and removing a member; an API token checked
(`SSWS <token>`), and Okta's error bodies."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

from tests.local_http import serving

TOKEN = "00okta-test-token"


@dataclass
class FakeOkta:
    url: str = ""
    users: dict[str, str] = field(
        default_factory=lambda: {
            "00ualice": "alice@example.com",
            "00ubob": "bob@example.com",
            "00ucarol": "carol@example.com",
        }
    )
    groups: dict[str, tuple[str, str]] = field(
        default_factory=lambda: {
            "00gsre": ("sre-admins", "OKTA_GROUP"),
            "00gad": ("ad-admins", "APP_GROUP"),
        }
    )
    members: set[tuple[str, str]] = field(default_factory=set)  # (group id, user id)
    calls: list[tuple[str, str]] = field(default_factory=list)
    fail_next: list[int] = field(default_factory=list)

    def has(self, user: str, group: str = "00gsre") -> bool:
        return (group, user) in self.members

    def _user(self, user_id: str) -> dict:
        email = self.users[user_id]
        first = email.split("@")[0].title()
        return {
            "id": user_id,
            "status": "ACTIVE",
            "profile": {"login": email, "email": email, "firstName": first, "lastName": "Test"},
        }

    def _group(self, group_id: str) -> dict:
        name, kind = self.groups[group_id]
        return {"id": group_id, "type": kind, "profile": {"name": name, "description": ""}}

    @web.middleware
    async def gate(self, request: web.Request, handler) -> web.StreamResponse:
        self.calls.append((request.method, request.path_qs))
        if request.headers.get("Authorization") != f"SSWS {TOKEN}":
            return _error(401, "E0000011", "Invalid token provided")
        if self.fail_next:
            status = self.fail_next.pop(0)
            return _error(
                status, "E0000047", "API call exceeded rate limit due to too many requests."
            )
        return await handler(request)

    async def list_users(self, request: web.Request) -> web.Response:
        wanted = set(re.findall(r'"([^"]+)"', request.query.get("search", "")))
        found = [self._user(u) for u, email in self.users.items() if email in wanted]
        return web.json_response(found)

    async def list_groups(self, request: web.Request) -> web.Response:
        wanted = set(re.findall(r'"([^"]+)"', request.query.get("search", "")))
        found = [self._group(g) for g, (name, _) in self.groups.items() if name in wanted]
        return web.json_response(found)

    async def get_group(self, request: web.Request) -> web.Response:
        group_id = request.match_info["group"]
        if group_id not in self.groups:
            return _error(404, "E0000007", f"Not found: Resource not found: {group_id} (UserGroup)")
        return web.json_response(self._group(group_id))

    async def user_groups(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        return web.json_response([self._group(g) for g, u in sorted(self.members) if u == user])

    async def add(self, request: web.Request) -> web.Response:
        group, user = request.match_info["group"], request.match_info["user"]
        if group not in self.groups or user not in self.users:
            return _error(404, "E0000007", "Not found: Resource not found")
        self.members.add((group, user))
        return web.Response(status=204)

    async def remove(self, request: web.Request) -> web.Response:
        group, user = request.match_info["group"], request.match_info["user"]
        self.members.discard((group, user))
        return web.Response(status=204)


def _error(status: int, code: str, summary: str) -> web.Response:
    body = {"errorCode": code, "errorSummary": summary, "errorLink": code, "errorId": "oae1",
            "errorCauses": []}  # fmt: skip
    return web.json_response(body, status=status)


@asynccontextmanager
async def running_okta() -> AsyncIterator[FakeOkta]:
    okta = FakeOkta()
    app = web.Application(middlewares=[okta.gate])
    app.router.add_get("/api/v1/users", okta.list_users)
    app.router.add_get("/api/v1/groups", okta.list_groups)
    app.router.add_get("/api/v1/groups/{group}", okta.get_group)
    app.router.add_get("/api/v1/users/{user}/groups", okta.user_groups)
    app.router.add_put("/api/v1/groups/{group}/users/{user}", okta.add)
    app.router.add_delete("/api/v1/groups/{group}/users/{user}", okta.remove)
    async with serving(app) as url:
        okta.url = url
        yield okta
