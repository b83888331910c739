"""The messages in and out of workflows and activities: one pydantic model each.

Longer than most modules, on purpose: every shape that crosses a Temporal boundary (and so is
written into histories that must keep replaying) is here, in one file, so a change to any of them
is reviewed in one place and the golden histories (tests/histories/) are the test that catches it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from keycard.config import (
    DEFAULT_AUDIT_DESTINATION,
    ActivitySettings,
    Flow,
    SessionsPolicy,
    Strategy,
    Target,
)
from keycard.durations import Duration, format_duration
from keycard.provenance import ConfigPolicy, PolicyRef
from keycard.redact import scrub

# People are their email, compared without regard to case or stray spaces. Normalised here, where
# every front door's input becomes a message, so no rule ever compares two spellings of one person
# (BOB@EXAMPLE.COM approving after bob@example.com is still one approver).
Email = Annotated[str, AfterValidator(lambda email: email.strip().lower())]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RequestState(StrEnum):
    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"  # approved; access begins at its start_at
    GRANTING = "GRANTING"
    ACTIVE = "ACTIVE"
    REVOKING = "REVOKING"
    ENDED = "ENDED"
    DENIED = "DENIED"
    EXPIRED = "EXPIRED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STATES


FINISHED_STATES = frozenset(
    {
        RequestState.ENDED,
        RequestState.DENIED,
        RequestState.EXPIRED,
        RequestState.CANCELLED,
        RequestState.FAILED,
    }
)


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"  # may act on any request as the approver of last resort, audited as such
    SERVICE = "service"  # may request on behalf of a named user


class Actor(_Message):
    """Who did something: a person (by email) or a rule or hook acting on the flow's behalf."""

    email: Email | None = None
    rule: str | None = Field(default=None, description="the rule or hook, when no person acted")
    role: Role = Role.USER
    via: str = Field(default="cli", description="front door: cli, api, slack, signal, rule")
    slack_user_id: str | None = None
    name: str | None = None

    @property
    def display(self) -> str:
        return self.email or f"rule:{self.rule}"


class Requester(_Message):
    email: Email
    slack_user_id: str | None = None
    name: str | None = None


class AccessRequestInput(_Message):
    """Everything a request needs, frozen at start so editing keycard.yaml changes no live request."""

    request_id: str
    requester: Requester
    flow: Flow
    target: Target
    targets: list[Target] = Field(
        default_factory=list,
        description="every target of a request naming several, `target` first (each its own "
        "lease, approved together); empty: just `target`",
    )
    approver_groups: dict[str, list[str]] = Field(
        default_factory=dict, description="the named groups the flow refers to, as they were"
    )
    duration: Duration
    reason: str = ""
    fields: dict[str, Any] = Field(default_factory=dict)
    start_at: datetime | None = Field(
        default=None, description="access begins then, once approved (not before); None: at once"
    )
    submitted_by: Actor | None = Field(
        default=None, description="a service acting on the requester's behalf, if any"
    )
    via: str = Field(
        default="cli",
        description="the front door the request came through: cli, api, slack, console",
    )
    policy: PolicyRef | None = Field(
        default=None, description="the flow's digest and keycard.yaml's commit (None: before v13)"
    )
    audit_destinations: list[str] = Field(
        default_factory=lambda: [DEFAULT_AUDIT_DESTINATION],
        description="where this request's audit events go, as configured when it started",
    )


# --- decisions: each update (and signal) takes one of these -------------------------------------


class DecisionInput(_Message):
    actor: Actor
    comment: str = ""


class ApproveInput(DecisionInput):
    break_glass: bool = Field(
        default=False,
        description="the requester approves their own request in an emergency; "
        "`comment` is the written justification",
    )


class DenyInput(DecisionInput):
    pass


ReviewFinding = Literal["justified", "unjustified"]


class ReviewInput(DecisionInput):
    """Update/signal `review`: an approver's look at a break-glass use, afterwards."""

    finding: ReviewFinding = Field(
        default="justified",
        description="justified: the emergency was real and the access fit it; unjustified: it "
        "was not (say why in `comment`)",
    )


class BreakGlassReview(_Message):
    by: Actor
    at: datetime
    finding: ReviewFinding
    comment: str = ""


class RevokeInput(DecisionInput):
    pass


class CancelInput(DecisionInput):
    pass


