"""Pure rules: what may be requested, who may decide, and which transitions are legal.

Every front door and the workflow's update validators call these same functions, so a rule is
written once and a refusal reads the same in Slack, the API and the CLI. Longer than most
modules on purpose: a reviewer (or an auditor) reads every rule Keycard enforces here, in one file.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from keycard.approvals import Step, assign, expand, met, shortfall, still_needed
from keycard.config import (
    Flow,
    KeycardConfig,
    PromptField,
    Target,
    step_people,
)
from keycard.durations import format_duration, parse_duration
from keycard.models import (
    Actor,
    Approval,
    ApprovalStepView,
    RequestState,
    RequestView,
    Role,
    Ticket,
)
from keycard.redact import scrub_text


class Refusal(StrEnum):
    """Why something was refused; front doors map these to HTTP statuses and Slack wording."""

    INVALID = "invalid"  # the input itself is wrong (unknown flow, duration not allowed, ...)
    FORBIDDEN = "forbidden"  # this person may not do this
    CONFLICT = "conflict"  # not in this state


class PolicyError(Exception):
    """A rule said no. `code` is stable (callers match on it); the message is for people."""

    def __init__(self, code: str, message: str, kind: Refusal):
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.message = message


class RequestInvalid(PolicyError):
    def __init__(self, code: str, message: str):
        super().__init__(code, message, Refusal.INVALID)


class DecisionRefused(PolicyError):
    pass


# --- who -----------------------------------------------------------------------------------------


def approvers_of(flow: Flow, approver_groups: dict[str, list[str]]) -> list[str]:
    """Everyone who may approve the flow's requests, in any step."""
    steps = step_people(flow, approver_groups)
    return list(dict.fromkeys(p for step in steps for p in step.approvers))


def steps_of(flow: Flow, approver_groups: dict[str, list[str]]) -> list[ApprovalStepView]:
    """A new request's approval steps (none for the approvals_required shorthand)."""
    if not flow.approval_steps:
        return []
    return [
        ApprovalStepView(name=step.name, count=step.count, approvers=list(step.approvers))
        for step in step_people(flow, approver_groups)
    ]


def may_request(flow: Flow, email: str, approver_groups: dict[str, list[str]]) -> bool:
    if flow.requesters is None:
        return True
    allowed = expand(flow.requesters.users, flow.requesters.groups, approver_groups)
    return email.lower() in allowed


def referenced_groups(flow: Flow, approver_groups: dict[str, list[str]]) -> dict[str, list[str]]:
    names = {g for step in flow.steps for g in step.approvers.groups}
    names |= set(flow.escalation.approvers.groups if flow.escalation else [])
    names |= set(flow.requesters.groups if flow.requesters else [])
    return {name: list(approver_groups[name]) for name in sorted(names) if name in approver_groups}


# --- approval steps ------------------------------------------------------------------------------


def _steps(view: RequestView) -> list[Step]:
    return [Step(name=s.name, count=s.count, approvers=s.approvers) for s in view.approval_steps]


def _approving(approvals: list[Approval]) -> tuple[list[str], set[str]]:
    """The people who approved, in order, and those of them who did so as admins."""
    people = [a.actor.email.lower() for a in approvals if a.actor.email]
    admins = {
        a.actor.email.lower() for a in approvals if a.actor.email and a.actor.role is Role.ADMIN
    }
    return people, admins


def tally(view: RequestView, approvals: list[Approval] | None = None) -> list[list[str]]:
    """Who counts toward each of the request's approval steps (admins toward any one)."""
    people, admins = _approving(view.approvals if approvals is None else approvals)
    return assign(_steps(view), people, anywhere=admins)


def approvals_complete(view: RequestView) -> bool:
    """Every step met; without steps, approvals_required distinct approvals."""
    if view.approval_steps:
        return met(_steps(view), tally(view))
    return len(view.approvals) >= view.approvals_required


def record_tally(view: RequestView) -> None:
    """Write who counts toward each step into the view (after an approval)."""
    for step, names in zip(view.approval_steps, tally(view), strict=True):
        step.approved_by = names


