"""A fake Slack: a local Web API server that records every call and answers like Slack, and
signed requests to send to the real Bolt endpoint as Slack would."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
from aiohttp import web
from fastapi import FastAPI
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.client import Client

from activities.slack import SlackApprovers, SlackNotifier, web_client
from keycard.config import parse_config
from keycard.models import ResolvedAssignment, ResolveInput
from keycard.settings import SlackSettings
from starter.slack.app import build_slack_app, mount_slack
from tests.fakes import FakeCloud
from tests.harness import running_stack

SIGNING_SECRET = "test-signing-secret"
BOT_TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
TEAM = "T0KEYCARD"


@dataclass
class SlackUser:
    id: str
    email: str | None
    name: str
    deleted: bool = False


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    status: int


@dataclass
class Message:
    channel: str
    ts: str
    text: str
    blocks: list[dict[str, Any]]
    thread_ts: str | None = None
    edits: int = 0

    def actions(self) -> list[str]:
        """The action ids of the message's buttons and selects."""
        return [
            element["action_id"]
            for block in self.blocks
            if block.get("type") == "actions"
            for element in block["elements"]
        ]

    def content(self) -> str:
        """Everything shown: the text and every mrkdwn/plain text in the blocks."""
        texts = [self.text]

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") in ("mrkdwn", "plain_text"):
                    texts.append(node.get("text", ""))
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.blocks)
        return "\n".join(texts)


