"""Slack activities: approval messages, the requester's DMs and their edits; approver user groups.

The workflow calls `notify.send` once per lifecycle event, in order, beside the lifecycle: Slack
being slow or down delays these messages, never a grant or a revocation. An activity attempt that
fails part-way resumes where it stopped (progress rides on heartbeat details), so a retry does
not post the same message twice. The refs returned are how later events edit what was posted.
(A little over the usual length: the message per event and its resumable progress belong together.)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import aiohttp
import structlog
from pydantic import BaseModel, Field
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import progress
from keycard import slack_blocks as blocks
from keycard import temporal as names
from keycard.models import (
    MessageRef,
    Notification,
    NotificationResult,
    RequestView,
    SlackApproversInput,
    SlackApproversResult,
)

log = structlog.get_logger("keycard.slack")

DEFAULT_API_URL = "https://slack.com/api/"

# Errors about one message or one person that no retry will cure: skip that message, go on.
_SKIPPABLE = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "user_not_found",
        "users_not_found",
        "user_disabled",
        "cannot_dm_bot",
        "message_not_found",
        "cant_update_message",
        "edit_window_closed",
        "msg_too_long",
        "invalid_blocks",
        "no_text",
    }
)
RATE_LIMIT_DEFAULT_WAIT = timedelta(seconds=5)


def web_client(token: str, base_url: str | None = None) -> AsyncWebClient:
    """The Slack Web API client; `base_url` (SLACK_API_URL) lets tests and proxies stand in."""
    url = base_url or DEFAULT_API_URL
    return AsyncWebClient(token=token, base_url=url if url.endswith("/") else url + "/")


class _Skipped(Exception):
    """Slack refused one message for good (say, channel_not_found); the others still go out."""


async def call_slack(client: AsyncWebClient, method: str, **kwargs: Any) -> dict[str, Any]:
    """One Web API call, its failure classified for Temporal's retries.

    Rate limits retry after Slack's Retry-After; 5xx and network errors retry with backoff;
    per-message errors raise _Skipped; anything else (a revoked token, a missing scope) retries
    too, loudly, because an operator can fix it and the messages then catch up.
    """
    try:
        # The typed method (chat_postMessage, users_info, ...) encodes each call as Slack expects.
        response = await getattr(client, method.replace(".", "_"))(**kwargs)
    except SlackApiError as err:
        status = getattr(err.response, "status_code", None) or getattr(err.response, "status", 0)
        error = _error_code(err)
        if status == 429 or error == "ratelimited":
            wait = _retry_after(err) or RATE_LIMIT_DEFAULT_WAIT
            raise ApplicationError(
                f"Slack rate limited {method}; retrying in {wait.total_seconds():g}s",
                type="SlackRateLimited",
                next_retry_delay=wait,
            ) from err
        if status >= 500:
            raise ApplicationError(
                f"Slack {method} failed with HTTP {status}", type="SlackUnavailable"
            ) from err
        if error in _SKIPPABLE:
            raise _Skipped(f"{method}: {error}") from err
        log.error("slack.call_failed", method=method, error=error, status=status)
        raise ApplicationError(f"Slack {method} failed: {error}", type="SlackError") from err
    except (aiohttp.ClientError, TimeoutError) as err:
        raise ApplicationError(
            f"Slack {method} unreachable: {err!r}", type="SlackUnreachable"
        ) from err
    return dict(response.data) if isinstance(response.data, dict) else {}


def _error_code(err: SlackApiError) -> str:
    data = getattr(err.response, "data", None)
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _retry_after(err: SlackApiError) -> timedelta | None:
    headers = getattr(err.response, "headers", None) or {}
    value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return timedelta(seconds=max(1, int(value))) if value else None
    except ValueError:
        return None


class _Progress(BaseModel):
    """What this notification already did, kept in heartbeat details across attempts."""

    done: list[str] = Field(default_factory=list)
    messages: list[MessageRef] = Field(default_factory=list)
    users: dict[str, str] = Field(default_factory=dict, description="email -> DM channel")


class _Delivery:
    """One notification's Slack work: steps run once each, in order, across activity attempts."""

    def __init__(
        self, client: AsyncWebClient, notification: Notification, console_url: str | None = None
    ):
        self.client = client
        self.console_url = console_url  # the web console's address, for links to the request
        self.n = notification
        self.view: RequestView = notification.view
        resumed = progress.resume()
        self.progress = (
            _Progress.model_validate(resumed)
            if resumed
            else _Progress(messages=list(notification.messages))
        )

    def refs(self, kind: str) -> list[MessageRef]:
        return [m for m in self.progress.messages if m.kind == kind]

    async def step(self, key: str, action: Callable[[], Awaitable[None]]) -> None:
        if key in self.progress.done:
            return
        try:
            await action()
        except _Skipped as skipped:
            log.warning("slack.message_skipped", request_id=self.view.id, reason=str(skipped))
        self.progress.done.append(key)
        progress.save(self.progress.model_dump(mode="json"))

    async def call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        return await call_slack(self.client, method, **kwargs)

    async def post(self, kind: str, channel: str, text: str, blocks_: list[dict]) -> None:
        response = await self.call(
            "chat.postMessage", channel=channel, text=text, blocks=blocks_, unfurl_links=False
        )
        self.progress.messages.append(
            MessageRef(kind=kind, channel=response["channel"], ts=response["ts"])
        )

    async def edit(self, kind: str, text: str, blocks_: list[dict]) -> None:
        for ref in self.refs(kind):
            await self.step(
                f"edit:{ref.ts}",
                lambda ref=ref: self._update(ref, text, blocks_),
            )

    async def _update(self, ref: MessageRef, text: str, blocks_: list[dict]) -> None:
        await self.call("chat.update", channel=ref.channel, ts=ref.ts, text=text, blocks=blocks_)

    async def thread(self, text: str) -> None:
        for ref in self.refs("approval"):
            await self.step(
                f"thread:{ref.ts}",
                lambda ref=ref: self._reply(ref, text),
            )

    async def _reply(self, ref: MessageRef, text: str) -> None:
        await self.call("chat.postMessage", channel=ref.channel, thread_ts=ref.ts, text=text)

    async def dm_channel(self, email: str, slack_user_id: str | None = None) -> str:
        """The DM channel with a person, found by their Slack id or their email."""
        if email in self.progress.users:
            return self.progress.users[email]
        user_id = slack_user_id
        if not user_id:
            found = await self.call("users.lookupByEmail", email=email)
            user_id = found["user"]["id"]
        opened = await self.call("conversations.open", users=user_id)
        channel = opened["channel"]["id"]
        self.progress.users[email] = channel
        return channel

    async def dm_requester(self, kind: str, text: str, blocks_: list[dict] | None = None) -> None:
        requester = self.view.requester
        channel = await self.dm_channel(requester.email, requester.slack_user_id)
        await self.post(kind, channel, text, blocks_ or blocks.note(text))