def needed(view: RequestView, excluded: tuple[str, ...] = ()) -> str:
    """The steps still to be met and who can still approve each: `step security: 1 more, from
    carol@example.com`; "" when none is left."""
    approved = {a.actor.email.lower() for a in view.approvals if a.actor.email}
    gone = approved | {e.lower() for e in excluded}
    return "; ".join(
        f"step {step.name}: {more} more, from {', '.join(who) or 'an admin only'}"
        for step, more, who in still_needed(_steps(view), tally(view), gone)
    )


def escalation_people(flow: Flow, approver_groups: dict[str, list[str]]) -> list[str]:
    """The flow's escalation approvers named in the file (Slack user groups are looked up)."""
    if flow.escalation is None:
        return []
    who = flow.escalation.approvers
    return expand(who.users, who.groups, approver_groups)


def unmeetable_for_requester(view: RequestView, backups: list[str] | None = None) -> str | None:
    """Why the request can never be approved because its requester may not approve it (their
    exclusion leaves a step short, even with the escalation's `backups` in every step), or
    None."""
    steps = _steps(view) or [Step("approval", view.approvals_required, view.approvers)]
    if backups:
        steps = [
            Step(s.name, s.count, list(dict.fromkeys([*s.approvers, *backups]))) for s in steps
        ]
    approved, _ = _approving(view.approvals)
    everyone = list(dict.fromkeys([*approved, *(p for s in steps for p in s.approvers)]))
    requester = view.requester.email.lower()
    if shortfall(steps, everyone) is not None:
        return None  # short for everyone: not the requester's doing (an admin may complete it)
    short = shortfall(steps, [p for p in everyone if p != requester])
    if short is None:
        return None
    step, found = short
    what = f"step {step.name} needs" if view.approval_steps else "it needs"
    people = f"{step.count} approver{'s' if step.count > 1 else ''}"
    return (
        f"this request can never be approved: {requester} may not approve their own request, "
        f"and {what} {people} besides them, of whom only {found} can count "
        f"({', '.join(p for p in step.approvers if p != requester) or 'nobody else is named'}); "
        "ask an owner of the flow to name another approver"
    )


# --- new requests --------------------------------------------------------------------------------


def find_flow(config: KeycardConfig, name: str) -> Flow:
    try:
        return config.flow(name)
    except KeyError:
        known = ", ".join(f.name for f in config.flows)
        raise RequestInvalid("UnknownFlow", f"there is no flow {name!r}; flows: {known}") from None


def find_target(flow: Flow, name: str) -> Target:
    try:
        return flow.target(name)
    except KeyError:
        known = ", ".join(t.name for t in flow.targets)
        raise RequestInvalid(
            "UnknownTarget", f"flow {flow.name} has no target {name!r}; targets: {known}"
        ) from None


MAX_TARGETS = 20  # per request: each is its own lease, grant and audit trail


def find_targets(flow: Flow, names: str | Sequence[str]) -> list[Target]:
    """The targets a request names, in the order given: one, or several of the same flow (each
    its own lease, approved together). A name given twice counts once."""
    wanted = [names] if isinstance(names, str) else list(dict.fromkeys(names))
    if not wanted:
        known = ", ".join(t.name for t in flow.targets)
        raise RequestInvalid(
            "UnknownTarget", f"name a target of flow {flow.name}; targets: {known}"
        )
    if len(wanted) > MAX_TARGETS:
        raise RequestInvalid(
            "TooManyTargets",
            f"{len(wanted)} targets in one request; at most {MAX_TARGETS}: split the request",
        )
    return [find_target(flow, name) for name in wanted]


def choose_duration(flow: Flow, requested: str | timedelta | None) -> timedelta:
    """The requested duration if the flow allows it; the flow's default if none was given."""
    if requested is None or requested == "":
        return flow.durations[0]
    allowed = ", ".join(format_duration(d) for d in flow.durations)
    try:
        value = parse_duration(requested) if isinstance(requested, str) else requested
    except ValueError as exc:
        raise RequestInvalid(
            "InvalidDuration", f"{exc}; flow {flow.name} offers: {allowed}"
        ) from None
    if value not in flow.durations:
        raise RequestInvalid(
            "DurationNotAllowed",
            f"flow {flow.name} does not offer {format_duration(value)}; choose one of: {allowed}",
        )
    return value