class ExtendInput(DecisionInput):
    duration: Duration = Field(description="how much longer, added to the current expiry")


class RefusedInput(_Message):
    """A decision the workflow's validator turned down, reported back by the front door so the
    attempt is audited (a rejected update leaves no history of its own)."""

    actor: Actor
    decision: Literal["approve", "deny", "cancel", "revoke", "extend", "review"]
    code: str
    reason: str
    comment: str = ""
    duration: Duration | None = Field(default=None, description="for extend: how much was asked")


class Approval(_Message):
    actor: Actor
    at: datetime
    comment: str = ""


class Extension(_Message):
    actor: Actor
    at: datetime
    duration: Duration
    expires_at: datetime


class ApprovalStepView(_Message):
    """One approval step of a request (a flow's approval_steps): who may count toward it, and who
    does. One person counts in one step at most."""

    name: str
    count: int = Field(description="distinct approvers it needs")
    approvers: list[str] = Field(default_factory=list, description="who may approve it, resolved")
    approved_by: list[str] = Field(default_factory=list, description="who counts toward it")

    @property
    def satisfied(self) -> bool:
        return len(self.approved_by) >= self.count


class Ticket(_Message):
    """The ticket a reason names (the flow's `reason.ticket`), with its link when one is set."""

    key: str
    url: str | None = None


TargetState = Literal["waiting", "active", "failed", "ended"]


class TargetStatus(_Message):
    """One target of a request naming several: its own lease, granted and removed on its own."""

    name: str
    label: str
    settings: dict[str, str] = Field(default_factory=dict)
    state: TargetState = "waiting"
    error: str | None = Field(default=None, description="why it was not granted (failed)")
    granted_at: datetime | None = None
    standing: bool = Field(default=False, description="the access existed before Keycard")
    removed: bool | None = Field(
        default=None, description="ended: the access is gone (False: other leases still hold it)"
    )


class ActivityCall(_Message):
    """One call made under a grant, as CloudTrail recorded it."""

    time: datetime
    name: str = Field(description="the API call, e.g. RunInstances")
    service: str = Field(description="the event source, e.g. ec2.amazonaws.com")
    region: str
    read_only: bool | None = None
    error: str | None = Field(default=None, description="the error code, when it failed")


class AccessActivity(_Message):
    """What was done with one ended grant: the CloudTrail management events of the Identity Center
    role session it allowed, from the grant to its end (`access.activity`)."""

    target: str
    source: Literal["cloudtrail"] = "cloudtrail"
    account_id: str
    regions: list[str] = Field(default_factory=list)
    role_session: str = Field(
        default="", description="which calls count: AWSReservedSSO_<permission set>_*/<user>"
    )
    since: datetime = Field(description="the grant")
    until: datetime = Field(description="its end")
    read_at: datetime | None = None
    calls: int = 0
    services: dict[str, int] = Field(default_factory=dict, description="calls by event source")
    writes: int = Field(default=0, description="calls that were not read-only")
    errors: int = Field(default=0, description="calls that failed")
    error_codes: dict[str, int] = Field(default_factory=dict)
    first_call: ActivityCall | None = None
    last_call: ActivityCall | None = None
    after_end: int = Field(
        default=0,
        description="calls of the same session after the grant ended (read up to when it was "
        "read): a session outliving its grant; each should have been denied",
    )
    truncated: bool = Field(
        default=False, description="more events than Keycard reads; the counts are a floor"
    )
    unavailable: str | None = Field(
        default=None, description="why CloudTrail could not be read (the counts are then empty)"
    )

    @classmethod
    def not_read(cls, query: ActivityQuery, why: str) -> AccessActivity:
        """The summary of a grant whose activity could not be read, saying why."""
        return cls(
            target=query.target,
            account_id=query.assignment.spec.account_id or "",
            regions=query.settings.regions,
            since=query.since,
            until=query.until,
            unavailable=why,
        )

    @property
    def line(self) -> str:
        """One line for people: 42 calls (3 writes, 1 error) to ec2, s3; 09:01 to 09:40 UTC."""
        if self.unavailable:
            return f"not read: {self.unavailable}"
        if not self.calls:
            return "no calls" + (f", {self.after_end} after the end" if self.after_end else "")
        services = ", ".join(s.removesuffix(".amazonaws.com") for s in self.services)
        first, last = self.first_call, self.last_call
        span = f"; {first.time:%H:%M} to {last.time:%H:%M} UTC" if first and last else ""
        floor = "at least " if self.truncated else ""
        after = f"; {self.after_end} after the end" if self.after_end else ""
        return (
            f"{floor}{self.calls} call(s) ({self.writes} write(s), {self.errors} error(s)) "
            f"to {services}{span}{after}"
        )


