"""The keycard.yaml schema (flows, targets, approvers) and its loader, with located error messages."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeAlias, Union

import yaml
from pydantic import (
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from keycard import approvals
from keycard.durations import Duration, format_duration
from keycard.schema import (  # noqa: F401 (re-exported: the names every config user knows)
    EMAIL_PATTERN,
    ENV_REF_PATTERN,
    NAME_PATTERN,
    PERMISSION_SET_ARN,
    Email,
    EnvRef,
    Name,
    _email,
    _Strict,
)
from keycard.strategies import (  # noqa: F401 (re-exported)
    STRATEGIES,
    AwsSsoTarget,
    GroupTarget,
    HttpOptions,
    SettingsTarget,
    StrategyInfo,
    TargetBase,
    _TargetBase,
)

# --- ending sessions ---------------------------------------------------------------------------


class SessionsPolicy(_Strict):
    """`end_sessions_policy`: write a flow's deny entries into a customer-managed IAM policy in each
    account instead of the permission set's inline policy.

    The permission set attaches the policy by name (a customer-managed policy reference), so the
    policy exists in every account the permission set is provisioned to; Keycard assumes `role` in
    the account of each ended grant and writes a new default version of the policy. Nothing is
    re-provisioned, and each account's policy holds only that account's entries."""

    name: str = Field(
        pattern=r"^[\w+=,.@-]{1,128}$", description="the IAM policy's name in each account"
    )
    path: str = Field(
        default="/",
        pattern=r"^/([\x21-\x7e]{0,510}/)?$",
        description="the IAM policy's path, as in the permission set's reference",
    )
    role: str = Field(
        pattern=r"^[\w+=,.@/-]{1,64}$",
        description="the IAM role Keycard assumes in each account to write the policy "
        "(iam:GetPolicy, iam:GetPolicyVersion, iam:ListPolicyVersions, iam:CreatePolicyVersion, "
        "iam:DeletePolicyVersion on it)",
    )

    def policy_arn(self, account_id: str, partition: str = "aws") -> str:
        return f"arn:{partition}:iam::{account_id}:policy{self.path}{self.name}"

    def role_arn(self, account_id: str, partition: str = "aws") -> str:
        return f"arn:{partition}:iam::{account_id}:role/{self.role.strip('/')}"


# Every strategy's name (keycard/strategies.py: the registry this schema is built from).
if TYPE_CHECKING:
    Strategy: TypeAlias = str  # one of STRATEGIES
else:
    Strategy = Literal[tuple(STRATEGIES)]


# --- prompt fields ----------------------------------------------------------------------------


class PromptField(_Strict):
    """An extra question on the request form, such as an incident number."""

    name: Name
    label: str = ""
    type: Literal["string", "int", "bool", "choice", "user"] = "string"
    required: bool = False
    choices: list[str] = Field(default_factory=list, description="for type choice")
    description: str = ""

    @model_validator(mode="after")
    def _choices(self) -> Self:
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice field needs a non-empty `choices` list")
        if self.type != "choice" and self.choices:
            raise ValueError(f"`choices` only applies to type choice, not {self.type}")
        return self


class Approvers(_Strict):
    """Who may approve: email addresses, names of groups from `approver_groups`, and Slack user
    groups (`sre-leads` for @sre-leads), whose members are looked up when a request starts."""

    users: list[Email] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)
    slack_groups: list[str] = Field(
        default_factory=list, description="Slack user group handles (sre-leads) or ids (S0123)"
    )

    @field_validator("slack_groups")
    @classmethod
    def _handles(cls, value: list[str]) -> list[str]:
        handles = [x.strip().removeprefix("@") for x in value]
        if not all(handles):
            raise ValueError("a Slack user group needs a handle, e.g. sre-leads")
        return handles


class ApprovalStep(_Strict):
    """One step of an AND: `count` distinct approvers of its own, from its `approvers`."""

    name: Name | None = Field(default=None, description="shown on the request; default step-N")
    approvers: Approvers
    count: int = Field(default=1, ge=1, le=10)


class Escalation(_Strict):
    """Backup approvers, added to a request still pending `escalate_after` it was made."""

    approvers: Approvers

    @model_validator(mode="after")
    def _names_someone(self) -> Self:
        who = self.approvers
        if not (who.users or who.groups or who.slack_groups):
            raise ValueError("escalation.approvers names nobody: add users, groups or slack_groups")
        return self


class Requesters(_Strict):
    """Who may request a flow; left out, everyone may."""

    users: list[Email] = Field(default_factory=list)
    groups: list[str] = Field(default_factory=list)


class TicketPolicy(_Strict):
    """A ticket the reason must name (a Jira key, an incident number), and where it lives."""

    pattern: str = Field(
        description="a regular expression the reason must contain, e.g. '[A-Z][A-Z0-9]+-[0-9]+'"
    )
    url: str | None = Field(
        default=None,
        description="the ticket's link, with {ticket} where the key goes, e.g. "
        "https://example.atlassian.net/browse/{ticket}",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _regex(value)

    @field_validator("url")
    @classmethod
    def _placeholder(cls, value: str | None) -> str | None:
        if value is not None and "{ticket}" not in value:
            raise ValueError(
                "needs {ticket} where the ticket's key goes, e.g. "
                "https://example.atlassian.net/browse/{ticket}"
            )
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value


class ReasonPolicy(_Strict):
    """What a reason must say. Each rule is checked wherever a request is made (Slack, API, CLI,
    console, Python), and a refusal says which rule the reason missed."""

    min_length: int = Field(default=0, ge=0, le=1000, description="at least this many characters")
    pattern: str | None = Field(
        default=None,
        description="a regular expression the reason must contain (anchor it with ^ and $ to "
        "match the whole reason)",
    )
    ticket: TicketPolicy | None = None
    hint: str = Field(
        default="",
        max_length=150,
        description="what a good reason looks like, shown on the form and with every refusal",
    )

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        return _regex(value) if value is not None else None


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"{value!r} is not a valid regular expression: {exc}") from None
    return value


# --- automatic decisions -------------------------------------------------------------------------


class PagerDutyOnCall(_Strict):
    """Approve when the requester is on call now, in any of these schedules or escalation
    policies (PagerDuty ids such as PABC123); with neither listed, on call anywhere counts."""

    schedules: list[str] = Field(default_factory=list)
    escalation_policies: list[str] = Field(default_factory=list)


class AutoApprove(_Strict):
    """Rules that approve a request without a person, and the cap on what they may approve."""

    pagerduty_on_call: PagerDutyOnCall | None = None
    max_duration: Duration | None = Field(
        default=None,
        description="the longest request any automatic approval (rule or hook) may approve; "
        "longer ones wait for people",
    )

    @property
    def rules(self) -> list[str]:
        return ["pagerduty_on_call"] if self.pagerduty_on_call else []


class FlowSlack(_Strict):
    """Where a flow's approval requests go in Slack; without a channel, to each approver's DMs."""

    channel: str | None = Field(default=None, description="e.g. #prod-access or a channel id")
    security_channel: str | None = Field(
        default=None,
        description="where break-glass use is announced too (e.g. #security); the flow's channel "
        "always hears it",
    )


# --- flows ------------------------------------------------------------------------------------


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

    @property
    def display(self) -> str:
        return self.label or self.name

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


class AwsSettings(_Strict):
    """Where Identity Center lives. Credentials and endpoint come from the usual AWS settings."""

    region: str | None = Field(default=None, description="default: AWS_REGION / AWS profile")
    sso_instance_arn: str | None = Field(default=None, description="default: the only instance")
    identity_store_id: str | None = Field(default=None, description="default: the instance's")


# --- the HTTP API ------------------------------------------------------------------------------

TOKEN_HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


class ApiToken(_Strict):
    """One bearer token of the HTTP API. Only its hash is written here; `keycard token create`
    prints a new token once, with the line to paste."""

    hash: str = Field(description="sha256:<64 hex digits> of the token, never the token itself")
    email: str = Field(description="who the token acts as")
    role: Literal["user", "admin", "service"] = Field(
        default="user",
        description="user; admin (approver of last resort); service (requests for a named user)",
    )
    name: str = Field(default="", description="what the token is for, e.g. ci-deploy")

    @field_validator("hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("kc_"):
            raise ValueError(
                "this is a token, not its hash: never write tokens in keycard.yaml; "
                "paste the hash line `keycard token create` printed"
            )
        if not TOKEN_HASH_PATTERN.match(value):
            raise ValueError("must be sha256: followed by 64 lower-case hex digits")
        return value

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return _email(value)


class ApiSettings(_Strict):
    """The HTTP API's bearer tokens (hashes only), and who is an admin when signed in to the web
    console with single sign-on (a token carries its own role)."""

    tokens: list[ApiToken] = Field(default_factory=list)
    admins: list[Email] = Field(
        default_factory=list, description="people who are admins when they sign in with SSO"
    )

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, value: list[ApiToken]) -> list[ApiToken]:
        hashes = [t.hash for t in value]
        if len(set(hashes)) != len(hashes):
            raise ValueError("the same token hash is listed twice")
        return value


# --- audit: where lifecycle events are delivered --------------------------------------------

DEFAULT_AUDIT_DESTINATION = "default"


class _AuditDestinationBase(_Strict):
    name: Name | None = Field(
        default=None, description="identifies the destination in requests (default: its type)"
    )

    @property
    def key(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]


class JsonlDestination(_AuditDestinationBase):
    """One JSON object per line, appended to a local file."""

    type: Literal["jsonl"]
    path: str | None = Field(
        default=None, description="default: $KEYCARD_AUDIT_JSONL or <state dir>/audit.jsonl"
    )


class StdoutDestination(_AuditDestinationBase):
    """One structlog JSON line per event on the worker's standard output."""

    type: Literal["stdout"]