MAX_FIELD_LENGTH = 1000  # like a reason: an answer, not a document


def check_fields(flow: Flow, fields: dict[str, Any]) -> dict[str, Any]:
    """Typed values for the flow's extra fields; refuses unknown, missing and mistyped ones."""
    declared = {f.name: f for f in flow.fields}
    unknown = sorted(set(fields) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none"
        raise RequestInvalid(
            "UnknownField",
            f"flow {flow.name} has no field {', '.join(unknown)}; its fields: {known}",
        )
    result: dict[str, Any] = {}
    for name, spec in declared.items():
        raw = fields.get(name)
        if isinstance(raw, str) and len(raw) > MAX_FIELD_LENGTH:
            raise RequestInvalid(
                "FieldTooLong",
                f"field {name} is longer than {MAX_FIELD_LENGTH} characters; shorten it",
            )
        if raw is None or raw == "":
            if spec.required:
                raise RequestInvalid("MissingField", f"field {name} is required by {flow.name}")
            continue
        value = _coerce_field(spec, raw)
        result[name] = scrub_text(value) if isinstance(value, str) else value
    return result


def _coerce_field(spec: PromptField, raw: Any) -> Any:
    def bad(expected: str) -> RequestInvalid:
        return RequestInvalid("InvalidField", f"field {spec.name} must be {expected}, not {raw!r}")

    if spec.type == "int":
        if isinstance(raw, bool):
            raise bad("a whole number")
        try:
            return int(str(raw).strip())
        except ValueError:
            raise bad("a whole number") from None
    if spec.type == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"true", "yes", "1", "on"}:
            return True
        if text in {"false", "no", "0", "off"}:
            return False
        raise bad("true or false")
    if spec.type == "choice":
        if str(raw) not in spec.choices:
            raise bad(f"one of {', '.join(spec.choices)}")
        return str(raw)
    if spec.type == "user":
        text = str(raw).strip()
        if not text:
            raise bad("a person")
        return text
    return str(raw)


START_SKEW = timedelta(minutes=1)  # a start_at this little in the past means "now"


def check_start_at(flow: Flow, start_at: datetime | None, now: datetime) -> datetime | None:
    """A scheduled start the flow allows, in UTC; None to start once approved. A time without a
    zone is taken as UTC; a moment just past (clock skew) means now."""
    if start_at is None:
        return None
    if start_at.tzinfo is None:
        start_at = start_at.replace(tzinfo=UTC)
    start_at = start_at.astimezone(UTC)
    if start_at <= now:
        if start_at >= now - START_SKEW:
            return None
        raise RequestInvalid(
            "StartInPast",
            f"start_at {start_at:%Y-%m-%d %H:%M:%S} UTC is in the past; leave it out to start "
            "as soon as the request is approved",
        )
    if start_at - now > flow.max_start_delay:
        raise RequestInvalid(
            "StartTooFar",
            f"start_at {start_at:%Y-%m-%d %H:%M:%S} UTC is more than "
            f"{format_duration(flow.max_start_delay)} ahead, flow {flow.name}'s max_start_delay; "
            "ask closer to the time",
        )
    return start_at


def check_reason(flow: Flow, reason: str | None) -> str:
    reason = (reason or "").strip()
    rules = flow.reason
    hint = f" ({rules.hint})" if rules is not None and rules.hint else ""
    if flow.reason_required and not reason:
        raise RequestInvalid(
            "ReasonRequired", f"flow {flow.name} requires a reason for access{hint}"
        )
    if len(reason) > 1000:
        raise RequestInvalid("ReasonTooLong", "the reason is longer than 1000 characters")
    if rules is not None:
        if len(reason) < rules.min_length:
            raise RequestInvalid(
                "ReasonTooShort",
                f"flow {flow.name} needs a reason of at least {rules.min_length} characters; "
                f"this one has {len(reason)}{hint}",
            )
        if rules.pattern is not None and not re.search(rules.pattern, reason):
            raise RequestInvalid(
                "ReasonMismatch",
                f"the reason does not match flow {flow.name}'s pattern {rules.pattern}{hint}",
            )
        if rules.ticket is not None and find_ticket(flow, reason) is None:
            raise RequestInvalid(
                "TicketRequired",
                f"flow {flow.name} needs a ticket in the reason, matching "
                f"{rules.ticket.pattern}{hint}",
            )
    # Before it is recorded anywhere (history, audit, Slack): a pasted token stays out.
    return scrub_text(reason)


