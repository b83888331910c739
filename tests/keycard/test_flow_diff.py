"""`keycard flows diff`: what a reviewer approves, flow by flow, on the README's two example files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from typer.testing import CliRunner

from keycard.config import load_config
from keycard.flow_diff import diff_configs
from keycard.provenance import flow_digest
from main import app

ROOT = Path(__file__).resolve().parents[2]
BEFORE = ROOT / "examples" / "flows" / "before.yaml"
AFTER = ROOT / "examples" / "flows" / "after.yaml"


def test_the_example_change_reads_as_a_reviewer_needs_it():
    result = CliRunner().invoke(app, ["flows", "diff", str(BEFORE), str(AFTER)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    changed = lines[lines.index("flow prod-power-user: changed") :]
    for expected in (
        "  targets: added staging (",
        "  approvals_required: 2 → 1",
        "  auto_approve: added {pagerduty_on_call: {schedules: [PABC123]}, max_duration: 1h}",
        "  durations: added 4h",
        "  max_duration: 2h → 4h",
        "  approver group sre-leads: added erin@example.com, removed dave@example.com",
    ):
        assert any(line.startswith(expected) for line in changed), (expected, result.output)
    assert "flow db-admin: added" in lines and "flow billing-read: removed" in lines
    old, new = load_config(BEFORE), load_config(AFTER)
    digests = f"  digest: {flow_digest(old.flow('prod-power-user'))} → "
    assert any(line.startswith(digests) for line in changed)
    assert f"{flow_digest(new.flow('prod-power-user'))}" in result.output


def test_json_output_and_no_change():
    result = CliRunner().invoke(app, ["flows", "diff", str(BEFORE), str(AFTER), "-o", "json"])
    changes = {c["flow"]: c for c in json.loads(result.output)}
    assert {name: c["change"] for name, c in changes.items()} == {
        "db-admin": "added",
        "prod-power-user": "changed",
        "billing-read": "removed",
    }
    assert diff_configs(load_config(BEFORE), load_config(BEFORE)) == []
    same = CliRunner().invoke(app, ["flows", "diff", str(BEFORE), str(BEFORE)])
    assert "No flow changes" in same.output


def test_two_commits_of_one_file(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "keycard.yaml").write_text(BEFORE.read_text())

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "before")
    (repo / "keycard.yaml").write_text(AFTER.read_text())
    git("-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qam", "after")
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["flows", "diff", "HEAD~1:keycard.yaml", "HEAD:keycard.yaml"])
    assert result.exit_code == 0, result.output
    assert "  approvals_required: 2 → 1" in result.output


def test_what_cannot_be_read_is_said_plainly(tmp_path):
    result = CliRunner().invoke(app, ["flows", "diff", "nope:keycard.yaml", str(AFTER)])
    assert result.exit_code == 1
    assert "nope:keycard.yaml is neither a file nor something git can show" in result.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("flows: []\n")
    result = CliRunner().invoke(app, ["flows", "diff", str(broken), str(AFTER)])
    assert result.exit_code == 1 and "problem" in result.output