class _AwsDestination(_AuditDestinationBase):
    region: str | None = Field(default=None, description="default: aws.region, then AWS_REGION")
    endpoint_url: str | None = Field(
        default=None, description="for a local stand-in such as moto; default: AWS_ENDPOINT_URL"
    )


class FirehoseDestination(_AwsDestination):
    """Amazon Data Firehose (PutRecordBatch); each record is one JSON line."""

    type: Literal["kinesis_firehose"]
    delivery_stream: str = Field(min_length=1)


class KinesisDestination(_AwsDestination):
    """A Kinesis data stream (PutRecords), partitioned by request so a request's events share a shard."""

    type: Literal["kinesis"]
    stream: str = Field(min_length=1)


class S3Destination(_AwsDestination):
    """JSONL objects under `<prefix>YYYY/MM/DD/`, one per delivered batch, with keys that a
    redelivery overwrites rather than duplicates."""

    type: Literal["s3"]
    bucket: str = Field(min_length=1)
    prefix: str = "keycard/audit/"


class HttpDestination(_AuditDestinationBase):
    """POST JSON to a URL: a log intake (Datadog, Splunk HEC, ...) or any SIEM webhook."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://", description="query parameters may carry e.g. ddsource")
    headers: dict[str, EnvRef] = Field(
        default_factory=dict, description="header values are environment references: ${API_KEY}"
    )
    batch: bool = Field(default=True, description="POST a JSON array per batch; false: one object")
    max_batch: int = Field(default=100, ge=1, le=1000)
    timeout: Duration = Field(default=timedelta(seconds=10))


AuditDestination = Annotated[
    JsonlDestination
    | StdoutDestination
    | FirehoseDestination
    | KinesisDestination
    | S3Destination
    | HttpDestination,
    Field(discriminator="type"),
]


AUDIT_TYPES = {"jsonl", "stdout", "kinesis_firehose", "kinesis", "s3", "http"}


class AuditConfig(_Strict):
    """Where the audit trail goes. Left out, events go to the worker's own log (`default`): the
    stdout stream, or .keycard/audit.jsonl under `keycard dev`. Each destination is delivered on
    its own, so one that is down delays only itself."""

    destinations: list[AuditDestination] | None = None

    @model_validator(mode="after")
    def _unique(self) -> Self:
        keys = [d.key for d in self.destinations or []]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(
                f"audit destination names must be unique (give each a `name`); repeated: "
                f"{', '.join(dupes)}"
            )
        return self

    @property
    def destination_names(self) -> list[str]:
        """What a new request snapshots: it is delivered to exactly these, whatever changes later."""
        if self.destinations is None:
            return [DEFAULT_AUDIT_DESTINATION]
        return [d.key for d in self.destinations]


class DriftSettings(_Strict):
    """The drift sweep: AWS compared with the grants Keycard holds, on a Temporal Schedule."""

    every: Duration | None = Field(
        default=timedelta(minutes=15),
        description="how often the sweep runs (at least 1m); null: never (the schedule is removed)",
    )

    @field_validator("every")
    @classmethod
    def _not_too_often(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(minutes=1):
            raise ValueError("must be at least 1m: each sweep lists every target's assignments")
        return value


def step_people(flow: Any, approver_groups: dict[str, list[str]]) -> list[approvals.Step]:
    """The flow's approval steps as people (Slack user groups are looked up per request)."""
    steps = flow.steps
    return [
        approvals.Step(
            name=step.name or (f"step-{n}" if len(steps) > 1 else "approval"),
            count=step.count,
            approvers=approvals.expand(
                step.approvers.users, step.approvers.groups, approver_groups
            ),
        )
        for n, step in enumerate(steps, start=1)
    ]