def find_ticket(flow: Flow, reason: str) -> Ticket | None:
    """The first ticket the reason names, by the flow's `reason.ticket` (with its link)."""
    rules = flow.reason.ticket if flow.reason is not None else None
    found = re.search(rules.pattern, reason) if rules is not None else None
    if rules is None or found is None or not found.group(0).strip():
        return None
    key = found.group(0).strip()
    url = rules.url.replace("{ticket}", quote(key, safe="")) if rules.url else None
    return Ticket(key=key, url=url)


def check_requester(flow: Flow, email: str, approver_groups: dict[str, list[str]]) -> None:
    if not may_request(flow, email, approver_groups):
        raise RequestInvalid("NotARequester", f"{email} may not request flow {flow.name}")


def target_settings(target: Target) -> dict[str, str]:
    """What identifies a target to its strategy (its account and permission set, its group, or
    its own settings), as shown on the request."""
    return target.spec_settings()


# --- decisions on a running request ----------------------------------------------------------------


def _wrong_state(view: RequestView, verb: str) -> DecisionRefused:
    return DecisionRefused(
        "WrongState",
        f"request {view.id} is {view.state.value}; it can no longer be {verb}",
        Refusal.CONFLICT,
    )


def _is_requester(view: RequestView, actor: Actor) -> bool:
    if not actor.email:
        return False
    return actor.email.lower() == view.requester.email.lower()


def _is_approver(view: RequestView, actor: Actor) -> bool:
    if not actor.email:
        return False
    return actor.email.lower() in view.approvers


def may_read(view: RequestView, reader: Actor) -> bool:
    """Who may read a request through Keycard's front doors: admins read every request; a service
    reads the requests it asked for; a person reads their own and those they may decide on (or
    have decided). Operators with Temporal access read everything there; that is Temporal's
    access control, not Keycard's (README, security model)."""
    if reader.role is Role.ADMIN:
        return True
    email = (reader.email or "").lower()
    if not email:
        return False
    if reader.role is Role.SERVICE:
        return view.submitted_by is not None and (view.submitted_by.email or "").lower() == email
    return (
        _is_requester(view, reader)
        or _is_approver(view, reader)
        or any((a.actor.email or "").lower() == email for a in view.approvals)
    )


def check_approve(view: RequestView, flow: Flow, actor: Actor) -> None:
    if view.state is not RequestState.PENDING:
        raise _wrong_state(view, "approved")
    if _is_requester(view, actor) and not flow.allow_self_approval:
        raise DecisionRefused(
            "SelfApproval",
            f"{actor.display} cannot approve their own request; "
            f"ask one of {', '.join(view.approvers) or 'the flow approvers'}"
            + (
                "; in an emergency, use break-glass with a justification"
                if flow.break_glass
                else ""
            ),
            Refusal.FORBIDDEN,
        )
    if not (_is_approver(view, actor) or actor.role is Role.ADMIN or _self_ok(view, flow, actor)):
        raise DecisionRefused(
            "NotAnApprover",
            f"{actor.display} is not an approver of flow {flow.name}",
            Refusal.FORBIDDEN,
        )
    if any(a.actor.email and a.actor.email == actor.email for a in view.approvals):
        raise DecisionRefused(
            "AlreadyApproved",
            f"{actor.display} has already approved this request; "
            f"it needs {view.approvals_required} different approvers"
            + (f" (still needed: {needed(view)})" if view.approval_steps else ""),
            Refusal.CONFLICT,
        )
    if view.approval_steps:
        _check_counts_toward_a_step(view, flow, actor)