class RequestView(_Message):
    """What the `status` query returns: the whole request as a person would want to see it."""

    id: str
    state: RequestState
    requester: Requester
    submitted_by: Actor | None = None
    flow: str
    flow_label: str
    strategy: Strategy
    target: str
    target_label: str
    target_settings: dict[str, str] = Field(default_factory=dict)
    targets: list[TargetStatus] = Field(
        default_factory=list,
        description="a request naming several targets: each with its own state (empty: the "
        "request has just `target`)",
    )
    duration: Duration
    start_at: datetime | None = Field(
        default=None, description="access begins then once approved (a scheduled start)"
    )
    reason: str
    ticket: Ticket | None = Field(default=None, description="the ticket the reason names")
    policy: PolicyRef | None = Field(
        default=None,
        description="the policy it is decided under: its flow's digest, and the commit and path "
        "of keycard.yaml (requests made before Keycard recorded it have none)",
    )
    fields: dict[str, Any] = Field(default_factory=dict)
    approvals: list[Approval] = Field(default_factory=list)
    approvals_required: int
    approvers: list[str] = Field(default_factory=list, description="who may approve, resolved")
    approval_steps: list[ApprovalStepView] = Field(
        default_factory=list,
        description="the flow's approval steps, each with who counts toward it (empty: any "
        "approvals_required distinct approvers)",
    )
    decided_by: Actor | None = None
    requested_at: datetime
    decided_at: datetime | None = None
    granted_at: datetime | None = None
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    extensions: list[Extension] = Field(default_factory=list)
    standing_access: bool = Field(
        default=False, description="the access existed before Keycard and is left in place"
    )
    break_glass: bool = Field(
        default=False, description="the requester approved their own request; review it"
    )
    review: BreakGlassReview | None = Field(
        default=None, description="a break-glass request's review, once an approver made it"
    )
    review_due: datetime | None = Field(
        default=None,
        description="a break-glass request waits for its review until then (keycard-v14)",
    )
    notes: list[str] = Field(
        default_factory=list,
        description="what the requester should know, such as a hook that failed (fails closed)",
    )
    activity: list[AccessActivity] = Field(
        default_factory=list,
        description="what was done with each ended grant (flows with `activity`), once read",
    )

    def can_still_approve(self, step: ApprovalStepView | None = None) -> list[str]:
        """Who could still approve (toward `step`, when given; nobody for a step already met):
        approvers who have not approved, anywhere, and are not the requester."""
        if step is not None and step.satisfied:
            return []
        done = {a.actor.email.lower() for a in self.approvals if a.actor.email}
        done.add(self.requester.email.lower())
        return [p for p in (step.approvers if step else self.approvers) if p not in done]

    @property
    def targets_label(self) -> str:
        """The target's label, or every target's, for a request naming several."""
        return ", ".join(t.label for t in self.targets) or self.target_label

    @property
    def total_duration(self) -> timedelta:
        """The access asked for and every extension since: what the flow's maximum bounds."""
        return self.duration + sum((e.duration for e in self.extensions), timedelta(0))

    @property
    def summary(self) -> str:
        return summary_line(
            self.requester.email, self.targets_label, self.flow_label, self.duration, self.reason
        )


def summary_line(
    requester: str, target_label: str, flow_label: str, duration: Any, reason: str
) -> str:
    """The one line the Temporal UI shows: alice@example.com → Prod PowerUser, 1h: incident 4312."""
    text = f"{requester} → {flow_label} ({target_label}), {format_duration(duration)}"
    if reason:
        text += f": {reason}"
    return text[:200]


# --- lifecycle events: the audit trail and the notifications both come from these --------------

