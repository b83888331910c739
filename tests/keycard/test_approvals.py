"""Approval steps: the matching of approvers to steps, the rules on a pending request, and the
config check that refuses flows whose steps can never be met."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from keycard import policy
from keycard.approvals import Step, assign, shortfall, still_needed
from keycard.config import ConfigError, parse_config
from keycard.models import Actor, Approval, Requester, RequestState, RequestView
from keycard.policy import DecisionRefused

SRE = Step("sre", 1, ["bob@x.io", "carol@x.io"])
SECURITY = Step("security", 1, ["sec@x.io", "carol@x.io"])


def test_a_person_in_two_steps_moves_to_make_room_for_a_later_approver():
    assert assign([SRE, SECURITY], ["carol@x.io"]) == [["carol@x.io"], []]
    # bob fits only sre: carol moves on to security, and both steps are met.
    assert assign([SRE, SECURITY], ["carol@x.io", "bob@x.io"]) == [["bob@x.io"], ["carol@x.io"]]
    # in the other order too
    assert assign([SRE, SECURITY], ["bob@x.io", "carol@x.io"]) == [["bob@x.io"], ["carol@x.io"]]


def test_one_person_counts_in_one_step_at_most_and_admins_fit_any():
    assert assign([SRE, SECURITY], ["carol@x.io", "carol@x.io"]) == [["carol@x.io"], []]
    assert assign([SRE, SECURITY], ["bob@x.io", "root@x.io"], anywhere={"root@x.io"}) == [
        ["bob@x.io"],
        ["root@x.io"],
    ]
    # someone in no step counts nowhere
    assert assign([SRE, SECURITY], ["mallory@x.io"]) == [[], []]


def test_shortfall_and_who_is_still_needed():
    two_leads = Step("leads", 2, ["bob@x.io", "carol@x.io"])
    assert shortfall([two_leads, SECURITY], ["bob@x.io", "carol@x.io", "sec@x.io"]) is None
    # carol is needed in both steps; without sec, security is one short
    assert shortfall([two_leads, SECURITY], ["bob@x.io", "carol@x.io"]) == (SECURITY, 0)
    counted = assign([SRE, SECURITY], ["bob@x.io"])
    assert still_needed([SRE, SECURITY], counted, {"bob@x.io"}) == [
        (SECURITY, 1, ["sec@x.io", "carol@x.io"])
    ]


STEPS_CONFIG = """
approver_groups:
  sre-leads: [bob@example.com, carol@example.com]
flows:
  - name: admin
    strategy: aws_sso
    targets: [{name: prod, account_id: "111111111111", permission_set: AdministratorAccess}]
    durations: [1h]
    approval_steps:
      - {name: sre, approvers: {groups: [sre-leads]}}
      - {name: security, approvers: {users: [security@example.com, carol@example.com]}}
