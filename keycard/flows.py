"""A flow in keycard.yaml: the fields every flow has, and one model per strategy built from the
registry (keycard/strategies.py), told apart by `strategy`."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeAlias, Union

from pydantic import (
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from keycard.durations import Duration, format_duration

# --- flows ------------------------------------------------------------------------------------
from keycard.flow_rules import (
    ActivitySettings,
    ApprovalStep,
    Approvers,
    AutoApprove,
    Escalation,
    FlowSlack,
    PromptField,
    ReasonPolicy,
    Requesters,
    SessionsPolicy,
)
from keycard.schema import (
    Name,
    _Strict,
)
from keycard.strategies import (
    STRATEGIES,
    AwsSsoTarget,
    GroupTarget,
    SettingsTarget,
    StrategyInfo,
)

# A break-glass use waits this long for its review unless the flow says otherwise.
BREAK_GLASS_REVIEW_WITHIN = timedelta(days=7)


class _FlowBase(_Strict):
    if TYPE_CHECKING:  # every strategy's model adds these (_flow_model)
        strategy: str
        targets: list[Target]

    name: Name
    label: str = ""
    description: str = ""
    durations: list[Duration] = Field(
        min_length=1, description="durations a requester may pick; the first is the default"
    )
    max_duration: Duration | None = Field(
        default=None, description="longest total access, extensions included (default: longest)"
    )
    reason_required: bool = True
    reason: ReasonPolicy | None = Field(
        default=None, description="rules a reason must meet (min_length, pattern, ticket)"
    )
    fields: list[PromptField] = Field(default_factory=list)
    approvers: Approvers = Field(default_factory=Approvers)
    requesters: Requesters | None = None
    approvals_required: int = Field(default=1, ge=1, le=10)
    approval_steps: list[ApprovalStep] | None = Field(
        default=None,
        min_length=1,
        max_length=5,
        description="approval in steps, each needing its own distinct approvers (an AND of "
        "groups); one person counts in one step at most. In place of approvers and "
        "approvals_required, which are the one-step shorthand",
    )
    allow_self_approval: bool = False
    approval_timeout: Duration = Field(default=timedelta(hours=1))
    max_start_delay: Duration = Field(
        default=timedelta(days=7),
        description="how far ahead a request may set start_at (a scheduled start: approved "
        "now, granted then)",
    )
    reminders: list[Duration] = Field(
        default_factory=list,
        max_length=10,
        description="remind the approvers of a pending request this long after it was made "
        "(a Slack thread reply and DMs), e.g. [15m, 1h]",
    )
    escalate_after: Duration | None = Field(
        default=None,
        description="a request still pending this long after it was made also goes to "
        "escalation.approvers (the requester is told)",
    )
    escalation: Escalation | None = None
    allow_early_revoke: bool = True
    allow_extension: bool = False
    hooks: str | None = Field(
        default=None,
        description="a Python file of @hook and @reducer functions (keycard.sdk), "
        "relative to this config file",
    )
    auto_approve: AutoApprove | None = None
    break_glass: bool = Field(
        default=False,
        description="the requester may approve their own request with a written justification; "
        "the request is marked and announced as break-glass",
    )
    break_glass_review_within: Duration | None = Field(
        default=None,
        description="after a break-glass use, the request waits this long (default 7d) for an "
        "approver's review (`keycard review`), then audits `break_glass.review_overdue`",
    )
    expiry_warning: Duration | None = Field(
        default=timedelta(minutes=10),
        description="warn the requester this long before access ends; null: never warn",
    )
    slack: FlowSlack = Field(default_factory=FlowSlack)
    end_sessions: bool | None = Field(
        default=None,
        description="when access ends, also cut the AWS sessions it allowed (a deny entry in the "
        "permission set's inline policy; for aws_sso_group, in each permission set the group is "
        "assigned); default: true for aws_sso flows, false for aws_sso_group",
    )
    end_sessions_policy: SessionsPolicy | None = Field(
        default=None,
        description="write the deny entries into this customer-managed IAM policy of each account "
        "(which the permission set references) instead of its inline policy",
    )
    remove_unmanaged: bool = Field(
        default=False,
        description="the drift sweep removes assignments of this flow's targets that Keycard "
        "never granted (default: only report them)",
    )
    activity: ActivitySettings | None = Field(
        default=None,
        description="after each grant ends, summarise what was done with it: `cloudtrail` "
        "(aws_sso flows) reads the role session's CloudTrail events (`access.activity`)",
    )

    @field_validator("activity", mode="before")
    @classmethod
    def _activity_source(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value

    @property
    def display(self) -> str:
        return self.label or self.name

    @property
    def review_within(self) -> timedelta:
        """How long a break-glass use waits for its review."""
        return self.break_glass_review_within or BREAK_GLASS_REVIEW_WITHIN

    @property
    def maximum(self) -> timedelta:
        return self.max_duration or max(self.durations)

    @property
    def steps(self) -> list[ApprovalStep]:
        """The approval steps, the shorthand (approvers, approvals_required) as one step."""
        if self.approval_steps:
            return list(self.approval_steps)
        return [ApprovalStep(approvers=self.approvers, count=self.approvals_required)]

    @property
    def approvals_needed(self) -> int:
        return sum(step.count for step in self.steps)

    @property
    def ends_sessions(self) -> bool:
        """end_sessions as it applies: on by default where Keycard can end sessions (aws_sso)."""
        if self.end_sessions is None:
            return self.strategy == "aws_sso"
        return self.end_sessions

    @field_validator("hooks")
    @classmethod
    def _hooks_file(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().endswith(".py"):
            raise ValueError("must name a Python file, such as hooks/prod.py")
        return value.strip() if value else None

    @field_validator("durations")
    @classmethod
    def _distinct(cls, value: list[timedelta]) -> list[timedelta]:
        if len(set(value)) != len(value):
            raise ValueError("lists a duration twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.max_duration is not None:
            too_long = [d for d in self.durations if d > self.max_duration]
            if too_long:
                raise ValueError(
                    f"durations {', '.join(format_duration(d) for d in too_long)} exceed "
                    f"max_duration {format_duration(self.max_duration)}"
                )
        names = [t.name for t in self.targets]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"target names must be unique; repeated: {', '.join(dupes)}")
        if self.approval_steps:
            # By value, not by fields set: a flow frozen into a request carries every default.
            shorthand = [
                key
                for key, unset in (("approvers", Approvers()), ("approvals_required", 1))
                if getattr(self, key) != unset
            ]
            if shorthand:
                raise ValueError(
                    f"approval_steps replaces {' and '.join(shorthand)}: move them into a step "
                    "(approval_steps: [{approvers: ..., count: N}])"
                )
            step_names = [s.name for s in self.approval_steps if s.name]
            dupes = sorted({n for n in step_names if step_names.count(n) > 1})
            if dupes:
                raise ValueError(
                    f"approval step names must be unique; repeated: {', '.join(dupes)}"
                )
        late = [d for d in self.reminders if d >= self.approval_timeout]
        if late:
            raise ValueError(
                f"reminders {', '.join(format_duration(d) for d in late)} come at or after "
                f"approval_timeout {format_duration(self.approval_timeout)}, when the request "
                "has already expired: remind sooner, or raise approval_timeout"
            )
        if len(set(self.reminders)) != len(self.reminders):
            raise ValueError("reminders lists a time twice")
        if (self.escalate_after is None) != (self.escalation is None):
            raise ValueError(
                "escalate_after and escalation go together: escalate_after says when, "
                "escalation.approvers says to whom"
            )
        if self.escalate_after is not None and self.escalate_after >= self.approval_timeout:
            raise ValueError(
                f"escalate_after {format_duration(self.escalate_after)} is at or after "
                f"approval_timeout {format_duration(self.approval_timeout)}, when the request "
                "has already expired: escalate sooner, or raise approval_timeout"
            )
        if self.reason is not None and not self.reason_required:
            raise ValueError(
                "reason sets rules for the reason, but reason_required is false: remove one"
            )
        field_names = [f.name for f in self.fields]
        dupes = sorted({n for n in field_names if field_names.count(n) > 1})
        if dupes:
            raise ValueError(f"field names must be unique; repeated: {', '.join(dupes)}")
        strategy = self.strategy
        if self.end_sessions and not STRATEGIES[strategy].ends_sessions:
            able = " or ".join(n for n, i in STRATEGIES.items() if i.ends_sessions)
            raise ValueError(
                f"end_sessions: true needs strategy {able}; an {strategy} flow's sessions "
                "cannot be ended by Keycard (remove end_sessions from this flow)"
            )
        if self.break_glass_review_within is not None and not self.break_glass:
            raise ValueError(
                "break_glass_review_within says how long a break-glass use waits for its "
                "review, but this flow does not allow break-glass: set break_glass: true, or "
                "remove break_glass_review_within"
            )
        if self.activity is not None and strategy != "aws_sso":
            raise ValueError(
                f"activity: {self.activity.source} needs strategy aws_sso (the Identity Center "
                f"role session of one permission set); an {strategy} flow's calls cannot be told "
                "from others': remove activity from this flow"
            )
        if self.end_sessions_policy is not None and not self.ends_sessions:
            raise ValueError(
                "end_sessions_policy names where ended sessions' deny entries go, but this flow "
                "does not end sessions: set end_sessions: true, or remove end_sessions_policy"
            )
        return self

    def target(self, name: str) -> Target:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(name)


def _flow_model(info: StrategyInfo) -> type[_FlowBase]:
    """A flow of one strategy: the fields every flow has, its targets' model, and its own keys."""
    camel = "".join(part.title() for part in info.name.split("_"))
    return create_model(  # type: ignore[call-overload, no-any-return]
        f"{camel}Flow",
        __base__=_FlowBase,
        __doc__=f"A flow granting {info.summary}.",
        strategy=(Literal[info.name], ...),
        targets=(list[info.target], Field(min_length=1)),  # type: ignore[name-defined]
        **dict(info.flow_fields),
    )


