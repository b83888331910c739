"""The `audit` section of keycard.yaml, including the example the README shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from keycard.config import ConfigError, parse_config
from tests.harness import CONFIG

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_audit_example_is_a_valid_config():
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"```yaml\n(audit:\n.*?)```", readme, re.S)
    assert example, "the README shows an audit section"
    config = parse_config(CONFIG + example.group(1))
    assert config.audit.destination_names == [
        "kinesis_firehose",
        "datadog",
        "s3",
        "kinesis",
        "jsonl",
        "stdout",
    ]


def test_no_audit_section_means_the_workers_own_log():
    assert parse_config(CONFIG).audit.destination_names == ["default"]


def test_an_empty_list_streams_nowhere():
    assert parse_config(CONFIG + "\naudit: {destinations: []}\n").audit.destination_names == []


@pytest.mark.parametrize(
    ("destination", "problem"),
    [
        ("{type: splunk}", "audit.destinations[0]: Input tag 'splunk' found using 'type'"),
        ("{type: s3}", "audit.destinations[0].bucket: is required"),
        ("{type: http, url: intake.example.com}", "audit.destinations[0].url: String should match"),
        ("{type: kinesis, stream: s, shards: 2}", "audit.destinations[0].shards: is not a known"),
    ],
)
def test_mistakes_are_reported_where_they_are(destination, problem):
    with pytest.raises(ConfigError) as error:
        parse_config(CONFIG + f"\naudit:\n  destinations: [{destination}]\n")
    assert any(line.startswith(problem) for line in error.value.problems), error.value.problems