"""
FLOW = parse_config(STEPS_CONFIG).flow("admin")
BOB, CAROL, SEC, ALICE = (
    Actor(email=f"{who}@example.com") for who in ("bob", "carol", "security", "alice")
)
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def pending(*approvers: Actor, requester: str = "alice@example.com") -> RequestView:
    groups = {"sre-leads": ["bob@example.com", "carol@example.com"]}
    view = RequestView(
        id="req-1",
        state=RequestState.PENDING,
        requester=Requester(email=requester),
        flow="admin",
        flow_label="admin",
        strategy="aws_sso",
        target="prod",
        target_label="prod",
        duration="1h",
        reason="",
        approvals_required=FLOW.approvals_needed,
        approvers=policy.approvers_of(FLOW, groups),
        approval_steps=policy.steps_of(FLOW, groups),
        requested_at=NOW,
    )
    for actor in approvers:
        policy.check_approve(view, FLOW, actor)
        view.approvals.append(Approval(actor=actor, at=NOW))
        policy.record_tally(view)
    return view


def test_a_request_of_a_stepped_flow_starts_with_every_step_open():
    view = pending()
    assert view.approvals_required == 2
    assert view.approvers == ["bob@example.com", "carol@example.com", "security@example.com"]
    assert [(s.name, s.count, s.approvers) for s in view.approval_steps] == [
        ("sre", 1, ["bob@example.com", "carol@example.com"]),
        ("security", 1, ["security@example.com", "carol@example.com"]),
    ]
    assert not policy.approvals_complete(view)
    assert policy.needed(view) == (
        "step sre: 1 more, from bob@example.com, carol@example.com; "
        "step security: 1 more, from security@example.com, carol@example.com"
    )


@pytest.mark.parametrize(
    "order", [(BOB, SEC), (SEC, BOB), (CAROL, BOB), (BOB, CAROL), (SEC, CAROL)]
)
def test_steps_are_met_in_either_order(order):
    view = pending(order[0])
    assert not policy.approvals_complete(view)
    view = pending(*order)
    assert policy.approvals_complete(view)
    assert all(step.satisfied for step in view.approval_steps)


def test_a_second_sre_lead_is_refused_once_sre_is_met():
    groups = {"sre-leads": ["bob@example.com", "carol@example.com", "dave@example.com"]}
    flow = parse_config(
        STEPS_CONFIG.replace(
            "[bob@example.com, carol@example.com]\n",
            "[bob@example.com, carol@example.com, dave@example.com]\n",
            1,
        )
    ).flow("admin")
    view = RequestView.model_validate(
        pending().model_dump()
        | {
            "approval_steps": [s.model_dump() for s in policy.steps_of(flow, groups)],
            "approvers": policy.approvers_of(flow, groups),
        }
    )
    view.approvals.append(Approval(actor=BOB, at=NOW))
    policy.record_tally(view)
    with pytest.raises(DecisionRefused) as refused:
        policy.check_approve(view, flow, Actor(email="dave@example.com"))
    assert refused.value.code == "StepAlreadyMet"
    assert refused.value.message == (
        "dave@example.com approves in step sre, which is met already (one person counts in one "
        "step at most); still needed: step security: 1 more, from security@example.com, "
        "carol@example.com"
    )


def test_the_same_person_twice_across_steps_is_refused():
    view = pending(CAROL)
    with pytest.raises(DecisionRefused) as refused:
        policy.check_approve(view, FLOW, CAROL)
    assert refused.value.code == "AlreadyApproved"
    assert "still needed: step security: 1 more, from security@example.com" in (
        refused.value.message
    )


def test_the_requesters_exclusion_is_found_when_it_leaves_a_step_short():
    # carol asks: sre has bob, security has security@: still meetable
    assert policy.unmeetable_for_requester(pending(requester="carol@example.com")) is None
    narrow = pending(requester="security@example.com")
    narrow.approval_steps[1].approvers = ["security@example.com"]
    assert policy.unmeetable_for_requester(narrow) == (
        "this request can never be approved: security@example.com may not approve their own "
        "request, and step security needs 1 approver besides them, of whom only 0 can count "
        "(nobody else is named); ask an owner of the flow to name another approver"
    )


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    return err.value.problems


FLOW_HEAD = """
flows:
  - name: admin
    strategy: aws_sso
    targets: [{name: prod, account_id: "111111111111", permission_set: AdministratorAccess}]
    durations: [1h]
"""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            "    approvers: {users: [bob@example.com, carol@example.com]}\n"
            "    approvals_required: 2\n",
            "flows[0] (admin): can never be approved when bob@example.com asks (self-approval is "
            "off): needs 2 approvers and only 1 besides them can count toward it; name another "
            "approver, or leave bob@example.com out of the flow's requesters",
        ),
        (
            "    approvers: {users: [bob@example.com]}\n    approvals_required: 2\n",
            "flows[0] (admin): can never be approved: needs 2 approvers and only 1 can count "
            "toward it (bob@example.com); name more approvers, or ask for fewer",
        ),
        (
            "    approval_steps:\n"
            "      - {name: a, approvers: {users: [bob@example.com]}}\n"
            "      - {name: b, approvers: {users: [bob@example.com]}}\n",
            "flows[0] (admin): can never be approved: step b needs 1 approver of its own and "
            "only 0 can count toward it (bob@example.com)",
        ),
        (
            "    approval_steps:\n      - {approvers: {users: [bob@example.com]}}\n"
            "    approvers: {users: [bob@example.com]}\n",
            "approval_steps replaces approvers: move them into a step",
        ),
        (
            "    approval_steps:\n      - {name: a, approvers: {users: [b@example.com, c@example.com]}}\n"
            "      - {name: a, approvers: {users: [d@example.com, e@example.com]}}\n",
            "approval step names must be unique; repeated: a",
        ),
        (
            "    approval_steps:\n      - {approvers: {groups: [nobody]}}\n",
            "names group 'nobody', which is not in approver_groups",
        ),
        ("    approval_steps: []\n", "flows[0].approval_steps: List should have at least 1 item"),
        (
            "    approval_steps:\n      - {approvers: {users: [b@example.com]}, count: 0}\n",
            "flows[0].approval_steps[0].count: Input should be greater than or equal to 1",
        ),
    ],
)
def test_flows_whose_steps_can_never_be_met_are_refused(body, expected):
    found = problems(FLOW_HEAD + body)
    assert any(expected in problem for problem in found), found


def test_a_flow_is_accepted_when_its_requesters_leave_the_short_approver_out():
    parse_config(
        FLOW_HEAD + "    approvers: {users: [bob@example.com, carol@example.com]}\n"
        "    approvals_required: 2\n    requesters: {users: [alice@example.com]}\n"
    )
    parse_config(  # or when self-approval is on
        FLOW_HEAD + "    approvers: {users: [bob@example.com, carol@example.com]}\n"
        "    approvals_required: 2\n    allow_self_approval: true\n"
    )
    parse_config(  # Slack user groups are only known per request: checked then
        FLOW_HEAD + "    approvers: {slack_groups: [sre]}\n    approvals_required: 3\n"
    )
