"""keycard.yaml validation: every problem reported at its location, in words a reviewer acts on."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keycard.config import ConfigError, load_config, parse_config
from main import app

ROOT = Path(__file__).resolve().parents[2]

GOOD = """
approver_groups:
  sre-leads: [bob@example.com, carol@example.com]
flows:
  - name: prod
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: PowerUserAccess}
    durations: [1h, 30m]
    approvers: {groups: [sre-leads]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as error:
        parse_config(text)
    return error.value.problems


def flow(**overrides) -> str:
    """GOOD with the first flow's YAML keys replaced (values are YAML snippets)."""
    base = {
        "name": "prod",
        "strategy": "aws_sso",
        "targets": '[{name: prod, account_id: "111111111111", permission_set: PowerUserAccess}]',
        "durations": "[1h, 30m]",
        "approvers": "{groups: [sre-leads]}",
    }
    base.update(overrides)
    body = "\n".join(f"    {k}: {v}" for k, v in base.items() if v is not None)
    return f"approver_groups:\n  sre-leads: [bob@example.com, carol@example.com]\nflows:\n  - {body.strip()}\n"


def test_the_shipped_example_is_valid():
    config = load_config(ROOT / "keycard.example.yaml")
    flow = config.flow("prod-power-user")
    assert flow.durations[0] == timedelta(minutes=1), "newcomers must be able to watch expiry"
    assert flow.approval_timeout == timedelta(hours=1)
    assert not flow.allow_self_approval


def test_defaults_of_a_minimal_flow():
    flow = parse_config(GOOD).flow("prod")
    assert (flow.approvals_required, flow.allow_self_approval) == (1, False)
    assert flow.approval_timeout == timedelta(hours=1)
    assert flow.maximum == timedelta(hours=1)  # the longest allowed duration
    assert flow.reason_required and flow.allow_early_revoke and not flow.allow_extension


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            flow(targets='[{name: prod, account_id: "12", permission_set: P}]'),
            "flows[0].targets[0].account_id: must be 12 digits",
        ),
        (
            flow(
                targets='[{name: prod, account_id: "111111111111", permission_set: P, acount: 1}]'
            ),
            "flows[0].targets[0].acount: is not a known setting (check the spelling)",
        ),
        (
            flow(
                targets='[{name: prod, account_id: "111111111111", permission_set: "arn:aws:iam::1:role/x"}]'
            ),
            "flows[0].targets[0].permission_set: is not a permission set ARN",
        ),
        (flow(strategy="gcp"), "flows[0]: strategy must be one of aws_sso, aws_sso_group"),
        (flow(durations="[1h, soon]"), "flows[0].durations[1]: 'soon' is not a duration"),
        (flow(durations="[]"), "flows[0].durations: List should have at least 1 item"),
        (flow(durations="[1h, 1h]"), "flows[0].durations: lists a duration twice"),
        (flow(max_duration="30m"), "durations 1h exceed max_duration 30m"),
        (flow(name="Prod Admin"), "flows[0].name: must be lower-case letters, digits, - or _"),
        (
            flow(approvers="{groups: [nobody]}"),
            "names group 'nobody', which is not in approver_groups",
        ),
        (
            flow(approvers="{users: [bob]}"),
            "flows[0].approvers.users[0]: 'bob' is not an email address",
        ),
        (
            flow(approvals_required="0"),
            "flows[0].approvals_required: Input should be greater than or equal to 1",
        ),
        (
            flow(fields="[{name: kind, type: choice}]"),
            "a choice field needs a non-empty `choices` list",
        ),
        (flow(fields="[{name: n, type: float}]"), "flows[0].fields[0].type: Input should be"),
        (flow(targets=None), "flows[0].targets: is required"),
        (
            flow(reminders="[15m, 1h]"),
            "reminders 1h come at or after approval_timeout 1h, when the request has already",
        ),
        (flow(reminders="[15m, 15m]"), "reminders lists a time twice"),
        (flow(reminders="[soon]"), "flows[0].reminders[0]: 'soon' is not a duration"),
        (
            flow(escalate_after="30m"),
            "escalate_after and escalation go together: escalate_after says when",
        ),
        (
            flow(escalate_after="2h", escalation="{approvers: {users: [dave@example.com]}}"),
            "escalate_after 2h is at or after approval_timeout 1h",
        ),
        (
            flow(escalate_after="30m", escalation="{approvers: {}}"),
            "escalation.approvers names nobody: add users, groups or slack_groups",
        ),
        (
            flow(escalate_after="30m", escalation="{approvers: {groups: [backup]}}"),
            "names group 'backup', which is not in approver_groups",
        ),
        (flow(reason="{min_length: -1}"), "flows[0].reason.min_length: Input should be greater"),
        (
            flow(reason="{pattern: '(unclosed'}"),
            "flows[0].reason.pattern: '(unclosed' is not a valid",
        ),
        (
            flow(reason="{ticket: {pattern: '[A-Z'}}"),
            "flows[0].reason.ticket.pattern: '[A-Z' is not",
        ),
        (flow(reason="{ticket: {}}"), "flows[0].reason.ticket.pattern: is required"),
        (
            flow(reason="{ticket: {pattern: 'X-[0-9]+', url: 'https://jira.example.com/browse'}}"),
            "flows[0].reason.ticket.url: needs {ticket} where the ticket's key goes",
        ),
        (
            flow(reason="{ticket: {pattern: 'X', url: 'jira/{ticket}'}}"),
            "flows[0].reason.ticket.url: must be an http(s) URL",
        ),
        (flow(reason="{min_lenght: 5}"), "flows[0].reason.min_lenght: is not a known setting"),
        (
            flow(reason="{min_length: 5}", reason_required="false"),
            "reason sets rules for the reason, but reason_required is false: remove one",
        ),
        ("flows: []", "flows: List should have at least 1 item"),
        ("flows: [\n  - {name: x\n", "not valid YAML"),
        ("- just\n- a list\n", "(top level): must be a mapping with a `flows` list"),
        (GOOD + GOOD.split("flows:\n")[1], "flow names must be unique; repeated: prod"),
    ],
)
def test_bad_files_say_what_is_wrong_and_where(text: str, expected: str):
    found = problems(text)
    assert any(expected in p for p in found), found