def _need(step: approvals.Step, multi: bool) -> str:
    people = f"{step.count} approver{'s' if step.count > 1 else ''}"
    return f"step {step.name} needs {people} of its own" if multi else f"needs {people}"


def unmeetable(flow: Any, approver_groups: dict[str, list[str]]) -> str | None:
    """Why the flow's approval steps can never be met (for anyone, or when one of its own
    approvers asks with self-approval off), or None. Flows whose approvers come from Slack user
    groups or a hooks file are checked when each request starts, once the approvers are known;
    a step that names nobody is left to admins, as it always was."""
    backup = flow.escalation.approvers if flow.escalation else None
    if flow.hooks or any(step.approvers.slack_groups for step in flow.steps):
        return None
    if backup is not None and backup.slack_groups:
        return None
    steps = step_people(flow, approver_groups)
    if backup is not None:  # escalation adds them to every step still open
        extra = approvals.expand(backup.users, backup.groups, approver_groups)
        steps = [
            approvals.Step(s.name, s.count, list(dict.fromkeys([*s.approvers, *extra])))
            for s in steps
        ]
    if any(not step.approvers for step in steps):
        return None  # a step that names nobody is for admins (or rules, or break-glass) to decide
    multi = len(steps) > 1
    everyone = list(dict.fromkeys(p for step in steps for p in step.approvers))
    short = approvals.shortfall(steps, everyone)
    if short is not None:
        step, found = short
        return (
            f"can never be approved: {_need(step, multi)} and only {found} can count toward it "
            f"({', '.join(step.approvers) or 'nobody is named'}); name more approvers, or ask "
            "for fewer"
        )
    if flow.allow_self_approval:
        return None
    requesters = (
        None
        if flow.requesters is None
        else set(approvals.expand(flow.requesters.users, flow.requesters.groups, approver_groups))
    )
    for person in everyone:
        if requesters is not None and person not in requesters:
            continue
        short = approvals.shortfall(steps, [p for p in everyone if p != person])
        if short is not None:
            step, found = short
            return (
                f"can never be approved when {person} asks (self-approval is off): "
                f"{_need(step, multi)} and only {found} besides them can count toward it; name "
                f"another approver, or leave {person} out of the flow's requesters"
            )
    return None