class SlackNotifier:
    """`notify.send` for Slack. Receives its AsyncWebClient; holds no state between calls."""

    def __init__(self, client: AsyncWebClient, console_url: str | None = None):
        self._client = client
        self._console_url = console_url

    @activity.defn(name=names.SEND_NOTIFICATION)
    async def send(self, notification: Notification) -> NotificationResult:
        delivery = _Delivery(self._client, notification, self._console_url)
        handler = _HANDLERS.get(notification.event.type)
        if handler is not None:
            await handler(delivery)
        return NotificationResult(messages=delivery.progress.messages)


async def _ask_approvers(d: _Delivery) -> None:
    view, flow = d.view, d.n.flow
    text, message = blocks.approval_text(view), blocks.approval_message(view, d.console_url)
    channel = flow.slack.channel if flow is not None else None
    if channel:
        await d.step(f"approval:{channel}", lambda: d.post("approval", channel, text, message))
    else:
        for email in view.approvers:

            async def post_dm(email: str = email) -> None:
                await d.post("approval", await d.dm_channel(email), text, message)

            await d.step(f"approval:{email}", post_dm)
    await d.step(
        "requester",
        lambda: d.dm_requester(
            "requester", blocks.requester_text(view), blocks.requester_message(view, d.console_url)
        ),
    )


async def _dm_approval(d: _Delivery, emails: list[str], key: str) -> None:
    """The approval message, with its buttons, in each person's DMs (edited like the others)."""
    view = d.view
    text, message = blocks.approval_text(view), blocks.approval_message(view, d.console_url)
    for email in emails:

        async def post_dm(email: str = email) -> None:
            await d.post("approval", await d.dm_channel(email), text, message)

        await d.step(f"{key}:{email}", post_dm)