def _check_counts_toward_a_step(view: RequestView, flow: Flow, actor: Actor) -> None:
    """An approval must fill a step still open: one person counts in one step at most, and a
    step already met needs nobody else."""
    with_it = [*view.approvals, Approval(actor=actor, at=view.requested_at)]
    if sum(map(len, tally(view, with_it))) > sum(map(len, tally(view))):
        return
    mine = [s.name for s in view.approval_steps if (actor.email or "").lower() in s.approvers]
    excluded = () if flow.allow_self_approval else (view.requester.email,)
    why = (
        f"approves in step {', '.join(mine)}, which is met already (one person counts in one "
        "step at most)"
        if mine
        else "is in none of this request's approval steps"
    )
    raise DecisionRefused(
        "StepAlreadyMet",
        f"{actor.display} {why}; still needed: {needed(view, excluded)}",
        Refusal.CONFLICT,
    )


BREAK_GLASS_MIN_JUSTIFICATION = 10


def check_break_glass(view: RequestView, flow: Flow, actor: Actor, justification: str) -> None:
    """The requester approving their own request in an emergency: only where the flow allows it,
    and only with a written justification (it is announced and reviewed afterwards)."""
    if view.state is not RequestState.PENDING:
        raise _wrong_state(view, "approved")
    if not flow.break_glass:
        raise DecisionRefused(
            "BreakGlassNotAllowed",
            f"flow {flow.name} does not allow break-glass; ask one of "
            f"{', '.join(view.approvers) or 'the flow approvers'}",
            Refusal.FORBIDDEN,
        )
    if not _is_requester(view, actor):
        raise DecisionRefused(
            "BreakGlassNotRequester",
            f"break-glass is for approving your own request; {actor.display} is not "
            f"the requester of {view.id} (approve it normally instead)",
            Refusal.FORBIDDEN,
        )
    if len(justification.strip()) < BREAK_GLASS_MIN_JUSTIFICATION:
        raise DecisionRefused(
            "JustificationRequired",
            "break-glass needs a written justification (at least "
            f"{BREAK_GLASS_MIN_JUSTIFICATION} characters): say what is broken and why it cannot wait",
            Refusal.INVALID,
        )


def _self_ok(view: RequestView, flow: Flow, actor: Actor) -> bool:
    return flow.allow_self_approval and _is_requester(view, actor)


def check_deny(view: RequestView, flow: Flow, actor: Actor) -> None:
    if view.state is not RequestState.PENDING:
        raise _wrong_state(view, "denied")
    if _is_requester(view, actor):
        raise DecisionRefused(
            "SelfDenial",
            "you cannot deny your own request; cancel it instead",
            Refusal.FORBIDDEN,
        )
    if not (_is_approver(view, actor) or actor.role is Role.ADMIN):
        raise DecisionRefused(
            "NotAnApprover",
            f"{actor.display} is not an approver of flow {flow.name}",
            Refusal.FORBIDDEN,
        )


def check_review(view: RequestView, flow: Flow, actor: Actor, finding: str, comment: str) -> None:
    """An approver's review of a break-glass use, afterwards: once, by someone other than the
    requester, with a reason when they find it unjustified."""
    if not view.break_glass:
        raise DecisionRefused(
            "NotBreakGlass",
            f"request {view.id} was not approved with break-glass; only a break-glass use is "
            "reviewed afterwards",
            Refusal.CONFLICT,
        )
    if view.review is not None:
        raise DecisionRefused(
            "AlreadyReviewed",
            f"request {view.id} was reviewed by {view.review.by.display} "
            f"({view.review.finding}) at {view.review.at:%Y-%m-%d %H:%M} UTC",
            Refusal.CONFLICT,
        )
    if _is_requester(view, actor):
        raise DecisionRefused(
            "SelfReview",
            f"{actor.display} used break-glass on this request and cannot review it; ask one of "
            f"{', '.join(view.approvers) or 'the flow approvers'}",
            Refusal.FORBIDDEN,
        )
    if not (_is_approver(view, actor) or actor.role is Role.ADMIN):
        raise DecisionRefused(
            "NotAnApprover",
            f"{actor.display} is not an approver of flow {flow.name}; only its approvers and "
            "admins review its break-glass uses",
            Refusal.FORBIDDEN,
        )
    if finding == "unjustified" and not comment.strip():
        raise DecisionRefused(
            "ReviewNeedsComment",
            "say why the break-glass use was unjustified (a comment), so the finding can be "
            "followed up",
            Refusal.INVALID,
        )


