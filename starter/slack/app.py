"""The Slack app: `/access`, the request modal and the buttons, as thin Bolt listeners.

Each listener acks first (Slack's three seconds), parses the payload into a model, calls
KeycardClient, and reports. Refusals come back from the workflow's validators and are shown to
the person who clicked, ephemerally; nothing else changes. Messages about a request's progress are
not sent here but by the workflow's `notify.send` activity (activities/slack.py), so they arrive
in order and survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import structlog
from fastapi import FastAPI, Request, Response
from slack_bolt.adapter.fastapi.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from keycard import policy
from keycard import slack_blocks as blocks
from keycard import temporal as names
from keycard.models import Actor, Requester, RequestState, RequestView
from keycard.policy import PolicyError, RequestInvalid
from keycard.settings import SlackSettings
from starter.api.problems import problem_response
from starter.client import KeycardClient, RequestRejected
from starter.protocol import Ask
from starter.slack.review import BreakGlassReviews

log = structlog.get_logger("keycard.slack_app")

SLACK_EVENTS_PATH = "/slack/events"
IDENTITY_TTL_SECONDS = 300
LIST_LIMIT = 20
LIST_READ_TIMEOUT = 3.0  # seconds per request; /access list answers within Slack's patience


class NoSlackIdentity(PolicyError):
    def __init__(self, message: str):
        super().__init__("NoSlackIdentity", message, policy.Refusal.FORBIDDEN)


@dataclass(frozen=True)
class Person:
    slack_user_id: str
    email: str
    name: str | None

    def actor(self) -> Actor:
        return Actor(
            email=self.email, via="slack", slack_user_id=self.slack_user_id, name=self.name
        )

    def requester(self) -> Requester:
        return Requester(email=self.email, slack_user_id=self.slack_user_id, name=self.name)


class SlackPeople:
    """Slack user id → the person Keycard knows, by the email on their Slack profile."""

    def __init__(self, client: AsyncWebClient, ttl: float = IDENTITY_TTL_SECONDS):
        self._client = client
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Person]] = {}

    async def person(self, user_id: str) -> Person:
        cached = self._cache.get(user_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            response = await self._client.users_info(user=user_id)
        except SlackApiError as err:
            raise NoSlackIdentity(
                f"Keycard could not look up your Slack profile ({err.response.get('error')})"
            ) from None
        user = response.get("user") or {}
        email = (user.get("profile") or {}).get("email")
        if not email or user.get("deleted") or user.get("is_bot"):
            raise NoSlackIdentity(
                "Keycard knows people by the email on their Slack profile, and yours has none "
                "Keycard can read; ask an admin to check the app's users:read.email scope"
            )
        person = Person(
            slack_user_id=user_id,
            email=email.strip().lower(),
            name=(user.get("real_name") or user.get("name") or None),
        )
        self._cache[user_id] = (time.monotonic() + self._ttl, person)
        return person


def request_id_for(team_id: str | None, view_id: str) -> str:
    """The same modal always submits the same request: a double submit starts nothing new."""
    digest = hashlib.sha256(f"slack:{team_id}:{view_id}".encode()).digest()
    alphabet = names._ID_ALPHABET  # the alphabet of every request id (no l/o/0/1)
    return "req-" + "".join(alphabet[b % len(alphabet)] for b in digest[:10])


class SlackFrontDoor:
    """The listeners, bound to one KeycardClient and one Slack Web API client."""

    def __init__(self, keycard: KeycardClient, client: AsyncWebClient):
        self.keycard = keycard
        self.client = client
        self.people = SlackPeople(client)

    def register(self, app: AsyncApp, command: str = blocks.DEFAULT_COMMAND) -> None:
        app.command(command)(self.on_command)
        app.action(blocks.FLOW_SELECT)(self.on_flow_chosen)
        app.view(blocks.REQUEST_MODAL)(self.on_submit)
        for action_id in blocks.DECISION_ACTIONS:
            app.action(action_id)(self.on_decision)
        app.action(blocks.EXTEND)(self.on_extend)
        BreakGlassReviews(self).register(app)

    # --- /access ---------------------------------------------------------------------------------

    async def on_command(self, ack, body: dict[str, Any], respond) -> None:
        text = (body.get("text") or "").strip().lower()
        if text not in ("", "request", "list"):
            await ack(
                text=f"`{body.get('command', '/access')}` opens the request form; "
                f"`{body.get('command', '/access')} list` shows your pending and active requests."
            )
            return
        await ack()
        try:
            person = await self.people.person(body["user_id"])
            if text == "list":
                views, unread = await self._open_requests(person)
                await respond(
                    response_type="ephemeral",
                    text="Your pending and active requests",
                    blocks=blocks.request_list(views, datetime.now(UTC), unread),
                )
                return
            flows = self._requestable(person)
            if not flows:
                await respond(response_type="ephemeral", text="There is no access you may request.")
                return
            await self.client.views_open(
                trigger_id=body["trigger_id"], view=blocks.request_modal(flows)
            )
        except PolicyError as refusal:
            await respond(response_type="ephemeral", text=blocks.escape(refusal.message))

    async def on_flow_chosen(self, ack, body: dict[str, Any]) -> None:
        await ack()
        view = body["view"]
        person = await self.people.person(body["user"]["id"])
        flows = self._requestable(person)
        chosen = (body["actions"][0].get("selected_option") or {}).get("value")
        selected = next((f for f in flows if f.name == chosen), None)
        form = blocks.read_request_form(view)
        await self.client.views_update(
            view_id=view["id"],
            hash=view.get("hash"),
            view=blocks.request_modal(
                flows,
                selected,
                reason=form.reason,
                private_metadata=view.get("private_metadata", ""),
            ),
        )

    async def on_submit(self, ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        form = blocks.read_request_form(view)
        try:
            person = await self.people.person(body["user"]["id"])
            fields = await self._user_fields(form)
            ask = Ask(
                flow=form.flow or "",
                target=form.target or "",
                duration=form.duration,
                reason=form.reason,
                start_at=form.start_at,
                fields=fields,
                requester=person.requester(),
            )
            request_id = request_id_for(body.get("team", {}).get("id"), view["id"])
            # The flow's rules, checked while the form is open.
            planned = self.keycard.prepare(ask, request_id=request_id, via="slack")
        except PolicyError as refusal:
            await ack(response_action="errors", errors=self._form_errors(form, refusal))
            return
        await ack()
        try:
            await self.keycard.start(planned)
        except RequestRejected as rejected:
            # The workflow exists and its notifier tells the requester why it stopped.
            log.info("slack.request_rejected", code=rejected.code, reason=rejected.message)
        except Exception:
            log.exception("slack.request_failed", request_id=planned.request_id)
            await self.tell(
                person.slack_user_id,
                "Keycard could not start your request just now; please try again in a minute. "
                f"(The details are in Keycard's log under {planned.request_id}.)",
            )

    # --- buttons on the approval message and the requester's DMs --------------------------------

    async def on_decision(self, ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        verb = action["action_id"].removeprefix("keycard.")
        request_id = action["value"]
        user_id = body["user"]["id"]
        # One approval (or denial, cancel, revoke) per person per request can ever succeed, so
        # this id makes double clicks and Slack's redeliveries the same Temporal update.
        update_id = f"slack:{verb}:{request_id}:{user_id}"
        await self._decide(body, verb, request_id, update_id)

    async def on_extend(self, ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        request_id, _, duration = action["selected_option"]["value"].partition(" ")
        # Extending twice is legitimate; each click (its action_ts) is one update.
        update_id = f"slack:extend:{request_id}:{body['user']['id']}:{action['action_ts']}"
        await self._decide(body, "extend", request_id, update_id, duration=duration)

    async def _decide(
        self, body: dict[str, Any], verb: str, request_id: str, update_id: str, **kwargs: Any
    ) -> None:
        user_id = body["user"]["id"]
        try:
            actor = (await self.people.person(user_id)).actor()
            method = getattr(self.keycard, verb)
            await method(request_id, actor, update_id=update_id, **kwargs)
        except PolicyError as refusal:
            log.info("slack.refused", verb=verb, request_id=request_id, code=refusal.code)
            await self.whisper(body, f":no_entry: {blocks.escape(refusal.message)}")
        except Exception:
            log.exception("slack.decision_failed", verb=verb, request_id=request_id)
            await self.whisper(body, "Keycard could not record that just now; please try again.")

    async def whisper(self, body: dict[str, Any], text: str) -> None:
        """An ephemeral answer to the person who clicked, where they clicked."""
        user_id = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or user_id
        await self.client.chat_postEphemeral(channel=channel, user=user_id, text=text)

    # --- helpers ---------------------------------------------------------------------------------

    def _requestable(self, person: Person) -> list[Any]:
        config = self.keycard.config
        return [
            f for f in config.flows if policy.may_request(f, person.email, config.approver_groups)
        ]

    async def _open_requests(self, person: Person) -> tuple[list[RequestView], list[str]]:
        """The person's pending and active requests, and the ids of any that could not be read
        in time (a request whose worker is down must not hold up the whole list)."""
        ids: list[str] = []
        for state in (RequestState.PENDING, RequestState.ACTIVE):
            page = await self.keycard.list(
                requester=person.email, state=state, limit=LIST_LIMIT, details=False
            )
            ids.extend(row.id for row in page.requests)

        async def read(request_id: str) -> RequestView | None:
            try:
                return await asyncio.wait_for(self.keycard.get(request_id), LIST_READ_TIMEOUT)
            except (TimeoutError, PolicyError):
                return None

        found = await asyncio.gather(*(read(i) for i in ids))
        views = [v for v in found if v is not None]
        unread = [i for i, v in zip(ids, found, strict=True) if v is None]
        return sorted(views, key=lambda v: v.requested_at, reverse=True), unread

    async def _user_fields(self, form: blocks.RequestForm) -> dict[str, Any]:
        """User-picker answers as emails, so the request reads the same outside Slack."""
        fields = dict(form.fields)
        for name in form.user_fields:
            try:
                fields[name] = (await self.people.person(fields[name])).email
            except NoSlackIdentity:
                raise RequestInvalid(
                    "InvalidField", f"field {name}: that person has no email Keycard can read"
                ) from None
        return fields

    def _form_errors(self, form: blocks.RequestForm, refusal: PolicyError) -> dict[str, str]:
        """Put the refusal next to the input it is about."""
        message = refusal.message
        flow_name = form.flow or ""
        code_blocks = {
            "UnknownTarget": blocks.target_block(flow_name),
            "TooManyTargets": blocks.target_block(flow_name),
            "InvalidDuration": blocks.duration_block(flow_name),
            "DurationNotAllowed": blocks.duration_block(flow_name),
            "ReasonRequired": blocks.REASON_BLOCK,
            "ReasonTooLong": blocks.REASON_BLOCK,
            "ReasonTooShort": blocks.REASON_BLOCK,
            "ReasonMismatch": blocks.REASON_BLOCK,
            "TicketRequired": blocks.REASON_BLOCK,
            "StartInPast": blocks.START_BLOCK,
            "StartTooFar": blocks.START_BLOCK,
        }
        if refusal.code in code_blocks and flow_name:
            return {code_blocks[refusal.code]: message}
        if refusal.code in ("MissingField", "InvalidField") and flow_name:
            flow = self.keycard.config.flow(flow_name)
            for spec in flow.fields:
                if re.search(rf"\bfield {re.escape(spec.name)}\b", message):
                    return {blocks.field_block(flow_name, spec.name): message}
        return {blocks.FLOW_BLOCK: message}

    async def tell(self, user_id: str, text: str) -> None:
        try:
            await self.client.chat_postMessage(channel=user_id, text=blocks.escape(text))
        except SlackApiError:
            log.exception("slack.tell_failed", user=user_id)


# --- building and serving the app -------------------------------------------------------------


def slack_client(settings: SlackSettings) -> AsyncWebClient:
    url = settings.api_url if settings.api_url.endswith("/") else settings.api_url + "/"
    return AsyncWebClient(token=settings.bot_token, base_url=url)


def build_slack_app(
    keycard: KeycardClient, settings: SlackSettings, client: AsyncWebClient | None = None
) -> AsyncApp:
    """The Bolt app. Over HTTP every request must carry a valid Slack signature (else 401);
    Socket Mode needs no signing secret, since Slack's own connection authenticates."""
    if not settings.bot_token:
        raise ValueError("the Slack app needs SLACK_BOT_TOKEN")
    if not settings.socket_mode and not settings.signing_secret:
        raise ValueError(
            "the Slack app over HTTP needs SLACK_SIGNING_SECRET (or SLACK_APP_TOKEN for Socket Mode)"
        )
    client = client or slack_client(settings)
    app = AsyncApp(
        client=client,
        signing_secret=settings.signing_secret,
        request_verification_enabled=bool(settings.signing_secret),
    )
    SlackFrontDoor(keycard, client).register(app, settings.command)
    return app


