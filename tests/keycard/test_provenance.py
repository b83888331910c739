"""The policy behind every decision: each request records its flow's digest and keycard.yaml's
commit, stable across restarts, changed by an edit, and kept by a running request."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from keycard.config import load_config, parse_config
from keycard.provenance import COMMIT_ENV, config_source, flow_digest
from starter.cli.terminal import describe
from starter.client import KeycardClient
from tests.harness import BOB, CONFIG, ask, running_stack

HTTP_FLOW = """
flows:
  - name: deploy-db
    strategy: http
    http: {url: "https://grants.example.com/keycard", secret: "${GRANTS_SECRET}"}
    targets: [{name: primary}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_flows_digest_is_stable_and_an_edit_changes_it():
    first = parse_config(CONFIG).flow("prod-power-user")
    again = parse_config(CONFIG).flow("prod-power-user")  # as after a restart
    edited = parse_config(CONFIG.replace("max_duration: 4h", "max_duration: 8h"))
    assert flow_digest(first) == flow_digest(again)
    assert flow_digest(first).startswith("sha256:") and len(flow_digest(first)) == 71
    assert flow_digest(edited.flow("prod-power-user")) != flow_digest(first)
    # Another flow of the same file keeps its digest: an edit is seen flow by flow.
    assert flow_digest(edited.flow("prod-admin")) == flow_digest(
        parse_config(CONFIG).flow("prod-admin")
    )


def test_a_secret_is_digested_by_its_name_never_its_value(monkeypatch):
    monkeypatch.setenv("GRANTS_SECRET", "s3cr3t-value")
    flow = parse_config(HTTP_FLOW).flow("deploy-db")
    dumped = json.dumps(flow.model_dump(mode="json"))
    assert "GRANTS_SECRET" in dumped and "s3cr3t-value" not in dumped
    monkeypatch.setenv("GRANTS_SECRET", "rotated")
    assert flow_digest(parse_config(HTTP_FLOW).flow("deploy-db")) == flow_digest(flow)


def test_the_commit_and_path_of_a_file_in_a_git_work_tree(tmp_path):
    repo = tmp_path / "policy"
    (repo / "deploy").mkdir(parents=True)
    path = repo / "deploy" / "keycard.yaml"
    path.write_text(CONFIG)
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "policy")
    head = _git(repo, "rev-parse", "HEAD")

    source = config_source(path, environ={})
    assert (source.commit, source.path, source.dirty) == (head, "deploy/keycard.yaml", False)
    policy = load_config(path).policy_of(load_config(path).flow("prod-power-user"))
    assert policy.commit == head and policy.path == "deploy/keycard.yaml"

    path.write_text(CONFIG.replace("4h", "8h"))  # edited, not yet committed
    assert config_source(path, environ={}).dirty is True


def test_outside_a_work_tree_the_deployment_names_the_commit(tmp_path):
    path = tmp_path / "keycard.yaml"
    path.write_text(CONFIG)
    assert config_source(path, environ={}).commit is None
    source = config_source(path, environ={COMMIT_ENV: "0123456789abcdef"})
    assert (source.commit, source.path) == ("0123456789abcdef", None)


@pytest.mark.timeout(120)
async def test_a_running_request_keeps_its_policy_and_a_new_one_takes_the_edit(dev_env):
    before = parse_config(CONFIG)
    after = parse_config(CONFIG.replace("max_duration: 4h", "max_duration: 8h"))
    async with running_stack(dev_env.client, config=before) as stack:
        first = await ask(stack)
        edited = KeycardClient(stack.client, after, stack.task_queue)  # the file, edited
        second = await ask(edited)
        await stack.keycard.approve(first.id, BOB)

        old, new = (
            flow_digest(before.flow("prod-power-user")),
            flow_digest(after.flow("prod-power-user")),
        )
        assert old != new
        assert (await stack.keycard.get(first.id)).policy.digest == old
        assert (await edited.get(second.id)).policy.digest == new
        created = await stack.audit.wait_for(first.id, "request.created")
        assert created.detail["policy"]["digest"] == old
        assert f"policy:    {old[:19]}" in describe(await stack.keycard.get(first.id), policy=True)