async def _reminded(d: _Delivery) -> None:
    """A reminder: a reply under the channel's approval message, and the approval message again
    in the DMs of everyone who can still approve."""
    flow, detail = d.n.flow, d.n.event.detail
    if flow is not None and flow.slack.channel:
        await d.thread(blocks.reminder_text(d.view, detail))
    await _dm_approval(
        d, list(detail.get("approvers") or []), key=f"remind{detail.get('reminder')}"
    )


async def _escalated(d: _Delivery) -> None:
    """Escalation: the backup approvers get the approval message, the thread says so, and the
    requester is told who else was asked."""
    view, detail = d.view, d.n.event.detail
    await _dm_approval(d, list(detail.get("added") or []), key="escalate")
    await d.thread(blocks.escalation_text(view, detail))
    await d.step(
        "escalated", lambda: d.dm_requester("note", blocks.escalation_requester_text(view, detail))
    )


async def _decided(d: _Delivery) -> None:
    view = d.view
    await d.edit(
        "approval", blocks.approval_text(view), blocks.approval_message(view, d.console_url)
    )
    await d.edit(
        "requester", blocks.requester_text(view), blocks.requester_message(view, d.console_url)
    )


async def _break_glass(d: _Delivery) -> None:
    """Loud, where people look: the flow's channel and the security channel (or, with neither,
    each bypassed approver's DMs); the approval message says break-glass (_decided)."""
    view, flow = d.view, d.n.flow
    message = blocks.break_glass_message(view, d.n.event, d.console_url)
    text = _summary(message)
    channels = [c for c in (flow.slack.channel, flow.slack.security_channel) if c] if flow else []
    for channel in dict.fromkeys(channels):
        await d.step(
            f"break_glass:{channel}", lambda c=channel: d.post("break_glass", c, text, message)
        )
    if not channels:
        for email in d.n.event.detail.get("bypassed_approvers") or []:

            async def post_dm(email: str = email) -> None:
                await d.post("break_glass", await d.dm_channel(email), text, message)

            await d.step(f"break_glass:{email}", post_dm)
    await _decided(d)


async def _auto_approved(d: _Delivery) -> None:
    """A rule decided before anyone was asked: the flow's channel still sees it happen, and the
    rest of the story threads under that message."""
    view, flow = d.view, d.n.flow
    channel = flow.slack.channel if flow is not None else None
    if d.refs("approval") or not channel:
        await _decided(d)
        return
    text, message = blocks.approval_text(view), blocks.approval_message(view, d.console_url)
    await d.step(f"approval:{channel}", lambda: d.post("approval", channel, text, message))


async def _granted(d: _Delivery) -> None:
    view, flow = d.view, d.n.flow
    await _timeline(d)
    if not _speaks_for_all(d, "active"):
        return
    text = blocks.grant_message(view, flow)
    await d.step(
        "grant",
        lambda: d.dm_requester("grant", _summary(text), text),
    )


async def _extended(d: _Delivery) -> None:
    view, flow = d.view, d.n.flow
    await _timeline(d)
    await d.edit(
        "grant", _summary(blocks.grant_message(view, flow)), blocks.grant_message(view, flow)
    )
    await d.edit(
        "expiring",
        _summary(blocks.expiring_message(view, flow)),
        blocks.expiring_message(view, flow),
    )


async def _expiring(d: _Delivery) -> None:
    message = blocks.expiring_message(d.view, d.n.flow)
    await d.step("expiring", lambda: d.dm_requester("expiring", _summary(message), message))


def _speaks_for_all(d: _Delivery, state: str) -> bool:
    """Whether this event's messages go out: always, unless the request names several targets
    and another target's event (the first in `state`) sends them for all."""
    if not d.view.targets:
        return True
    return d.n.event.target.name == blocks.first_target_in(d.view, state)


async def _ended(d: _Delivery) -> None:
    view, flow = d.view, d.n.flow
    await _timeline(d)
    if not _speaks_for_all(d, "ended"):
        return
    await d.edit(
        "grant", _summary(blocks.grant_message(view, flow)), blocks.grant_message(view, flow)
    )
    await d.edit(
        "expiring", _summary(blocks.grant_message(view, flow)), blocks.grant_message(view, flow)
    )
    note = blocks.ended_note(view)
    await d.step("ended", lambda: d.dm_requester("note", note))