@dataclass
class FakeSlack:
    users: list[SlackUser]
    groups: dict[str, list[str]] = field(default_factory=dict)  # handle -> member ids
    channels: dict[str, str] = field(default_factory=lambda: {"#prod-access": "C0PRODACCESS"})
    calls: list[Call] = field(default_factory=list)
    messages: dict[tuple[str, str], Message] = field(default_factory=dict)
    ephemeral: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # posted to response_url
    views: list[dict[str, Any]] = field(default_factory=list)
    sockets: list[web.WebSocketResponse] = field(default_factory=list)
    socket_acks: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""
    # Each failing call pops one (status, retry_after) answer; empty means Slack is well.
    failures: list[tuple[int, int | None]] = field(default_factory=list)
    fail_methods: set[str] | None = None
    # An outage: while set, every call fails with these answers in turn.
    outage: list[tuple[int, int | None]] | None = None
    _ts: Any = field(default_factory=lambda: itertools.count(1))
    _changed: asyncio.Condition | None = None

    # --- serving ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/api/{method}", self._api)
        app.router.add_post("/response/{id}", self._response_url)
        app.router.add_get("/socket", self._socket)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        await self._runner.cleanup()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    async def _args(self, request: web.Request) -> dict[str, Any]:
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(await request.post())
        for key in ("blocks", "view"):
            if isinstance(args.get(key), str):
                args[key] = json.loads(args[key])
        return args

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args = await self._args(request)
        token = APP_TOKEN if method == "apps.connections.open" else BOT_TOKEN
        if request.headers.get("Authorization") != f"Bearer {token}":
            return await self._answer(method, args, {"ok": False, "error": "not_authed"})
        failing = self.failures and (self.fail_methods is None or method in self.fail_methods)
        if failing or self.outage:
            if failing:
                status, retry_after = self.failures.pop(0)
            else:
                assert self.outage
                status, retry_after = self.outage[len(self.calls) % len(self.outage)]
            headers = {"Retry-After": str(retry_after)} if retry_after else {}
            error = "ratelimited" if status == 429 else "internal_error"
            return await self._answer(method, args, {"ok": False, "error": error}, status, headers)
        handler = getattr(self, "_" + method.replace(".", "_"), None)
        body = handler(args) if handler else {"ok": False, "error": "unknown_method"}
        return await self._answer(method, args, body)

    async def _answer(
        self, method: str, args: dict, body: dict, status: int = 200, headers: dict | None = None
    ) -> web.Response:
        self.calls.append(Call(method, args, status))
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return web.json_response(body, status=status, headers=headers)

    async def _response_url(self, request: web.Request) -> web.Response:
        self.responses.append(await request.json())
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        return web.Response(text="ok")

    # --- Socket Mode: Slack's side of the WebSocket ----------------------------------------------

    def _apps_connections_open(self, args: dict) -> dict:
        return {"ok": True, "url": self.url.replace("http", "ws", 1) + "/socket"}

    async def _socket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.sockets.append(socket)
        await socket.send_json({"type": "hello", "num_connections": 1})
        await self._notify()
        async for message in socket:
            self.socket_acks.append(json.loads(message.data))
            await self._notify()
        return socket

    async def send_envelope(self, type_: str, payload: dict[str, Any]) -> str:
        envelope_id = str(uuid.uuid4())
        await self.sockets[-1].send_json(
            {
                "envelope_id": envelope_id,
                "type": type_,
                "payload": payload,
                "accepts_response_payload": True,
            }
        )
        return envelope_id

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 20) -> Any:
        """Wait until `predicate()` is truthy (re-checked after every call Slack receives)."""
        assert self._changed is not None

        async def until() -> Any:
            async with self._changed:
                while not (result := predicate()):
                    await self._changed.wait()
                return result

        return await asyncio.wait_for(until(), timeout)

    # --- the Web API methods Keycard uses ----------------------------------------------------------

    def _user(self, user_id: str) -> SlackUser | None:
        return next((u for u in self.users if u.id == user_id), None)

    def _user_json(self, user: SlackUser) -> dict[str, Any]:
        profile = {"real_name": user.name}
        if user.email:
            profile["email"] = user.email
        return {
            "id": user.id,
            "team_id": TEAM,
            "name": user.name.lower(),
            "real_name": user.name,
            "deleted": user.deleted,
            "is_bot": False,
            "profile": profile,
        }

    def _auth_test(self, args: dict) -> dict:
        return {"ok": True, "team_id": TEAM, "user_id": "UKEYCARDBOT", "bot_id": "BKEYCARD"}

    def _users_info(self, args: dict) -> dict:
        user = self._user(args.get("user", ""))
        if user is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "user": self._user_json(user)}

    def _users_lookupByEmail(self, args: dict) -> dict:
        email = args.get("email", "").lower()
        user = next((u for u in self.users if u.email and u.email.lower() == email), None)
        if user is None:
            return {"ok": False, "error": "users_not_found"}
        return {"ok": True, "user": self._user_json(user)}

    def _usergroups_list(self, args: dict) -> dict:
        return {
            "ok": True,
            "usergroups": [
                {"id": f"S{handle.upper().replace('-', '')}", "handle": handle}
                for handle in self.groups
            ],
        }

    def _usergroups_users_list(self, args: dict) -> dict:
        for handle, members in self.groups.items():
            if args.get("usergroup") == f"S{handle.upper().replace('-', '')}":
                return {"ok": True, "users": members}
        return {"ok": False, "error": "no_such_subteam"}

    def _conversations_open(self, args: dict) -> dict:
        users = args.get("users", "")
        if self._user(users) is None:
            return {"ok": False, "error": "user_not_found"}
        return {"ok": True, "channel": {"id": "D" + users}}

    def _channel_id(self, channel: str) -> str | None:
        if channel.startswith("#"):
            return self.channels.get(channel)
        if channel.startswith("U"):
            return "D" + channel if self._user(channel) else None
        return channel

    def _chat_postMessage(self, args: dict) -> dict:
        channel = self._channel_id(args.get("channel", ""))
        if channel is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = f"{1700000000 + next(self._ts)}.000100"
        self.messages[(channel, ts)] = Message(
            channel=channel,
            ts=ts,
            text=args.get("text", ""),
            blocks=args.get("blocks") or [],
            thread_ts=args.get("thread_ts"),
        )
        return {"ok": True, "channel": channel, "ts": ts}

    def _chat_update(self, args: dict) -> dict:
        message = self.messages.get((args.get("channel", ""), args.get("ts", "")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        message.text = args.get("text", message.text)
        message.blocks = args.get("blocks") or []
        message.edits += 1
        return {"ok": True, "channel": message.channel, "ts": message.ts}

    def _chat_postEphemeral(self, args: dict) -> dict:
        self.ephemeral.append(args)
        return {"ok": True, "message_ts": f"{1700000000 + next(self._ts)}.000200"}

    def _views_open(self, args: dict) -> dict:
        view = {**args["view"], "id": f"V{uuid.uuid4().hex[:10].upper()}", "hash": "h1"}
        self.views.append(view)
        return {"ok": True, "view": view}

    def _views_update(self, args: dict) -> dict:
        view = {**args["view"], "id": args["view_id"], "hash": "h2"}
        self.views.append(view)
        return {"ok": True, "view": view}

    # --- reading what happened ---------------------------------------------------------------------

    def called(self, method: str, ok: bool = True) -> list[Call]:
        return [c for c in self.calls if c.method == method and (c.status == 200) == ok]

    def in_channel(self, channel: str, thread_ts: str | None = None) -> list[Message]:
        return [
            m for m in self.messages.values() if m.channel == channel and m.thread_ts == thread_ts
        ]

    def thread(self, parent: Message) -> list[str]:
        return [m.text for m in self.in_channel(parent.channel, parent.ts)]


# --- requests from Slack, signed as Slack signs them -------------------------------------------------


def signature(body: str, timestamp: str, secret: str = SIGNING_SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_headers(
    body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(body, ts, secret),
        "Content-Type": "application/x-www-form-urlencoded",
    }


def command_body(user_id: str, text: str = "", response_url: str = "", command: str = "/access"):
    return urlencode(
        {
            "token": "legacy",
            "team_id": TEAM,
            "team_domain": "keycard",
            "channel_id": "C0GENERAL",
            "channel_name": "general",
            "user_id": user_id,
            "user_name": user_id.lower(),
            "command": command,
            "text": text,
            "response_url": response_url,
            "trigger_id": f"trigger-{user_id}-{time.monotonic_ns()}",
            "api_app_id": "AKEYCARD",
        }
    )


def interaction_body(payload: dict[str, Any]) -> str:
    return urlencode({"payload": json.dumps(payload)})


def block_action(
    user_id: str, message: Message | None, action: dict[str, Any], view: dict | None = None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "block_actions",
        "team": {"id": TEAM, "domain": "keycard"},
        "user": {"id": user_id, "team_id": TEAM},
        "api_app_id": "AKEYCARD",
        "trigger_id": f"trigger-{time.monotonic_ns()}",
        "actions": [{"action_ts": f"{time.time():.6f}", **action}],
    }
    if message is not None:
        payload["container"] = {
            "type": "message",
            "channel_id": message.channel,
            "message_ts": message.ts,
        }
        payload["channel"] = {"id": message.channel}
        payload["message"] = {"ts": message.ts, "text": message.text, "blocks": message.blocks}
    if view is not None:
        payload["view"] = view
        payload["container"] = {"type": "view", "view_id": view["id"]}
    return payload


def button_click(user_id: str, message: Message, action_id: str) -> dict[str, Any]:
    for block in message.blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element["action_id"] == action_id:
                return block_action(
                    user_id,
                    message,
                    {
                        "type": element["type"],
                        "action_id": action_id,
                        "block_id": block["block_id"],
                        "value": element.get("value"),
                    },
                )
    raise AssertionError(f"no {action_id} in the message: {message.actions()}")


def select_option(user_id: str, message: Message, action_id: str, value: str) -> dict[str, Any]:
    for block in message.blocks:
        for element in block.get("elements", []) if block.get("type") == "actions" else []:
            if element["action_id"] == action_id:
                option = next(o for o in element["options"] if o["value"] == value)
                return block_action(
                    user_id,
                    message,
                    {
                        "type": "static_select",
                        "action_id": action_id,
                        "block_id": block["block_id"],
                        "selected_option": option,
                    },
                )
    raise AssertionError(f"no {action_id} in the message: {message.actions()}")


def view_submission(user_id: str, view: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "view_submission",
        "team": {"id": TEAM, "domain": "keycard"},
        "user": {"id": user_id, "team_id": TEAM},
        "api_app_id": "AKEYCARD",
        "trigger_id": f"trigger-{time.monotonic_ns()}",
        "view": {**view, "state": {"values": values}},
    }


# --- a Keycard stack with Slack in front: the fake Slack, the real Bolt app, the real workflows ----

SLACK_CONFIG = """
flows:
  - name: prod-power-user
    label: Prod PowerUser
    strategy: aws_sso
    targets:
      - {name: prod, label: Production, account_id: "111111111111", permission_set: PowerUserAccess}
      - {name: staging, label: Staging, account_id: "222222222222", permission_set: PowerUserAccess}
    durations: [1h, 30m, 2h]
    max_duration: 3h
    fields:
      - {name: incident, label: Incident, type: string, required: true}
      - {name: pages, type: int}
      - {name: customer_impact, type: bool}
      - {name: change, type: choice, choices: [hotfix, migration]}
      - {name: buddy, type: user}
    approvers: {slack_groups: [sre-leads]}
    allow_extension: true
    expiry_warning: 59m59s  # so a 1h grant is warned about a second in, while a test watches
    slack: {channel: "#prod-access"}
  - name: prod-admin
    label: Prod Admin
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: AdministratorAccess}
    durations: [1h]
    reason_required: false
    approvers: {users: [bob@example.com, carol@example.com, dave@example.com]}
    approvals_required: 2
  - name: break-glass
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: AdministratorAccess}
    durations: [15m]
    requesters: {users: [carol@example.com]}
"""

SLACK_USERS = [
    SlackUser("UALICE", "alice@example.com", "Alice"),
    SlackUser("UBOB", "bob@example.com", "Bob"),
    SlackUser("UCAROL", "Carol@Example.com", "Carol"),
    SlackUser("UDAVE", "dave@example.com", "Dave"),
    SlackUser("UNOMAIL", None, "Nomail"),
]


@dataclass
class SlackStack:
    keycard: Any
    stack: Any
    slack: FakeSlack
    http: Any

    async def send(
        self,
        body: str,
        *,
        secret: str = SIGNING_SECRET,
        timestamp: int | None = None,
        path: str = "/slack/events",
    ):
        return await self.http.post(
            path, content=body, headers=signed_headers(body, secret, timestamp)
        )

    async def command(self, user_id: str, text: str = ""):
        body = command_body(user_id, text, response_url=f"{self.slack.url}/response/{user_id}")
        return await self.send(body)

    async def interact(self, payload: dict[str, Any]):
        return await self.send(interaction_body(payload))


class IsolatedCloud(FakeCloud):
    """A FakeCloud whose principal ids are unique to it. Grant workflows are one per target and
    principal on the whole Temporal server, so without this a grant another test left running
    (on a task queue nobody polls any more) would take this test's leases."""

    def activities(self, strategy: str = "aws_sso") -> list:
        suffix = uuid.uuid4().hex[:8]
        resolve, *others = super().activities(strategy)

        @activity.defn(name=f"{strategy}.resolve")
        async def resolve_isolated(input: ResolveInput) -> ResolvedAssignment:
            found = await resolve(input)
            return found.model_copy(update={"principal_id": f"{found.principal_id}-{suffix}"})

        return [resolve_isolated, *others]


@asynccontextmanager
async def slack_stack(
    client: Client, config_text: str = SLACK_CONFIG, cloud: FakeCloud | None = None
) -> AsyncIterator[SlackStack]:
    """The real workflows with the SlackNotifier on a worker, the real Bolt app mounted on a
    FastAPI app, and the fake Slack answering both."""
    slack = FakeSlack(users=list(SLACK_USERS), groups={"sre-leads": ["UBOB", "UCAROL"]})
    await slack.start()
    web_client = web_client_for(slack)
    try:
        async with running_stack(
            client,
            config=parse_config(config_text),
            cloud=cloud or IsolatedCloud(),
            extra_activities=[
                SlackNotifier(web_client).send,
                SlackApprovers(web_client).resolve_approvers,
            ],
        ) as stack:
            settings = SlackSettings(
                bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=slack.api_url
            )
            api = FastAPI()
            mount_slack(
                api,
                build_slack_app(stack.keycard, settings),
                signing_secret=settings.signing_secret,
            )
            transport = httpx.ASGITransport(app=api)
            async with httpx.AsyncClient(transport=transport, base_url="http://keycard") as http:
                yield SlackStack(stack.keycard, stack, slack, http)
    finally:
        await slack.stop()


def web_client_for(slack: FakeSlack) -> AsyncWebClient:
    return web_client(BOT_TOKEN, slack.api_url)