def check_cancel(view: RequestView, flow: Flow, actor: Actor) -> None:
    if view.state not in (RequestState.PENDING, RequestState.SCHEDULED):
        raise _wrong_state(view, "cancelled")
    on_behalf = view.submitted_by is not None and actor.email == view.submitted_by.email
    if _is_requester(view, actor) or on_behalf or actor.role is Role.ADMIN:
        return
    if view.state is RequestState.SCHEDULED and _is_approver(view, actor):
        return  # an approver may withdraw access that has not begun
    raise DecisionRefused(
        "NotTheRequester",
        f"only {view.requester.email} (or an admin"
        + (", or an approver, before it begins" if view.state is RequestState.SCHEDULED else "")
        + ") can cancel this request",
        Refusal.FORBIDDEN,
    )


def check_revoke(view: RequestView, flow: Flow, actor: Actor) -> None:
    if view.state not in (RequestState.ACTIVE, RequestState.GRANTING):
        if view.state is RequestState.PENDING:
            raise DecisionRefused(
                "WrongState",
                f"request {view.id} is PENDING, not active; cancel or deny it instead",
                Refusal.CONFLICT,
            )
        if view.state is RequestState.SCHEDULED:
            raise DecisionRefused(
                "WrongState",
                f"request {view.id} is SCHEDULED: its access has not begun; cancel it instead",
                Refusal.CONFLICT,
            )
        raise _wrong_state(view, "revoked")
    if _is_approver(view, actor) or actor.role is Role.ADMIN:
        return
    if _is_requester(view, actor):
        if flow.allow_early_revoke:
            return
        raise DecisionRefused(
            "EarlyRevokeNotAllowed",
            f"flow {flow.name} does not let requesters end access early; ask an approver",
            Refusal.FORBIDDEN,
        )
    raise DecisionRefused(
        "NotAllowed",
        f"{actor.display} may not revoke this request: only the requester, "
        f"an approver of {flow.name} or an admin can",
        Refusal.FORBIDDEN,
    )


def check_extend(view: RequestView, flow: Flow, actor: Actor, extra: timedelta) -> None:
    if view.state is not RequestState.ACTIVE:
        raise _wrong_state(view, "extended")
    if not flow.allow_extension:
        raise DecisionRefused(
            "ExtensionNotAllowed",
            f"flow {flow.name} does not allow extensions; request access again",
            Refusal.FORBIDDEN,
        )
    if not (_is_requester(view, actor) or _is_approver(view, actor) or actor.role is Role.ADMIN):
        raise DecisionRefused(
            "NotAllowed",
            f"{actor.display} may not extend this request",
            Refusal.FORBIDDEN,
        )
    if extra <= timedelta(0):
        raise DecisionRefused(
            "InvalidDuration", "an extension must be longer than zero", Refusal.INVALID
        )
    total = view.total_duration + extra
    _check_automatic_cap(view, flow, actor, total)
    if total > flow.maximum:
        already = total - extra
        left = flow.maximum - already
        raise DecisionRefused(
            "OverMaximum",
            f"extending by {format_duration(extra)} would make {format_duration(total)} in all, "
            f"over flow {flow.name}'s maximum of {format_duration(flow.maximum)}"
            + (f"; at most {format_duration(left)} more" if left > timedelta(0) else ""),
            Refusal.INVALID,
        )


def _check_automatic_cap(view: RequestView, flow: Flow, actor: Actor, total: timedelta) -> None:
    """Access a rule approved stays within the rule's cap unless a person who may approve
    extends it: otherwise a 1h automatic approval could be stretched to the flow's maximum."""
    cap = flow.auto_approve.max_duration if flow.auto_approve else None
    automatic = view.decided_by is not None and view.decided_by.rule is not None
    if cap is None or not automatic or total <= cap:
        return
    if _is_approver(view, actor) or actor.role is Role.ADMIN:
        return
    raise DecisionRefused(
        "OverAutomaticCap",
        f"this access was approved automatically, which is limited to {format_duration(cap)} "
        f"in flow {flow.name}; ask one of {', '.join(view.approvers) or 'the approvers'} "
        "to extend it",
        Refusal.FORBIDDEN,
    )