EventType = Literal[
    "request.created",
    "request.routed",
    "request.pending",  # checked and waiting for people: the cue to ask the approvers
    "request.reminded",  # still pending at one of the flow's reminders: ask the approvers again
    "request.escalated",  # still pending at escalate_after: the escalation approvers join
    "request.approved",
    "request.auto_approved",
    "request.denied",
    "request.expired",
    "request.cancelled",
    "decision.refused",
    "access.scheduled",  # approved with a start_at still ahead: granted then, not before
    "access.granted",
    "access.extended",
    "access.expiring",  # the flow's expiry_warning before access ends
    "access.revoked",
    "access.ended",
    "access.grant_failed",
    "access.revoke_retrying",
    "access.sessions_ended",  # the ended grant's open AWS sessions were cut (end_sessions)
    "access.sessions_not_ended",  # ... or could not be: why, for someone to act on
    "access.activity",  # what was done with the ended grant (the flow's `activity`: CloudTrail)
    "hook.failed",
    "break_glass.used",
    "break_glass.reviewed",  # an approver looked at the emergency afterwards: justified or not
    "break_glass.review_overdue",  # ... or nobody did within the flow's review window
    "drift.found",  # the sweep found access in AWS that Keycard never granted (reported)
    "drift.removed",  # ... or access Keycard granted that no lease holds (removed)
    "config.loaded",  # a worker started with a config unlike the last one it saw (flows changed)
]


# A request naming several targets has one of these per target, its `target` that one; its other
# events are about the whole request.
PER_TARGET_EVENTS: frozenset[str] = frozenset(
    {
        "access.granted",
        "access.grant_failed",
        "access.ended",
        "access.revoked",
        "access.revoke_retrying",
        "access.sessions_ended",
        "access.sessions_not_ended",
        "access.activity",
    }
)


class TargetRef(_Message):
    name: str
    label: str
    strategy: Strategy | Literal["keycard"] = Field(
        description="the target's strategy; `keycard` for Keycard's own config (config.loaded)"
    )
    settings: dict[str, str] = Field(default_factory=dict)


class LifecycleEvent(_Message):
    """One step of one request. `id` is stable, so a consumer can drop a redelivered event."""

    schema_version: Literal[1] = 1
    id: str
    type: EventType
    time: datetime
    request_id: str
    workflow_id: str
    run_id: str
    actor: Actor | None = None
    requester: Requester
    flow: str
    target: TargetRef
    duration: Duration
    reason: str
    fields: dict[str, Any] = Field(default_factory=dict)
    state: RequestState
    detail: dict[str, Any] = Field(default_factory=dict)
    prev_hash: str | None = Field(
        default=None,
        description="the hash of the request's previous event (None: its first, or unchained)",
    )
    hash: str | None = Field(
        default=None,
        description="sha256 of this event's canonical JSON, every field but `hash` "
        "(keycard/audit_chain.py); None: made outside the request, or before keycard-v13",
    )

    @field_validator("reason", mode="after")
    @classmethod
    def _scrub_text(cls, value: str) -> str:
        return scrub(value)

    @field_validator("fields", "detail", mode="after")
    @classmethod
    def _scrub_values(cls, value: dict[str, Any]) -> dict[str, Any]:
        return scrub(value)


class AuditBatch(_Message):
    """Events of one request for one audit destination, in order."""

    destination: str = DEFAULT_AUDIT_DESTINATION
    events: list[LifecycleEvent]


class MessageRef(_Message):
    """A chat message Keycard posted and may edit later (Slack: channel and ts)."""

    kind: str
    channel: str
    ts: str


class Notification(_Message):
    event: LifecycleEvent
    view: RequestView
    messages: list[MessageRef] = Field(default_factory=list)
    flow: Flow | None = Field(
        default=None, description="the flow as frozen at the request's start (channel, buttons)"
    )


class NotificationResult(_Message):
    messages: list[MessageRef] = Field(default_factory=list)


class DeliveryRound(_Message):
    """A request's new events for every delivery lane that keeps up, in one activity.

    `events` are the trail's events from index `first` on. Each audit destination in `audit` gets
    them from its own index; chat gets a notification per event from `notify_from` (None: chat is
    not in this round), with the request as it was at each (`views`, from `notify_from` on).
    """

    first: int
    events: list[LifecycleEvent]
    audit: dict[str, int] = Field(default_factory=dict, description="destination -> next index")
    notify_from: int | None = None
    views: list[RequestView] = Field(default_factory=list)
    messages: list[MessageRef] = Field(default_factory=list)
    flow: Flow | None = None


class LaneOutcome(_Message):
    """How far one lane got in a round: `sent` is its next index; `error` why it stopped short."""

    sent: int
    error: str | None = None