async def _failed(d: _Delivery) -> None:
    view = d.view
    if view.targets and not view.state.finished:
        await _timeline(d)  # one target of several: the others go ahead, as the thread says
        return
    if not _speaks_for_all(d, "failed"):
        return
    if d.refs("approval") or d.refs("requester"):
        await _decided(d)
        await _timeline(d)
    if not d.refs("requester"):
        note = blocks.failed_note(view)
        await d.step("failed", lambda: d.dm_requester("note", note))


async def _timeline(d: _Delivery) -> None:
    line = blocks.timeline_line(d.n.event, d.view)
    if line:
        await d.thread(line)


def _summary(message: list[dict[str, Any]]) -> str:
    """The first section's text, as the notification's fallback text."""
    for block in message:
        if block.get("type") == "section":
            return block["text"]["text"]
    return "Keycard"


_HANDLERS: dict[str, Callable[[_Delivery], Awaitable[None]]] = {
    "request.pending": _ask_approvers,
    "request.reminded": _reminded,
    "access.scheduled": _decided,
    "request.escalated": _escalated,
    "request.approved": _decided,
    "request.auto_approved": _auto_approved,
    "request.denied": _decided,
    "request.cancelled": _decided,
    "request.expired": _decided,
    "access.granted": _granted,
    "access.extended": _extended,
    "access.expiring": _expiring,
    "access.revoked": _ended,
    "access.ended": _ended,
    "access.grant_failed": _failed,
    "access.revoke_retrying": _timeline,
    "access.sessions_ended": _timeline,
    "access.sessions_not_ended": _timeline,
    "break_glass.used": _break_glass,
    "break_glass.reviewed": _timeline,
    "break_glass.review_overdue": _timeline,
    "access.activity": _timeline,
    # A failed hook's note (view.notes) shows on the messages already out, the requester's too.
    "hook.failed": _decided,
}


# --- approvers named as Slack user groups ----------------------------------------------------------


class SlackApprovers:
    """`slack.resolve_approvers`: the emails of a flow's Slack user groups' members, right now."""

    def __init__(self, client: AsyncWebClient):
        self._client = client

    @activity.defn(name=names.RESOLVE_SLACK_APPROVERS)
    async def resolve_approvers(self, input: SlackApproversInput) -> SlackApproversResult:
        group_ids = await self._group_ids(input.groups)
        user_ids: list[str] = []
        for group_id in group_ids:
            members = await call_slack(self._client, "usergroups.users.list", usergroup=group_id)
            user_ids.extend(u for u in members.get("users", []) if u not in user_ids)
        emails = await asyncio.gather(*(self._email(u) for u in user_ids))
        return SlackApproversResult(emails=[e for e in emails if e])

    async def _group_ids(self, groups: list[str]) -> list[str]:
        wanted = [g for g in groups if not _looks_like_group_id(g)]
        ids = {g: g for g in groups if _looks_like_group_id(g)}
        if wanted:
            listing = await call_slack(self._client, "usergroups.list")
            by_handle = {g.get("handle"): g.get("id") for g in listing.get("usergroups", [])}
            for handle in wanted:
                if handle not in by_handle:
                    raise ApplicationError(
                        f"there is no Slack user group @{handle}",
                        type="NoSuchSlackGroup",
                        non_retryable=True,
                    )
                ids[handle] = by_handle[handle]
        return [ids[g] for g in groups]

    async def _email(self, user_id: str) -> str | None:
        try:
            info = await call_slack(self._client, "users.info", user=user_id)
        except _Skipped:
            return None
        user = info.get("user", {})
        if user.get("deleted") or user.get("is_bot"):
            return None
        email = user.get("profile", {}).get("email")
        return email.lower() if email else None


def _looks_like_group_id(value: str) -> bool:
    """Slack's user group ids look like S0614TZR7; handles (sre-leads) are written in lower case."""
    return re.fullmatch(r"S[A-Z0-9]{6,}", value) is not None and any(c.isdigit() for c in value)


class SlackNotConfigured:
    """Stands in for `slack.resolve_approvers` when no SLACK_BOT_TOKEN is set: says so plainly."""

    @activity.defn(name=names.RESOLVE_SLACK_APPROVERS)
    async def resolve_approvers(self, input: SlackApproversInput) -> SlackApproversResult:
        raise ApplicationError(
            f"flow names Slack user groups ({', '.join(input.groups)}) but Slack is not "
            "configured: set SLACK_BOT_TOKEN on the worker",
            type="SlackNotConfigured",
            non_retryable=True,
        )