def attach_slack(
    api: FastAPI, keycard: KeycardClient, settings: SlackSettings | None = None
) -> AsyncApp | None:
    """What the API server calls when it starts: nothing without SLACK_BOT_TOKEN; over HTTP,
    the app mounted at /slack/events; with SLACK_APP_TOKEN, the app returned unmounted for the
    caller to run with `run_socket_mode`."""
    settings = settings or SlackSettings.from_env()
    if not settings.enabled:
        return None
    app = build_slack_app(keycard, settings)
    if not settings.socket_mode:
        mount_slack(api, app, signing_secret=settings.signing_secret)
    return app


def mount_slack(
    api: FastAPI,
    slack: AsyncApp,
    path: str = SLACK_EVENTS_PATH,
    *,
    signing_secret: str | None = None,
) -> None:
    """Serve the Slack app's HTTP endpoint (slash command, interactivity) on a FastAPI app;
    `signing_secret` (the one the app verifies with) lets a malformed signed call get a 400."""
    handler = AsyncSlackRequestHandler(slack)
    verifier = SignatureVerifier(signing_secret) if signing_secret else None

    @api.post(path, include_in_schema=False)
    async def slack_events(request: Request):
        malformed = await _malformed_interaction(request, verifier)
        return malformed or await handler.handle(request)


