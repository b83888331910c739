"""The break-glass review from Slack: the announcement's Review button opens a form (justified or
not, and a comment); its submission records the review (`review` update) and shows the workflow's
refusals on the form, as the request modal does."""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

import structlog
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from keycard import slack_blocks as blocks
from keycard.policy import PolicyError
from starter.client import KeycardClient

log = structlog.get_logger("keycard.slack_app")

# A modal's submission is answered within Slack's 3 s: a review recorded by then closes the modal
# (or shows the refusal on it); one still on its way closes it, and its outcome comes as a DM.
REVIEW_ANSWER_WITHIN = 2.0


class _People(Protocol):
    async def person(self, user_id: str) -> Any: ...


class FrontDoor(Protocol):
    """What the review uses of the Slack front door (starter/slack/app.py)."""

    keycard: KeycardClient
    client: AsyncWebClient
    people: _People

    async def whisper(self, body: dict[str, Any], text: str) -> None: ...

    async def tell(self, user_id: str, text: str) -> None: ...


class BreakGlassReviews:
    """The review's listeners, beside the front door's (whose client, people and replies they use)."""

    def __init__(self, door: FrontDoor) -> None:
        self.door = door

    def register(self, app: AsyncApp) -> None:
        app.action(blocks.REVIEW)(self.on_review)
        app.view(blocks.REVIEW_MODAL)(self.on_submitted)

    async def on_review(self, ack, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()
        request_id = action["value"]
        try:
            view = await self.door.keycard.get(request_id)
        except PolicyError as refusal:
            await self.door.whisper(body, f":no_entry: {blocks.escape(refusal.message)}")
            return
        if view.review is not None:
            review = view.review
            await self.door.whisper(
                body,
                f"`{request_id}` was reviewed already: {review.finding}, by "
                f"{blocks.mention(review.by)} at {review.at:%Y-%m-%d %H:%M} UTC.",
            )
            return
        await self.door.client.views_open(
            trigger_id=body["trigger_id"], view=blocks.review_modal(view)
        )

    async def on_submitted(self, ack, body: dict[str, Any], view: dict[str, Any]) -> None:
        form = blocks.read_review_form(view)
        if form.finding is None:
            await ack(
                response_action="errors",
                errors={blocks.FINDING_BLOCK: "Choose justified or unjustified."},
            )
            return
        user_id = body["user"]["id"]
        try:
            actor = (await self.door.people.person(user_id)).actor()
        except PolicyError as refusal:
            await ack(response_action="errors", errors={blocks.FINDING_BLOCK: refusal.message})
            return
        # One review per request can ever succeed: double submits are the same update.
        recording = asyncio.ensure_future(
            self.door.keycard.review(
                form.request_id,
                actor,
                form.finding,
                form.comment,
                update_id=f"slack:review:{form.request_id}:{user_id}",
            )
        )
        try:
            await asyncio.wait_for(asyncio.shield(recording), REVIEW_ANSWER_WITHIN)
        except TimeoutError:
            await ack()
            await self._outcome(recording, user_id, form.request_id)
            return
        except PolicyError as refusal:
            block = (
                blocks.COMMENT_BLOCK
                if refusal.code == "ReviewNeedsComment"
                else (blocks.FINDING_BLOCK)
            )
            await ack(response_action="errors", errors={block: refusal.message})
            return
        except Exception:
            log.exception("slack.review_failed", request_id=form.request_id)
            await ack(
                response_action="errors",
                errors={blocks.FINDING_BLOCK: "Keycard could not record that just now; try again."},
            )
            return
        await ack()

    async def _outcome(self, recording: asyncio.Future, user_id: str, request_id: str) -> None:
        """A review that outlasted the modal: its outcome, told to the reviewer."""
        try:
            await recording
        except PolicyError as refusal:
            await self.door.tell(
                user_id, f"Your review of {request_id} was not recorded: {refusal.message}"
            )
        except Exception:
            log.exception("slack.review_failed", request_id=request_id)
            await self.door.tell(
                user_id, f"Keycard could not record your review of {request_id}; please try again."
            )
