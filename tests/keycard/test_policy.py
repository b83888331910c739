"""The pure rules every front door and the workflow's validators share."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from keycard import policy
from keycard.config import parse_config
from keycard.models import Actor, Approval, Extension, Requester, RequestState, RequestView, Role
from keycard.policy import DecisionRefused, Refusal, RequestInvalid

CONFIG = parse_config(
    """
approver_groups:
  leads: [bob@example.com, carol@example.com]
  oncall: [alice@example.com, erin@example.com]
flows:
  - name: prod
    strategy: aws_sso
    targets: [{name: prod, account_id: "111111111111", permission_set: PowerUserAccess}]
    durations: [1h, 30m]
    max_duration: 2h
    fields:
      - {name: ticket, type: int, required: true}
      - {name: urgent, type: bool}
      - {name: kind, type: choice, choices: [incident, change]}
    approvers: {users: [Dave@Example.com], groups: [leads]}
    requesters: {groups: [oncall]}
    allow_extension: true
    allow_early_revoke: false
  - name: self
    strategy: aws_iam_group
    targets: [{name: ro, group: ReadOnly}]
    durations: [15m]
    reason_required: false
    allow_self_approval: true
    approvers: {users: [bob@example.com]}
"""
)
PROD = CONFIG.flow("prod")
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
ALICE, BOB, DAVE, MALLORY = (
    Actor(email=e) for e in ("alice@example.com", "bob@example.com", "dave@example.com", "m@x.io")
)
ADMIN = Actor(email="root@example.com", role=Role.ADMIN)


def view(state=RequestState.PENDING, flow=PROD, **extra) -> RequestView:
    base = dict(
        id="req-1",
        state=state,
        requester=Requester(email="alice@example.com"),
        flow=flow.name,
        flow_label=flow.display,
        strategy=flow.strategy,
        target="prod",
        target_label="prod",
        duration=timedelta(hours=1),
        reason="x",
        approvals_required=flow.approvals_required,
        approvers=policy.approvers_of(flow, CONFIG.approver_groups),
        requested_at=NOW,
    )
    base.update(extra)
    return RequestView(**base)


def refused(call) -> DecisionRefused:
    with pytest.raises(DecisionRefused) as error:
        call()
    return error.value


def test_approvers_expand_groups_lowercase_and_deduplicate():
    assert policy.approvers_of(PROD, CONFIG.approver_groups) == [
        "dave@example.com",
        "bob@example.com",
        "carol@example.com",
    ]


def test_only_named_requesters_may_ask():
    policy.check_requester(PROD, "erin@example.com", CONFIG.approver_groups)
    with pytest.raises(
        RequestInvalid, match=re.escape("mallory@example.com may not request flow prod")
    ):
        policy.check_requester(PROD, "mallory@example.com", CONFIG.approver_groups)


def test_durations_default_to_the_first_and_must_be_offered():
    assert policy.choose_duration(PROD, None) == timedelta(hours=1)
    assert policy.choose_duration(PROD, "30m") == timedelta(minutes=30)
    with pytest.raises(RequestInvalid, match=re.escape("choose one of: 1h, 30m")) as error:
        policy.choose_duration(PROD, "2h")
    assert error.value.code == "DurationNotAllowed"


def test_fields_are_typed_and_checked():
    assert policy.check_fields(PROD, {"ticket": "42", "urgent": "yes", "kind": "change"}) == {
        "ticket": 42,
        "urgent": True,
        "kind": "change",
    }
    for fields, message in [
        ({}, "field ticket is required"),
        ({"ticket": "forty"}, "field ticket must be a whole number"),
        ({"ticket": 1, "urgent": "maybe"}, "field urgent must be true or false"),
        ({"ticket": 1, "kind": "other"}, "field kind must be one of incident, change"),
        ({"ticket": 1, "color": "red"}, "has no field color"),
    ]:
        with pytest.raises(RequestInvalid, match=re.escape(message)):
            policy.check_fields(PROD, fields)


def test_reason_is_required_unless_the_flow_says_otherwise():
    with pytest.raises(RequestInvalid, match="requires a reason"):
        policy.check_reason(PROD, "   ")
    assert policy.check_reason(CONFIG.flow("self"), None) == ""


TICKETED = parse_config(
    """
flows:
  - name: prod
    strategy: aws_iam_group
    targets: [{name: ro, group: ReadOnly}]
    durations: [15m]
    approvers: {users: [bob@example.com, carol@example.com]}
    reason:
      min_length: 12
      pattern: '^(fix|debug|incident) '
      hint: "start with fix, debug or incident, then the Jira key: fix OPS-12 in billing"
      ticket:
        pattern: '[A-Z][A-Z0-9]+-[0-9]+'
        url: https://example.atlassian.net/browse/{ticket}