class KeycardConfig(_Strict):
    """The whole keycard.yaml: reviewed like code, loaded once per process."""

    version: Literal[1] = 1
    aws: AwsSettings = Field(default_factory=AwsSettings)
    audit: AuditConfig = Field(default_factory=AuditConfig)
    approver_groups: dict[str, list[Email]] = Field(
        default_factory=dict, description="named groups of approver emails"
    )
    flows: list[Flow] = Field(min_length=1)
    api: ApiSettings = Field(default_factory=ApiSettings, description="the HTTP API's tokens")
    drift: DriftSettings = Field(default_factory=DriftSettings)
    allow_hooks_outside_config_dir: bool = Field(
        default=False,
        description="let flows' `hooks` name files outside this file's directory (off: a review "
        "of this directory then covers every line of code the worker runs for a flow)",
    )
    # Where the file was loaded from: flows' `hooks` paths are relative to it.
    _base_dir: Path | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path:
        return self._base_dir or Path(".")

    @property
    def uses_aws(self) -> bool:
        """Whether any flow grants AWS access, and so needs an AWS region and credentials."""
        return any(STRATEGIES[flow.strategy].aws for flow in self.flows)

    @model_validator(mode="after")
    def _references(self) -> Self:
        names = [f.name for f in self.flows]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"flow names must be unique; repeated: {', '.join(dupes)}")
        for index, flow in enumerate(self.flows):
            backups = flow.escalation.approvers if flow.escalation else None
            for who in (*(step.approvers for step in flow.steps), backups, flow.requesters):
                for group in who.groups if who else []:
                    if group not in self.approver_groups:
                        known = ", ".join(sorted(self.approver_groups)) or "none defined"
                        raise ValueError(
                            f"flows[{index}] ({flow.name}) names group {group!r}, which is not "
                            f"in approver_groups (known: {known})"
                        )
            problem = unmeetable(flow, self.approver_groups)
            if problem:
                raise ValueError(f"flows[{index}] ({flow.name}) {problem}")
        return self

    def flow(self, name: str) -> Flow:
        for flow in self.flows:
            if flow.name == name:
                return flow
        raise KeyError(name)


# --- loading and error reporting -----------------------------------------------------------


