"""The parts of a flow in keycard.yaml: who may ask and approve (in steps, with escalation), what a
reason and its fields must say, how sessions end, and the rules that decide on their own; and
whether a flow's steps can ever be met."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, Self, TypeAlias

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from keycard import approvals
from keycard.durations import Duration
from keycard.schema import (
    Email,
    Name,
    _Strict,
)
from keycard.strategies import (
    STRATEGIES,
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


class ActivitySettings(_Strict):
    """`activity`: after a grant ends, summarise what was done with it (`access.activity`).

    `cloudtrail` reads the CloudTrail management events of the Identity Center role session the
    grant allowed (the permission set's `AWSReservedSSO_<name>_*` role, the person's session)
    through `LookupEvents`, once CloudTrail has had `delay` to deliver them: how many calls, to
    which services, how many wrote or failed, the first and the last, and any made after the grant
    ended. `activity: cloudtrail` is short for `{source: cloudtrail}`."""

    source: Literal["cloudtrail"] = "cloudtrail"
    regions: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="the regions whose CloudTrail to read (LookupEvents is per region; IAM and "
        "other global services log to us-east-1); default: aws.region",
    )
    role: str | None = Field(
        default=None,
        pattern=r"^[\w+=,.@/-]{1,64}$",
        description="an IAM role Keycard assumes in the target's account to call "
        "cloudtrail:LookupEvents (default: the worker's own credentials, which see only the "
        "account they belong to)",
    )
    delay: Duration = Field(
        default=timedelta(minutes=15),
        description="how long after the grant ends to read: CloudTrail delivers management "
        "events within about 5 minutes, and rarely up to 15",
    )

    def role_arn(self, account_id: str, partition: str = "aws") -> str | None:
        if self.role is None:
            return None
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
