"""Hooks and automatic rules as the workflow sees them: the activity messages and the pure rules
(when to ask, what an automatic approval may approve, which observers an event wakes)."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from keycard.config import AutoApprove, Flow
from keycard.durations import format_duration
from keycard.models import EventType, RequestState
from keycard.sdk.events import HookEvent

PAGERDUTY_ON_CALL = "auto_approve.pagerduty_on_call"
HOOKS_FILE = "hooks file"  # the failure of a whole file: it could not be read or has problems


def hook_rule(name: str) -> str:
    """How an automatic decision by a hook names its author: `hook:on_request`."""
    return f"hook:{name}"


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HookFailure(_Message):
    """A hook (or rule) that raised, timed out or could not be loaded: it decided nothing."""

    hook: str
    error: str


class AutomaticDecision(_Message):
    outcome: Literal["approve", "deny"]
    reason: str
    by: str = Field(description="the rule or hook: auto_approve.pagerduty_on_call, hook:on_request")


class RequestHooksInput(_Message):
    hooks: str | None = Field(description="the flow's hooks file, as written in keycard.yaml")
    auto_approve: AutoApprove | None = None
    event: HookEvent


class RequestHooksResult(_Message):
    decision: AutomaticDecision | None = None
    approvers: list[str] | None = Field(
        default=None, description="from get_approvers: replaces the flow's approvers"
    )
    failures: list[HookFailure] = Field(default_factory=list)


class ApprovalHookInput(_Message):
    hooks: str
    event: HookEvent


class ApprovalHookResult(_Message):
    veto: str | None = Field(default=None, description="on_approve said no, and why")
    failures: list[HookFailure] = Field(default_factory=list)


class ObserveInput(_Message):
    hooks: str
    names: list[str] = Field(description="the observers to call, in order")
    event: HookEvent


class ObserveResult(_Message):
    failures: list[HookFailure] = Field(default_factory=list)


# --- pure rules ---------------------------------------------------------------------------------


def evaluates_requests(flow: Flow) -> bool:
    """Whether a new request goes through hooks or automatic rules before waiting for people."""
    return bool(flow.hooks or (flow.auto_approve and flow.auto_approve.rules))


def over_automatic_cap(flow: Flow, duration: timedelta) -> str | None:
    """Why an automatic approval may not approve this duration, or None when it may."""
    cap = flow.auto_approve.max_duration if flow.auto_approve else None
    if cap is not None and duration > cap:
        return (
            f"automatic approval is limited to {format_duration(cap)} in flow {flow.name}; "
            f"this request for {format_duration(duration)} waits for an approver"
        )
    return None


def routing_failed(failures: list[HookFailure]) -> bool:
    """Whether the code that says who may approve failed (or may have: the file did not load)."""
    return any(f.hook in ("get_approvers", HOOKS_FILE) for f in failures)


def request_failure_outcome(failure: HookFailure) -> str:
    """What a failure at the request step means for the requester: always less, never more."""
    if failure.hook in ("get_approvers", HOOKS_FILE):
        return (
            "nothing was decided automatically, and Keycard cannot tell who should approve: "
            "only an admin can approve this request"
        )
    return "nothing was decided automatically; people decide"


_OBSERVERS: dict[str, tuple[str, ...]] = {
    "request.created": ("after_request",),
    "request.approved": ("after_approve",),
    "request.auto_approved": ("after_approve",),
    "request.denied": ("on_deny", "after_deny"),
    "access.granted": ("after_grant",),
    "access.revoked": ("after_revoke",),
    "access.ended": ("after_revoke",),
}


def observers_for(event_type: EventType, state: RequestState) -> list[str]:
    """The after_* hooks an event wakes; `after_end` follows whichever event ends the request."""
    names = list(_OBSERVERS.get(event_type, ()))
    # Once: the ending itself, not what follows it (a refusal, a failed hook, the sessions).
    after = (
        "decision.refused",
        "hook.failed",
        "access.sessions_ended",
        "access.sessions_not_ended",
    )
    if state.finished and event_type not in after:
        names.append("after_end")
    return names
