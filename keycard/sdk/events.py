"""What a hook receives: the request at one step of its life, as typed, documented pydantic models.

These models are the SDK's contract with users' hook files: fields are only ever added.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from keycard.models import Actor as _Actor
from keycard.models import RequestView


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class Person(_Frozen):
    """Someone Keycard knows by email; Slack id and name when the front door knew them."""

    email: str
    slack_user_id: str | None = None
    name: str | None = None


class Actor(_Frozen):
    """Who took the current step: a person, or a rule or hook acting for the flow."""

    email: str | None = None
    name: str | None = None
    slack_user_id: str | None = None
    rule: str | None = Field(default=None, description="the rule or hook, when no person acted")
    via: str = Field(description="front door: cli, api, slack, signal, rule")
    admin: bool = False

    @property
    def person(self) -> Person | None:
        """The actor as a Person, or None for a rule."""
        if not self.email:
            return None
        return Person(email=self.email, slack_user_id=self.slack_user_id, name=self.name)


class Flow(_Frozen):
    name: str
    label: str
    strategy: str


class Target(_Frozen):
    name: str
    label: str
    settings: dict[str, str] = Field(
        default_factory=dict, description="e.g. account_id and permission_set, or group"
    )


class Approval(_Frozen):
    approver: Actor
    at: datetime
    comment: str = ""


class HookEvent(_Frozen):
    """The request as it stands when a hook runs.

    `hook` says which hook is running (on_request, on_approve, after_grant, ...); `actor` is who
    took the step it reacts to (the approver for on_approve, the requester for on_request).
    """

    hook: str
    request_id: str
    state: str = Field(description="PENDING, GRANTING, ACTIVE, ... at this step")
    requester: Person
    flow: Flow
    target: Target
    duration: timedelta
    reason: str
    fields: dict[str, Any] = Field(default_factory=dict)
    approvals: list[Approval] = Field(
        default_factory=list, description="so far; a rule's automatic approval included"
    )
    approvals_required: int
    approvers: list[str] = Field(default_factory=list, description="who may approve, resolved")
    actor: Actor | None = None
    comment: str = Field(default="", description="what the actor wrote, if anything")
    break_glass: bool = False
    requested_at: datetime
    expires_at: datetime | None = None

    @property
    def user(self) -> Person:
        """The requester (the name Sym's SDK uses)."""
        return self.requester


def _actor(actor: _Actor | None) -> Actor | None:
    if actor is None:
        return None
    return Actor(
        email=actor.email,
        name=actor.name,
        slack_user_id=actor.slack_user_id,
        rule=actor.rule,
        via=actor.via,
        admin=actor.role.value == "admin",
    )


def hook_event(
    hook: str, view: RequestView, actor: _Actor | None = None, comment: str = ""
) -> HookEvent:
    """The event a hook sees, from the request's view at that step (pure: used in workflows)."""
    return HookEvent(
        hook=hook,
        request_id=view.id,
        state=view.state.value,
        requester=Person(**view.requester.model_dump()),
        flow=Flow(name=view.flow, label=view.flow_label, strategy=view.strategy),
        target=Target(name=view.target, label=view.target_label, settings=view.target_settings),
        duration=view.duration,
        reason=view.reason,
        fields=view.fields,
        approvals=[
            Approval(approver=_actor(a.actor), at=a.at, comment=a.comment)  # type: ignore[arg-type]
            for a in view.approvals
        ],
        approvals_required=view.approvals_required,
        approvers=view.approvers,
        actor=_actor(actor),
        comment=comment,
        break_glass=view.break_glass,
        requested_at=view.requested_at,
        expires_at=view.expires_at,
    )