class DeliveryRoundResult(_Message):
    audit: dict[str, LaneOutcome] = Field(default_factory=dict)
    notify: LaneOutcome | None = None
    messages: list[MessageRef] = Field(default_factory=list)


class SlackApproversInput(_Message):
    """Slack user groups (handles or ids) whose members may approve a request."""

    groups: list[str]


class SlackApproversResult(_Message):
    emails: list[str] = Field(default_factory=list)


# --- grants and leases ---------------------------------------------------------------------------


class AssignmentSpec(_Message):
    """What to grant to whom, as written in the flow (names may still need resolving)."""

    strategy: Strategy
    principal_email: str
    account_id: str | None = None
    permission_set: str | None = None
    group: str | None = None
    # Strategies other than AWS's (keycard/strategies.py): the target by name with its settings,
    # and the flow's strategy settings (its http block, its module), secrets as ${VAR} names.
    target: str | None = None
    settings: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class ResolvedAssignment(_Message):
    """The same grant with every name resolved to the ids the cloud API takes."""

    spec: AssignmentSpec
    principal_id: str
    instance_arn: str | None = None
    identity_store_id: str | None = None
    permission_set_arn: str | None = None
    group_id: str | None = None
    resource_id: str | None = Field(
        default=None,
        description="what a non-AWS strategy's resolve named the target (its id in that system)",
    )

    @property
    def grant_key(self) -> str:
        """Identifies the one assignment: a GrantWorkflow per (target, principal). Two flows
        granting the same access to the same person share it, and so share its leases."""
        spec = self.spec
        if spec.strategy == "aws_sso":
            permission_set_id = (self.permission_set_arn or "").rsplit("/", 1)[-1]
            resource = f"{spec.account_id}:{permission_set_id}"
        elif spec.strategy in ("aws_sso_group", "aws_iam_group"):
            resource = self.group_id or spec.group or ""
        else:
            resource = self.resource_id or spec.target or ""
        return f"{spec.strategy}:{resource}:{self.principal_id}"


class ResolveInput(_Message):
    spec: AssignmentSpec


class AcquireLeaseInput(_Message):
    assignment: ResolvedAssignment
    request_id: str
    expires_at: datetime


class LeaseInput(_Message):
    request_id: str
    expires_at: datetime


class LeaseResult(_Message):
    standing: bool = Field(description="the access existed before Keycard; it will not be removed")
    granted_at: datetime


class ReleaseLeaseInput(_Message):
    assignment: ResolvedAssignment
    request_id: str


class ReleaseInput(_Message):
    request_id: str


class SessionScope(_Message):
    """A permission set in an account whose sessions of the person an ended grant allowed."""

    instance_arn: str
    permission_set_arn: str
    account_id: str


class SessionsEnded(_Message):
    """What became of the AWS sessions an ended grant allowed (end_sessions): every session of the
    person in the account issued before `denied_before` is denied by the permission set's inline
    policy, re-provisioned to the account (or by the account's customer-managed `policy_arn`)
    (`ended`), or `error` says why not."""

    ended: bool
    permission_set_arn: str
    account_id: str
    denied_before: datetime
    seconds: float = Field(description="from the removal of the access to the policy in force")
    error: str | None = None
    policy_arn: str | None = Field(
        default=None, description="the customer-managed policy written (None: the inline policy)"
    )
    scopes: list[SessionScope] = Field(
        default_factory=list,
        description="every permission set and account denied (a group's are several; the first "
        "is also in permission_set_arn and account_id)",
    )


class ReleaseResult(_Message):
    removed: bool = Field(description="this was the last lease and the assignment is now gone")
    remaining_leases: int = 0
    standing: bool = False
    pending: bool = Field(default=False, description="removal is still being retried")
    revoke_failures: int = 0
    last_error: str | None = None
    sessions: SessionsEnded | None = Field(
        default=None, description="when the removal ended the access's sessions too"
    )
    grant_key: str | None = Field(default=None, description="the grant that answers")


# Requests and their GrantWorkflow talk by signals: nothing holds a worker slot while the other
# side works, and a signal to a request that no longer exists fails, which tells the grant its
# leaseholder is gone.


