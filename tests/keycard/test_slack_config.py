"""keycard.yaml's Slack settings: a channel per flow, Slack user groups as approvers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keycard.config import ConfigError, parse_config

FLOW = """
flows:
  - name: prod
    strategy: aws_sso
    targets: [{name: p, account_id: "111111111111", permission_set: PowerUserAccess}]
    durations: [1h]
"""


def test_slack_settings_are_optional_and_default_sensibly():
    flow = parse_config(FLOW).flow("prod")
    assert flow.slack.channel is None
    assert flow.approvers.slack_groups == []
    assert flow.expiry_warning == timedelta(minutes=10)


def test_slack_settings_as_written():
    text = FLOW + (
        "    slack: {channel: '#prod-access'}\n"
        "    approvers: {slack_groups: ['@sre-leads', S0123ABC]}\n"
        "    expiry_warning: null\n"
    )
    flow = parse_config(text).flow("prod")
    assert flow.slack.channel == "#prod-access"
    assert flow.approvers.slack_groups == ["sre-leads", "S0123ABC"]
    assert flow.expiry_warning is None


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "    approvers: {slack_groups: ['@']}\n",
            "flows[0].approvers.slack_groups: a Slack user group needs a handle, e.g. sre-leads",
        ),
        (
            "    slack: {chanel: '#x'}\n",
            "flows[0].slack.chanel: is not a known setting (check the spelling)",
        ),
    ],
)
def test_mistakes_are_located(extra, problem):
    with pytest.raises(ConfigError) as raised:
        parse_config(FLOW + extra)
    assert raised.value.problems == [problem]