"""
).flow("prod")


@pytest.mark.parametrize(
    ("reason", "code", "message"),
    [
        ("", "ReasonRequired", "requires a reason for access (start with fix"),
        ("fix OPS-1", "ReasonTooShort", "at least 12 characters; this one has 9 (start with fix"),
        ("rotate keys OPS-12", "ReasonMismatch", "does not match flow prod's pattern ^(fix"),
        ("fix the billing job", "TicketRequired", "needs a ticket in the reason, matching [A-Z]"),
    ],
)
def test_a_reason_policy_refuses_saying_which_rule_and_how(reason, code, message):
    with pytest.raises(RequestInvalid, match=re.escape(message)) as refused:
        policy.check_reason(TICKETED, reason)
    assert refused.value.code == code


def test_the_reasons_ticket_is_found_and_linked():
    reason = policy.check_reason(TICKETED, "  incident OPS-4312 and OPS-1 ")
    assert reason == "incident OPS-4312 and OPS-1"
    ticket = policy.find_ticket(TICKETED, reason)
    assert ticket is not None
    assert (ticket.key, ticket.url) == (
        "OPS-4312",
        "https://example.atlassian.net/browse/OPS-4312",
    )
    assert policy.find_ticket(PROD, reason) is None  # a flow without reason.ticket


def test_approval_rules():
    policy.check_approve(view(), PROD, BOB)
    policy.check_approve(view(), PROD, ADMIN)  # approver of last resort
    assert refused(lambda: policy.check_approve(view(), PROD, ALICE)).code == "SelfApproval"
    assert refused(lambda: policy.check_approve(view(), PROD, MALLORY)).code == "NotAnApprover"
    twice = view(approvals=[Approval(actor=BOB, at=NOW)], approvals_required=2)
    assert refused(lambda: policy.check_approve(twice, PROD, BOB)).code == "AlreadyApproved"
    late = refused(lambda: policy.check_approve(view(RequestState.DENIED), PROD, BOB))
    assert (late.kind, late.message) == (
        Refusal.CONFLICT,
        "request req-1 is DENIED; it can no longer be approved",
    )


def test_self_approval_only_where_the_flow_allows_it():
    flow = CONFIG.flow("self")
    policy.check_approve(view(flow=flow), flow, ALICE)


def test_revoke_rules():
    active = view(RequestState.ACTIVE)
    policy.check_revoke(active, PROD, BOB)
    policy.check_revoke(active, PROD, ADMIN)
    assert refused(lambda: policy.check_revoke(active, PROD, ALICE)).code == "EarlyRevokeNotAllowed"
    assert refused(lambda: policy.check_revoke(active, PROD, MALLORY)).kind is Refusal.FORBIDDEN
    pending = refused(lambda: policy.check_revoke(view(), PROD, BOB))
    assert "cancel or deny it instead" in pending.message


def test_extension_is_bounded_by_the_maximum_including_earlier_extensions():
    earlier = Extension(actor=ALICE, at=NOW, duration=timedelta(minutes=30), expires_at=NOW)
    active = view(RequestState.ACTIVE, extensions=[earlier])
    policy.check_extend(active, PROD, ALICE, timedelta(minutes=30))  # 1h + 30m + 30m = 2h
    over = refused(lambda: policy.check_extend(active, PROD, ALICE, timedelta(hours=1)))
    assert over.code == "OverMaximum" and "at most 30m more" in over.message
    assert refused(
        lambda: policy.check_extend(active, PROD, MALLORY, timedelta(minutes=5))
    ).code == ("NotAllowed")


def test_cancel_and_deny_rules():
    policy.check_cancel(view(), PROD, ALICE)
    assert refused(lambda: policy.check_cancel(view(), PROD, BOB)).code == "NotTheRequester"
    assert refused(lambda: policy.check_deny(view(), PROD, ALICE)).code == "SelfDenial"
    policy.check_deny(view(), PROD, DAVE)


def test_a_start_at_within_the_flows_reach_is_kept_in_utc():
    from datetime import timezone

    from keycard.policy import check_start_at

    now = NOW
    paris = timezone(timedelta(hours=1))
    assert check_start_at(PROD, None, now) is None
    assert check_start_at(PROD, datetime(2026, 11, 21, 15, 0, tzinfo=paris), now) == datetime(
        2026, 11, 21, 14, 0, tzinfo=UTC
    )
    assert check_start_at(PROD, datetime(2026, 11, 21, 15, 0), now) == datetime(
        2026, 11, 21, 15, 0, tzinfo=UTC
    )  # no zone: UTC
    assert check_start_at(PROD, now - timedelta(seconds=30), now) is None  # skew: now
    for start_at, code, message in [
        (now - timedelta(minutes=5), "StartInPast", "2026-11-21 11:55:00 UTC is in the past"),
        (now + timedelta(days=7, seconds=1), "StartTooFar", "more than 7d ahead"),
    ]:
        with pytest.raises(RequestInvalid, match=re.escape(message)) as refused:
            check_start_at(PROD, start_at, now)
        assert refused.value.code == code