class LeaseDropNotice(_Message):
    """What the grant reports, on the request's behalf, if it must drop the request's lease (the
    request was terminated, or cannot be reached): the request's `access.ended` event, made by the
    request, with id `<request>/lease-dropped`, and where its audit events go."""

    event: LifecycleEvent
    destinations: list[str]


class WaitingLease(_Message):
    """A lease the grant is about to make access for: whom `leases.grant` tells, and its end."""

    request_id: str
    duration: Duration
    expires_at: datetime | None = None

    def ends(self, granted_at: datetime) -> datetime:
        """When the lease ends if the access exists from `granted_at`."""
        return self.expires_at or granted_at + self.duration


class LeaseRequest(WaitingLease):
    """Signal `lease.take` (request → grant): hold the assignment for this request.

    The lease runs `duration` from the moment the access exists, or until `expires_at` when that
    is given (a renewal: an extension, or a lease the grant no longer knew)."""

    drop_notice: LeaseDropNotice | None = None
    end_sessions: bool = Field(
        default=False, description="the flow's end_sessions: cut open AWS sessions at the end"
    )
    sessions_policy: SessionsPolicy | None = Field(
        default=None,
        description="the flow's end_sessions_policy: the customer-managed policy that holds the "
        "deny entries (default: the permission set's inline policy)",
    )


class TakeLeaseInput(_Message):
    """leases.take: signal-with-start the assignment's GrantWorkflow with a lease."""

    assignment: ResolvedAssignment
    lease: LeaseRequest


class LeaseReturn(_Message):
    """Signal `lease.return` (request → grant): the request is done with the access."""

    request_id: str


class LeaseGranted(_Message):
    """Signal `lease.granted` (grant → request): the access exists now, until `expires_at`."""

    granted_at: datetime
    expires_at: datetime
    standing: bool = Field(description="the access existed before Keycard; it will not be removed")
    grant_key: str | None = Field(default=None, description="the grant that answers")


class GrantAndTell(_Message):
    """leases.grant: create the access, then tell each waiting request at once (`lease.granted`),
    without waiting for another workflow task of the grant."""

    assignment: ResolvedAssignment
    waiting: list[WaitingLease] = Field(default_factory=list)


class GrantTold(_Message):
    """What leases.grant did: when the access existed, and whom it told. A request in neither
    list was not told (its signal failed for another reason): the grant tells it itself."""

    granted_at: datetime
    told: list[str] = Field(default_factory=list)
    unreachable: list[str] = Field(
        default_factory=list, description="no such request is running: its lease is dropped"
    )


class LeaseFailed(_Message):
    """Signal `lease.failed` (grant → request): the access could not be granted."""

    error: str
    type: str = "GrantFailed"
    grant_key: str | None = Field(default=None, description="the grant that answers")


class GrantView(_Message):
    assignment: ResolvedAssignment
    leases: dict[str, datetime] = Field(
        default_factory=dict, description="granted leases: request id -> when the lease ends"
    )
    waiting: dict[str, LeaseRequest] = Field(
        default_factory=dict, description="leases taken but not granted yet"
    )
    returning: list[str] = Field(
        default_factory=list, description="requests that returned their lease, awaiting the outcome"
    )
    drop_notices: dict[str, LeaseDropNotice] = Field(
        default_factory=dict, description="per lease: what to audit if it must be dropped"
    )
    assigned: bool = Field(
        default=False, description="the access exists (or a removal of it has not finished)"
    )
    assigned_at: datetime | None = None
    standing: bool | None = None
    error: str | None = None
    revoke_failures: int = 0
    end_sessions: bool = Field(
        default=False, description="a lease held since the access was made asked to end sessions"
    )
    sessions_policy: SessionsPolicy | None = Field(
        default=None, description="where that lease's flow keeps deny entries (None: inline)"
    )
    no_grant_before: datetime | None = Field(
        default=None,
        description="sessions issued before this are denied: the access is not made again sooner",
    )
    reconciling: list[LeaseDropNotice] = Field(
        default_factory=list, description="drift.removed events to audit once the removal is done"
    )


class Reconcile(_Message):
    """Signal `grant.reconcile` (drift sweep → grant): the access exists in AWS and no lease holds
    it; remove it (unless a lease or standing access holds it by now) and audit `notice`."""

    notice: LeaseDropNotice
    end_sessions: bool = False
    sessions_policy: SessionsPolicy | None = None


