"""The Slack changes to AccessRequestWorkflow (request.pending, access.expiring) are behind
workflow.patched: a request started by the code before them replays unchanged, and one started
since replays too. The histories are in tests/histories/: a 1h prod-power-user request from the
harness CONFIG, approved by signal once checked, run to its end on the time-skipping server with
the Recorder activities of test_expiry_warning (the first with main's workflow as of 5dd3ac7)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.access_request import AccessRequestWorkflow

HISTORIES = Path(__file__).parent.parent / "histories"


@pytest.mark.parametrize(
    "name",
    [
        "access_request_before_slack.json",  # main's workflow, before either change
        "access_request_expiry_warning.json",  # pending, approved, granted, warned, ended
    ],
)
async def test_history_replays(name: str):
    text = (HISTORIES / name).read_text()
    workflow_id = name.removesuffix(".json")
    history = WorkflowHistory.from_json(workflow_id, text)
    replayer = Replayer(workflows=[AccessRequestWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


def test_the_new_history_records_both_patches():
    events = json.loads((HISTORIES / "access_request_expiry_warning.json").read_text())["events"]
    patches = [
        json.loads(base64.b64decode(payload["data"]))["id"]
        for e in events
        if e.get("markerRecordedEventAttributes", {}).get("markerName") == "core_patch"
        for payload in e["markerRecordedEventAttributes"]["details"]["patch-data"]["payloads"]
    ]
    assert patches == ["request-pending-event", "expiry-warning"]
