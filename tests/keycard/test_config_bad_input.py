"""keycard.yaml mistakes that used to pass, or end in a traceback: each is refused with a
sentence that says what to do."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from keycard.config import ConfigError, load_config, parse_config, unset_environment
from keycard.settings import Settings
from main import app
from starter.cli.terminal import start_problems
from tests.keycard.test_config import GOOD, flow, problems
from worker import build_activities

runner = CliRunner()
HTTP_AUDIT = """
audit:
  destinations:
    - {type: http, name: siem, url: "https://intake.example.com", headers: {DD-API-KEY: "${DD_API_KEY}"}}
"""


def test_an_unquoted_account_id_with_a_leading_zero_says_to_quote_it():
    [problem] = problems(
        flow(targets="[{name: prod, account_id: 011111111111, permission_set: P}]")
    )
    assert "in quotes" in problem and 'account_id: "011111111111"' in problem


def test_a_key_given_twice_is_refused_with_its_line():
    [problem] = problems(GOOD + "    durations: [2h]\n")
    assert "line 11" in problem and "'durations' is given twice" in problem


def test_a_file_that_is_not_utf8_is_refused_without_a_traceback(tmp_path: Path):
    path = tmp_path / "keycard.yaml"
    path.write_bytes(GOOD.encode() + b"# caf\xe9\n")

    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)
    result = runner.invoke(app, ["flows", "validate", str(path)])
    assert result.exit_code == 1, result.output
    assert "save the file as UTF-8" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("where", ["../outside.py", "{tmp}/elsewhere/hooks.py"])
def test_a_hooks_file_outside_the_config_dir_is_refused_unless_allowed(tmp_path: Path, where):
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    where = where.format(tmp=tmp_path)
    hook = (config_dir / where).resolve()
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text("")
    path = config_dir / "keycard.yaml"
    path.write_text(flow(hooks=f'"{where}"'))

    with pytest.raises(ConfigError, match="is outside"):
        load_config(path)
    path.write_text("allow_hooks_outside_config_dir: true\n" + flow(hooks=f'"{where}"'))
    assert load_config(path).flows[0].hooks == where


def test_an_unset_header_variable_is_named_by_validate_doctor_and_the_worker(tmp_path, monkeypatch):
    monkeypatch.delenv("DD_API_KEY", raising=False)
    path = tmp_path / "keycard.yaml"
    path.write_text(GOOD + HTTP_AUDIT)
    config = parse_config(GOOD + HTTP_AUDIT)

    assert unset_environment(config) == [
        "audit.destinations[0].headers.DD-API-KEY: ${DD_API_KEY} is not set in this "
        "environment; set it where the worker runs"
    ]
    assert unset_environment(config, {"DD_API_KEY": "x"}) == []
    validated = runner.invoke(app, ["flows", "validate", str(path)])
    assert validated.exit_code == 0 and "warning: audit.destinations[0]" in validated.output
    worker = runner.invoke(app, ["worker", "--config", str(path)])
    assert worker.exit_code == 1, worker.output
    assert "the worker cannot start" in worker.output and "${DD_API_KEY}" in worker.output


def test_a_worker_without_an_aws_region_refuses_to_start(tmp_path, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    path = tmp_path / "keycard.yaml"
    path.write_text(GOOD)

    worker = runner.invoke(app, ["worker", "--config", str(path)])

    assert worker.exit_code == 1, worker.output
    assert "no AWS region: set aws.region in keycard.yaml or AWS_REGION" in worker.output


@pytest.mark.parametrize("command", ["worker", "dev"])
def test_a_pagerduty_url_that_is_not_https_stops_the_start_with_a_sentence(
    tmp_path, monkeypatch, command
):
    monkeypatch.setenv("PAGERDUTY_API_KEY", "u+key")
    monkeypatch.setenv("PAGERDUTY_API_URL", "http://pagerduty.internal")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    path = tmp_path / "keycard.yaml"
    path.write_text(GOOD)

    started = runner.invoke(app, [command, "--config", str(path)])

    assert started.exit_code == 1, started.output
    assert "PAGERDUTY_API_URL must be an https:// URL" in started.output
    assert "'http://pagerduty.internal'" in started.output


def test_a_worker_whose_flows_use_no_aws_needs_no_aws_region(tmp_path, monkeypatch):
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("ACCESS_SECRET", "s")
    config = parse_config(
        """
flows:
  - name: billing-db
    strategy: http
    http: {url: "https://access.example.com/keycard", secret: "${ACCESS_SECRET}"}
    targets: [{name: billing}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""
    )
    assert not config.uses_aws
    assert start_problems(config) == []
    activities = build_activities(None, config, Settings(audit_stdout=False, state_dir=tmp_path))
    names = {getattr(a, "__temporal_activity_definition").name for a in activities}
    assert {"http.grant", "aws_sso.grant"} <= names  # AWS still registered, for old requests
