"""What the HTTP API takes and gives, besides a request's view (keycard.models.RequestView): the
bodies of its calls, the flows it lists, and its health."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from keycard import policy
from keycard.config import PromptField, ReasonPolicy
from keycard.models import (
    ApprovalStepView,
    Requester,
    ReviewFinding,
)
from starter.protocol import Ask

# --- what goes in and out ------------------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


FieldValue = str | int | float | bool | None


class NewRequest(_Body):
    """A request for access. The caller is the requester; a service token names the person."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "flow": "prod-power-user",
                    "target": "prod",
                    "duration": "1h",
                    "reason": "incident 4312",
                    "fields": {"incident": "4312"},
                }
            ]
        }
    )

    flow: str = Field(min_length=1, max_length=200, description="the flow, e.g. prod-power-user")
    target: str | None = Field(
        default=None, min_length=1, max_length=200, description="one of the flow's targets"
    )
    targets: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None,
        min_length=1,
        max_length=policy.MAX_TARGETS,
        description="several of the flow's targets instead of `target`: one approval covers "
        "them all; each is granted on its own, and a target that fails does not stop the others",
    )
    duration: str | None = Field(
        default=None, max_length=50, description="one the flow offers, e.g. 1h; default its first"
    )
    reason: str = Field(default="", description="why; most flows require one")
    fields: dict[str, FieldValue] = Field(
        default_factory=dict, description="answers to the flow's extra fields"
    )
    start_at: datetime | None = Field(
        default=None,
        description="begin access at this time once approved (ISO 8601; without a zone, UTC), "
        "within the flow's max_start_delay; default: as soon as approved",
    )
    requester: str | None = Field(
        default=None,
        max_length=320,
        description="service tokens only: the email of the person the access is for",
    )

    @model_validator(mode="after")
    def _one_way_to_name_targets(self) -> NewRequest:
        if self.target is None and self.targets is None:
            raise ValueError("name the target: `target` for one, or `targets` for several")
        if self.target is not None and self.targets is not None:
            raise ValueError("give `target` or `targets`, not both")
        return self

    def ask(self, requester: Requester) -> Ask:
        """The body in the clients' words (starter/protocol.py), for `requester`."""
        return Ask(
            flow=self.flow,
            target=self.target if self.target is not None else tuple(self.targets or ()),
            requester=requester,
            duration=self.duration,
            reason=self.reason,
            fields=self.fields,
            start_at=self.start_at,
        )


class DecisionBody(_Body):
    comment: str = Field(default="", max_length=2000, description="a note for the audit log")


class ExtendBody(DecisionBody):
    # No min_length: an empty duration gets the parser's sentence, with examples.
    duration: str = Field(max_length=50, description="how much longer, e.g. 30m")


class BreakGlassBody(_Body):
    justification: str = Field(
        min_length=1, max_length=2000, description="what is broken and why it cannot wait"
    )


class ReviewBody(_Body):
    finding: ReviewFinding = Field(
        default="justified",
        description="justified: the emergency was real and the access fit it; unjustified: it "
        "was not (then say why in `comment`)",
    )
    comment: str = Field(default="", max_length=2000, description="what the review found")


class TargetInfo(BaseModel):
    name: str
    label: str
    settings: dict[str, str]


class FlowInfo(BaseModel):
    """A flow as a requester needs to know it."""

    name: str
    label: str
    description: str
    strategy: str
    targets: list[TargetInfo]
    durations: list[str] = Field(description="the durations on offer; the first is the default")
    max_duration: str = Field(description="the longest access in all, extensions included")
    max_start_delay: str = Field(description="how far ahead start_at may be")
    reason_required: bool
    reason: ReasonPolicy | None = Field(
        default=None, description="what the reason must say: min_length, pattern, ticket, hint"
    )
    fields: list[PromptField]
    approvers: list[str]
    approvals_required: int = Field(description="distinct approvals in all (every step's count)")
    approval_steps: list[ApprovalStepView] = Field(
        default_factory=list,
        description="the flow's approval steps (empty: any approvals_required of approvers)",
    )
    approval_timeout: str
    allow_self_approval: bool
    allow_early_revoke: bool
    allow_extension: bool


class FlowList(BaseModel):
    flows: list[FlowInfo]


class Health(BaseModel):
    status: str


class WaitFor(StrEnum):
    ACTIVE = "active"