class ConfigError(Exception):
    """keycard.yaml is unreadable or invalid; `problems` holds one located line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source} is not a valid Keycard config:\n" + "\n".join(problems))


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    previous: int | str | None = None
    for part in loc:
        tag = previous is not None and isinstance(previous, int)  # a list item's union tag
        previous = part
        if isinstance(part, int):
            text += f"[{part}]"
        elif (tag and (part in STRATEGY_TAGS or part in AUDIT_TYPES)) or part.startswith(
            "function-"
        ):
            continue  # the union's tag, not a key the author wrote (`http` may be both)
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


def describe_errors(error: ValidationError) -> list[str]:
    """One line per problem, `flows[1].targets[0].account_id: must be 12 digits`."""
    lines = []
    for item in error.errors(include_url=False):
        message = item["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            message = message.removeprefix(prefix)
        if item["type"] == "extra_forbidden":
            message = "is not a known setting (check the spelling)"
        elif item["type"] == "missing":
            message = "is required"
        elif item["type"] == "string_pattern_mismatch" and item["ctx"]["pattern"] == NAME_PATTERN:
            message = "must be lower-case letters, digits, - or _ (at most 63), e.g. prod-admin"
        where = _location(item["loc"])
        # A whole-file check about one flow names it first ("flows[1] (prod-admin) ..."): that
        # is where the problem is, rather than the top level.
        about_a_flow = re.match(r"(flows\[\d+\] \([^)]*\)) (.*)", message, re.DOTALL)
        if not item["loc"] and about_a_flow:
            where, message = about_a_flow.groups()
        line = f"{where}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (safe_load keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice here", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_config(text: str, source: str = "keycard.yaml") -> KeycardConfig:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"{where}not valid YAML: {problem}"]) from exc
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping with a `flows` list"])
    try:
        return KeycardConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, describe_errors(exc)) from exc


def load_config(path: str | os.PathLike[str]) -> KeycardConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read the file: {exc.strerror}"]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path),
            [
                f"byte {exc.start + 1}: not UTF-8 text (0x{exc.object[exc.start]:02x}); "
                "save the file as UTF-8"
            ],
        ) from None
    config = parse_config(text, str(path))
    config._base_dir = path.parent
    problems = outside_hook_files(config, path.parent) + missing_hook_files(config, path.parent)
    if problems:
        raise ConfigError(str(path), problems)
    return config


def _code_files(config: KeycardConfig) -> list[tuple[int, str, str]]:
    """(flow index, key, path) of every Python file a flow names: its `hooks`, and a custom
    strategy's `module`."""
    files = []
    for index, flow in enumerate(config.flows):
        if flow.hooks:
            files.append((index, "hooks", flow.hooks))
        module = getattr(flow, "module", None)
        if module:
            files.append((index, "module", module))
    return files


def outside_hook_files(config: KeycardConfig, base_dir: Path) -> list[str]:
    """Flows whose `hooks` or `module` file lies outside the config's directory, unless that is
    allowed."""
    if config.allow_hooks_outside_config_dir:
        return []
    root = base_dir.resolve()
    return [
        f"flows[{index}].{key}: {path} is outside {root}; keep code files beside "
        "keycard.yaml (reviewed with it), or set allow_hooks_outside_config_dir: true"
        for index, key, path in _code_files(config)
        if not (base_dir / path).resolve().is_relative_to(root)
    ]


def unset_environment(config: KeycardConfig, environ: Mapping[str, str] | None = None) -> list[str]:
    """One located line per `${VAR}` the config names that is not set (or empty) in `environ`:
    the worker cannot start without them."""
    environ = os.environ if environ is None else environ
    problems = []
    for index, destination in enumerate(config.audit.destinations or []):
        for header, ref in getattr(destination, "headers", {}).items():
            if not environ.get(ref.env):
                problems.append(
                    f"audit.destinations[{index}].headers.{header}: ${{{ref.env}}} is not set "
                    "in this environment; set it where the worker runs"
                )
    return problems


def missing_hook_files(config: KeycardConfig, base_dir: Path) -> list[str]:
    """One located line per `hooks` or `module` file that is not there (relative to base_dir)."""
    return [
        f"flows[{index}].{key}: {path} does not exist (looked in {base_dir / path})"
        for index, key, path in _code_files(config)
        if not (base_dir / path).is_file()
    ]


def default_config_path() -> Path:
    return Path(os.environ.get("KEYCARD_CONFIG", "keycard.yaml"))


def json_schema() -> str:
    schema = KeycardConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Keycard flows (keycard.yaml)"
    return json.dumps(schema, indent=2)