FLOW_MODELS: dict[str, type[_FlowBase]] = {
    name: _flow_model(info) for name, info in STRATEGIES.items()
}


def _strategy_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("strategy")
    return getattr(value, "strategy", None)


# Every strategy's target model, told apart by their keys (each rejects the others' keys). Spelled
# out for type checkers; the assertion keeps it equal to the registry's.
Target = AwsSsoTarget | GroupTarget | SettingsTarget
assert set(Target.__args__) == {info.target for info in STRATEGIES.values()}, (
    "a strategy's target model is missing from config.Target"
)

if TYPE_CHECKING:
    # For type checkers, a flow is what every strategy's flow model has (_FlowBase, with its
    # strategy and targets); the models themselves are built from the registry at import.

    Flow: TypeAlias = _FlowBase
    AwsSsoFlow: TypeAlias = _FlowBase
    AwsSsoGroupFlow: TypeAlias = _FlowBase
    AwsIamGroupFlow: TypeAlias = _FlowBase
else:
    AwsSsoFlow = FLOW_MODELS["aws_sso"]
    AwsSsoGroupFlow = FLOW_MODELS["aws_sso_group"]
    AwsIamGroupFlow = FLOW_MODELS["aws_iam_group"]
    Flow = Annotated[
        Union[tuple(Annotated[model, Tag(name)] for name, model in FLOW_MODELS.items())],  # type: ignore[valid-type]  # noqa: UP007
        Discriminator(
            _strategy_of,
            custom_error_type="unknown_strategy",
            custom_error_message="strategy must be one of " + ", ".join(STRATEGIES),
        ),
    ]
STRATEGY_TAGS = set(STRATEGIES)
