"""The one shape of a Keycard client: what a front door may ask of Keycard, and in which words.

Two classes have this shape. KeycardClient (starter/client.py) reaches requests through Temporal;
the HTTP API, the Slack app, the web console and operators use it. KeycardApiClient
(starter/api/client.py) reaches them through the HTTP API; the CLI on laptops and scripts in CI
use it. The CLI holds a `Keycard` and does not know which it has. mypy (part of `make test`)
checks that both classes keep this shape (starter/cli/terminal.py names them both), so a verb added to one and not the other, or a
parameter that differs, fails the build.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from keycard.models import Actor, Requester, RequestState, RequestView, ReviewFinding
from starter.pages import RequestPage

WAIT_TIMEOUT = timedelta(seconds=60)


class Ask(BaseModel):
    """A person's request in their own words, before it is checked against the flow.

    `target`: one of the flow's targets, or several (one approval covers them all; each is its
    own lease, granted side by side and removed together). `requester`: who the access is for;
    through the HTTP API, the token's owner unless a service token names someone.
    """

    model_config = ConfigDict(frozen=True)

    flow: str
    target: str | tuple[str, ...]
    requester: Requester | None = None
    duration: str | timedelta | None = None
    reason: str | None = None
    fields: Mapping[str, Any] = Field(default_factory=dict)
    start_at: datetime | None = None


class Keycard(Protocol):
    """Ask for, decide on and read access requests. Refusals raise keycard.policy.PolicyError
    subclasses whose `code` callers match and whose message is written for the person."""

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
    ) -> RequestView:
        """Start a request; answer once it is checked (PENDING, or decided by a rule)."""
        ...

    async def approve(self, request_id: str, actor: Actor, comment: str = "") -> RequestView: ...

    async def deny(self, request_id: str, actor: Actor, comment: str = "") -> RequestView: ...

    async def cancel(self, request_id: str, actor: Actor, comment: str = "") -> RequestView: ...

    async def revoke(self, request_id: str, actor: Actor, comment: str = "") -> RequestView: ...

    async def break_glass(
        self, request_id: str, actor: Actor, justification: str
    ) -> RequestView: ...

    async def review(
        self,
        request_id: str,
        actor: Actor,
        finding: ReviewFinding = "justified",
        comment: str = "",
    ) -> RequestView: ...

    async def extend(
        self, request_id: str, actor: Actor, duration: str | timedelta, comment: str = ""
    ) -> RequestView: ...

    async def get(self, request_id: str) -> RequestView: ...

    async def wait(
        self,
        request_id: str,
        *,
        until: Collection[RequestState] = (RequestState.ACTIVE,),
        timeout: timedelta = WAIT_TIMEOUT,
    ) -> RequestView:
        """The request once it is in one of `until` or finished, or as it is after `timeout`."""
        ...

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
        """Newest first; `page_token` continues after the last row of the previous page."""
        ...


Verb = Literal["approve", "deny", "cancel", "revoke"]
DECISIONS: tuple[Verb, ...] = ("approve", "deny", "cancel", "revoke")
Decision = Callable[[str, Actor, str], Awaitable[RequestView]]


def decision(keycard: Keycard, verb: Verb) -> Decision:
    """The method that makes decision `verb` (a request id, who decides, their comment)."""
    decisions: dict[Verb, Decision] = {
        "approve": keycard.approve,
        "deny": keycard.deny,
        "cancel": keycard.cancel,
        "revoke": keycard.revoke,
    }
    return decisions[verb]
