"""keycard.yaml's hooks, auto_approve and break_glass settings."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from keycard.config import ConfigError, load_config, parse_config
from keycard.hooks import evaluates_requests, observers_for, over_automatic_cap
from keycard.models import RequestState

FLOW = """
flows:
  - name: prod
    strategy: aws_sso
    targets: [{name: prod, account_id: "111111111111", permission_set: PowerUserAccess}]
    durations: [1h, 4h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


def config(extra: str, text: str = FLOW):
    return parse_config(text + "".join(f"    {line}\n" for line in extra.strip().splitlines()))


def test_hooks_rules_and_break_glass_parse():
    flow = config(
        """
        hooks: hooks/prod.py
        break_glass: true
        auto_approve:
          pagerduty_on_call: {schedules: [PSCHED1], escalation_policies: [PEP1]}
          max_duration: 1h
        """.replace("        ", "")
    ).flows[0]
    assert flow.hooks == "hooks/prod.py" and flow.break_glass
    assert flow.auto_approve is not None
    assert flow.auto_approve.pagerduty_on_call is not None
    assert flow.auto_approve.pagerduty_on_call.schedules == ["PSCHED1"]
    assert flow.auto_approve.max_duration == timedelta(hours=1)
    assert evaluates_requests(flow)
    assert over_automatic_cap(flow, timedelta(hours=1)) is None
    assert over_automatic_cap(flow, timedelta(hours=4)) == (
        "automatic approval is limited to 1h in flow prod; "
        "this request for 4h waits for an approver"
    )


def test_a_flow_without_hooks_or_rules_skips_them():
    flow = config("auto_approve: {max_duration: 1h}").flows[0]
    assert not evaluates_requests(flow)
    assert not evaluates_requests(parse_config(FLOW).flows[0])


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ("hooks: hooks/prod.rb", "flows[0].hooks: must name a Python file, such as hooks/prod.py"),
        (
            "auto_approve: {pagerduty_oncall: {}}",
            "flows[0].auto_approve.pagerduty_oncall: is not a known setting (check the spelling)",
        ),
        (
            "auto_approve: {pagerduty_on_call: {schedule: [P1]}}",
            "flows[0].auto_approve.pagerduty_on_call.schedule: is not a known setting",
        ),
    ],
)
def test_mistakes_are_located(extra, problem):
    with pytest.raises(ConfigError) as err:
        config(extra)
    assert err.value.problems[0].startswith(problem)


def test_a_missing_hooks_file_is_reported_relative_to_the_config(tmp_path):
    path = tmp_path / "keycard.yaml"
    path.write_text(FLOW + "    hooks: hooks/prod.py\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems == [
        f"flows[0].hooks: hooks/prod.py does not exist (looked in {tmp_path / 'hooks/prod.py'})"
    ]
    (tmp_path / "hooks").mkdir()
    (tmp_path / "hooks" / "prod.py").write_text("")
    loaded = load_config(path)
    assert loaded.flows[0].hooks == "hooks/prod.py"
    assert loaded.base_dir == tmp_path  # where the worker looks for hooks files
    assert parse_config(FLOW).base_dir == Path(".")


def test_observers_each_event_wakes():
    assert observers_for("request.created", RequestState.PENDING) == ["after_request"]
    assert observers_for("request.auto_approved", RequestState.GRANTING) == ["after_approve"]
    assert observers_for("request.denied", RequestState.DENIED) == [
        "on_deny",
        "after_deny",
        "after_end",
    ]
    assert observers_for("access.ended", RequestState.ENDED) == ["after_revoke", "after_end"]
    assert observers_for("request.expired", RequestState.EXPIRED) == ["after_end"]
    assert observers_for("hook.failed", RequestState.ENDED) == []
    assert observers_for("decision.refused", RequestState.PENDING) == []