def test_every_problem_is_reported_at_once():
    text = flow(targets='[{name: prod, account_id: "1", permission_set: P}]', durations="[1h, x]")
    found = problems(text)
    assert len(found) == 2, found


def test_secrets_are_env_references_never_literals():
    text = (
        GOOD
        + """
audit:
  destinations:
    - type: http
      url: https://siem.example.com/ingest
      headers: {Authorization: "Bearer abc123"}
"""
    )
    found = problems(text)
    assert any("secrets are never written in keycard.yaml" in p for p in found), found


runner = CliRunner()


def test_cli_validate_prints_every_problem_and_exits_1(tmp_path: Path):
    bad = tmp_path / "keycard.yaml"
    bad.write_text(flow(targets='[{name: prod, account_id: "1", permission_set: P}]'))
    result = runner.invoke(app, ["flows", "validate", str(bad)])
    assert result.exit_code == 1
    assert "flows[0].targets[0].account_id: must be 12 digits" in result.output
    good = runner.invoke(app, ["flows", "validate", str(ROOT / "keycard.example.yaml")])
    assert good.exit_code == 0 and "OK" in good.output


def test_cli_schema_is_a_json_schema_that_names_the_flows():
    result = runner.invoke(app, ["flows", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema["$schema"].endswith("2020-12/schema")
    assert "flows" in schema["properties"] and "flows" in schema["required"]


def test_end_sessions_is_on_for_aws_sso_off_for_groups_and_refused_for_iam_users():
    assert parse_config(GOOD).flow("prod").ends_sessions
    assert not parse_config(flow(**{"end_sessions": "false"})).flow("prod").ends_sessions
    group = {"strategy": "aws_sso_group", "targets": "[{name: ops, group: Operators}]"}
    assert not parse_config(flow(**group)).flow("prod").ends_sessions
    assert parse_config(flow(**group, end_sessions="true")).flow("prod").ends_sessions
    iam = {"strategy": "aws_iam_group", "targets": "[{name: ops, group: Operators}]"}
    [problem] = problems(flow(**iam, end_sessions="true"))
    assert "end_sessions: true needs strategy aws_sso or aws_sso_group" in problem
    assert "remove end_sessions from this flow" in problem


def test_end_sessions_policy_names_a_customer_managed_policy_and_a_role_to_write_it():
    chosen = "{name: KeycardEndSessions, path: /keycard/, role: KeycardSessionWriter}"
    policy = parse_config(flow(end_sessions_policy=chosen)).flow("prod").end_sessions_policy
    assert policy.policy_arn("111111111111") == (
        "arn:aws:iam::111111111111:policy/keycard/KeycardEndSessions"
    )
    assert policy.role_arn("111111111111", "aws-us-gov") == (
        "arn:aws-us-gov:iam::111111111111:role/KeycardSessionWriter"
    )
    default_path = "{name: KeycardEndSessions, role: KeycardSessionWriter}"
    assert parse_config(flow(end_sessions_policy=default_path)).flow("prod").end_sessions_policy


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            {"end_sessions": "false", "end_sessions_policy": "{name: P, role: R}"},
            "does not end sessions: set end_sessions: true, or remove end_sessions_policy",
        ),
        ({"end_sessions_policy": "{name: 'has space', role: R}"}, "end_sessions_policy.name"),
        ({"end_sessions_policy": "{name: P, path: keycard, role: R}"}, "end_sessions_policy.path"),
        ({"end_sessions_policy": "{name: P}"}, "end_sessions_policy.role"),
        ({"end_sessions_policy": "{name: P, role: R, arn: x}"}, "end_sessions_policy.arn"),
    ],
)
def test_a_wrong_end_sessions_policy_says_what_to_fix(overrides, expected):
    assert any(expected in problem for problem in problems(flow(**overrides))), problems(
        flow(**overrides)
    )