class ReconcileInput(_Message):
    """drift.reconcile: signal-with-start the assignment's GrantWorkflow with a Reconcile."""

    assignment: ResolvedAssignment
    reconcile: Reconcile


# --- the drift sweep: AWS compared with the grants Keycard holds ---------------------------------


class DriftTarget(_Message):
    flow: str
    target: TargetRef
    account_id: str
    permission_set: str
    max_duration: Duration = Field(description="the flow's longest access (drift events' duration)")
    remove_unmanaged: bool = False
    end_sessions: bool = False
    sessions_policy: SessionsPolicy | None = None


class ConfigLoaded(_Message):
    """A worker's word, at its start, of the config it loaded (workflows/config.py)."""

    policy: ConfigPolicy
    worker: str = Field(description="the worker's Temporal identity (pid@host)")
    audit_destinations: list[str] = Field(default_factory=list)
    longest_access: Duration = Field(
        description="the longest access any flow of it allows (the event's `duration`)"
    )


class ConfigHistoryInput(_Message):
    """Where the task queue's ConfigWorkflow stands, carried across continue-as-new."""

    task_queue: str
    last: ConfigLoaded | None = None
    events: int = Field(default=0, description="config.loaded events so far (their ids' numbers)")
    last_hash: str | None = Field(default=None, description="the last event's, for the chain")
    continue_after: int = Field(
        default=1000, ge=1, description="loads per run before it continues as new"
    )
    pending: list[ConfigLoaded] = Field(
        default_factory=list, description="loads heard but not yet handled, for the next run"
    )


class ActivityQuery(_Message):
    """aws.activity: read what was done with one ended grant (activities/aws_activity.py)."""

    target: str
    assignment: ResolvedAssignment
    settings: ActivitySettings
    since: datetime
    until: datetime


class DriftSweepInput(_Message):
    targets: list[DriftTarget]
    audit_destinations: list[str] = Field(default_factory=list)


class DriftFinding(_Message):
    """One assignment in AWS no lease of Keycard's holds."""

    kind: Literal["orphan", "unmanaged"] = Field(
        description="orphan: Keycard granted it (a lost revoke, a hand-made copy); "
        "unmanaged: Keycard never granted it"
    )
    action: Literal["removed", "reported"]
    flow: str
    target: str
    account_id: str
    permission_set: str
    permission_set_arn: str
    instance_arn: str
    principal_type: str
    principal_id: str
    principal_email: str | None = None
    why: str


class DriftReport(_Message):
    started_at: datetime
    finished_at: datetime | None = None
    targets: int = 0
    assignments: int = Field(default=0, description="assignments seen in AWS")
    held: int = Field(default=0, description="held by a lease, or standing access Keycard keeps")
    findings: list[DriftFinding] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="targets that could not be read")
    instance_arn: str | None = None


# --- ending sessions: one SessionPolicyWorkflow per permission set writes its inline policy -----


class EndSessions(_Message):
    """Signal `sessions.end` (grant → the permission set's SessionPolicyWorkflow): deny this
    person's sessions in this account issued before `denied_before`; answer `reply_to` with
    `sessions.ended` (SessionsAnswer) once the policy is in force in the account."""

    token: str
    reply_to: str = Field(description="the workflow id to answer")
    user_id: str
    account_id: str
    denied_before: datetime
    permission_set_arn: str | None = Field(
        default=None,
        description="whose sessions (a customer-managed policy's writer serves several)",
    )


class EndSessionsInput(_Message):
    """sessions.request_end: signal-with-start the writer of the deny entries: the permission
    set's SessionPolicyWorkflow, or the customer-managed policy's when the flow names one."""

    instance_arn: str
    permission_set_arn: str
    request: EndSessions
    policy: SessionsPolicy | None = None


class SessionsAnswer(_Message):
    """Signal `sessions.ended` (SessionPolicyWorkflow → grant)."""

    token: str
    error: str | None = None


class SessionPolicyWrite(_Message):
    """aws_sso.end_sessions / aws_sso.prune_sessions: one read-modify-write of the inline policy,
    then provisioning to the accounts it changed for, waited on until AWS reports success."""

    instance_arn: str
    permission_set_arn: str
    revocations: list[EndSessions] = Field(default_factory=list)
    session_duration: Duration | None = Field(
        default=None, description="the longest session duration the writer has seen"
    )
    policy: SessionsPolicy | None = Field(
        default=None, description="the customer-managed policy written (None: the inline policy)"
    )
    permission_sets: list[str] = Field(
        default_factory=list, description="every permission set whose sessions the writer denied"
    )
    accounts: list[str] = Field(
        default_factory=list, description="a customer-managed policy's accounts holding entries"
    )