async def _malformed_interaction(
    request: Request, verifier: SignatureVerifier | None
) -> Response | None:
    """A 400 for a correctly signed interaction whose `payload` is not a JSON object, and a 401 for
    a timestamp that is not a number (Bolt would answer 500 to both); None for everything else,
    which Bolt answers (401 when unsigned)."""
    body = await request.body()  # kept by Starlette for Bolt to read again
    timestamp = request.headers.get("x-slack-request-timestamp", "")
    if verifier is not None and not timestamp.strip().isdigit():
        return problem_response(
            request,
            HTTPStatus.UNAUTHORIZED,
            "the X-Slack-Request-Timestamp header is missing or not a Unix time, so the request "
            "cannot be verified as Slack's; nothing was done",
            "InvalidSlackSignature",
        )
    if verifier is None or not verifier.is_valid_request(body, dict(request.headers)):
        return None
    try:
        form = parse_qs(body.decode("utf-8"))
    except UnicodeDecodeError:
        form = {"payload": ["(not UTF-8)"]}
    if "payload" not in form:
        return None
    try:
        ok = isinstance(json.loads(form["payload"][0]), dict)
    except ValueError:
        ok = False
    if ok:
        return None
    return problem_response(
        request,
        HTTPStatus.BAD_REQUEST,
        "the interaction's payload is not a JSON object, which Slack always sends; nothing was done",
        "BadSlackPayload",
    )


async def run_socket_mode(slack: AsyncApp, app_token: str, stop: asyncio.Event) -> None:
    """Hold a Socket Mode connection (no public URL needed) until `stop` is set."""
    from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

    handler = AsyncSocketModeHandler(slack, app_token)
    await handler.connect_async()
    log.info("slack.socket_mode.connected")
    try:
        await stop.wait()
    finally:
        await handler.close_async()


@contextlib.asynccontextmanager
async def slack_serving(api: FastAPI, keycard: KeycardClient) -> AsyncIterator[AsyncApp | None]:
    """Run the Slack front door beside an API server, if Slack is configured: mounted at
    /slack/events over HTTP, or a Socket Mode connection held while the block runs."""
    settings = SlackSettings.from_env()
    slack = attach_slack(api, keycard, settings)
    if slack is None or not settings.socket_mode:
        if slack is not None:
            log.info("slack.http", path=SLACK_EVENTS_PATH)
        yield slack
        return
    stop = asyncio.Event()
    task = asyncio.create_task(run_socket_mode(slack, settings.app_token or "", stop))
    try:
        yield slack
    finally:
        stop.set()
        await task