class SessionPolicyResult(_Message):
    session_duration: Duration = Field(description="the permission set's, as AWS says now")
    denied: dict[str, datetime] = Field(
        default_factory=dict,
        description="'<user id>:<account id>[:<permission set>]' -> denied before, as written",
    )
    provisioned: list[str] = Field(default_factory=list, description="accounts provisioned")
    accounts: list[str] | None = Field(
        default=None,
        description="a customer-managed policy's: the accounts whose copy holds entries",
    )


class SessionPolicyView(_Message):
    instance_arn: str
    permission_set_arn: str
    waiting: list[EndSessions] = Field(default_factory=list)
    denied: dict[str, datetime] = Field(default_factory=dict)
    session_duration: Duration | None = None
    error: str | None = None
    writes: int = 0
    policy: SessionsPolicy | None = None
    permission_sets: list[str] = Field(default_factory=list)
    accounts: list[str] = Field(
        default_factory=list, description="a customer-managed policy's accounts holding entries"
    )


class SessionPolicyInput(_Message):
    instance_arn: str
    permission_set_arn: str
    policy: SessionsPolicy | None = None
    carried: SessionPolicyView | None = Field(
        default=None, description="state kept across continue-as-new"
    )


class GrantInput(_Message):
    assignment: ResolvedAssignment
    carried: GrantView | None = Field(default=None, description="state kept across continue-as-new")


class AccessRequestState(_Message):
    """All of an AccessRequestWorkflow's state, in one model (it could be continued-as-new)."""

    input: AccessRequestInput
    view: RequestView
    assignment: ResolvedAssignment | None = None
    resolved: bool = False
    failure_type: str | None = None
    refused_at_start: bool = Field(
        default=False, description="its approval could never be met: the ask itself fails"
    )
    revoked_by: RevokeInput | None = None
    lease_expires_at: datetime | None = None
    lease_by_signal: bool = Field(
        default=False, description="the lease was taken by signal (no activity waits on the grant)"
    )
    granted: LeaseGranted | None = Field(default=None, description="the grant's latest word")
    grant_failed: LeaseFailed | None = None
    returns: list[ReleaseResult] = Field(
        default_factory=list, description="the grant's answers to the lease's return, in order"
    )
    # A request naming several targets (keycard-v11): one lease per target, each by grant key.
    assignments: dict[str, ResolvedAssignment] = Field(
        default_factory=dict, description="target name -> its assignment, once resolved"
    )
    granted_by: dict[str, LeaseGranted] = Field(default_factory=dict)
    failed_by: dict[str, LeaseFailed] = Field(default_factory=dict)
    returns_by: dict[str, list[ReleaseResult]] = Field(default_factory=dict)
    lease_ends: dict[str, datetime] = Field(
        default_factory=dict, description="each granted lease's end, as the request last set it"
    )
    event_seq: int = 0
    waits_cancelled: str | None = Field(
        default=None,
        description="why an ended request waits no more for its activity or its break-glass "
        "review (cancelled through Temporal)",
    )
    last_hash: str | None = Field(default=None, description="the latest event's, for the chain")
    outbox: list[LifecycleEvent] = Field(default_factory=list)
    views: list[RequestView] = Field(
        default_factory=list, description="the request as it was at each event, for messages"
    )
    audit_sent: dict[str, int] = Field(
        default_factory=dict, description="per audit destination: how many events it has"
    )
    notified: int = 0
    lagging: list[str] = Field(
        default_factory=list,
        description="delivery lanes that failed in a round and catch up alone (delivery-rounds)",
    )
    hooks_evaluated: bool = Field(
        default=False, description="on_request hooks and auto-approval rules have had their say"
    )
    observed: int = Field(default=0, description="events handed to the after_* hooks")
    messages: list[MessageRef] = Field(default_factory=list)
    approver_lookup_error: str | None = Field(
        default=None, description="why the flow's Slack user groups could not be looked up"
    )
    expiry_warned_for: datetime | None = Field(
        default=None, description="the expiry the requester was last warned about"
    )
