"""Golden histories in tests/histories/ replay on today's workflow code.

A workflow change that would break running requests fails here, in CI, instead of in production.
Change workflows compatibly (`workflow.patched`), and record new golden files with
`python -m tests.histories.record` rather than overwriting the old ones.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

from worker import keycard_replayer

HISTORIES = Path(__file__).resolve().parents[1] / "histories"
GOLDEN = sorted(p for p in HISTORIES.glob("*.json") if not p.name.startswith("nondeterministic"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(path.stem, path.read_text(encoding="utf-8"))


def replayer(strict: bool = False) -> Replayer:
    return keycard_replayer(strict=strict)


def test_there_are_golden_histories_of_both_workflows():
    names = {p.name.split("_", 1)[0] for p in GOLDEN}
    assert {"request", "grant", "sessions", "drift"} <= names, (
        f"missing golden histories in {HISTORIES}"
    )
    assert len(GOLDEN) >= 5


@pytest.mark.parametrize("strict", [False, True], ids=["worker-sandbox", "strict-sandbox"])
@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
async def test_golden_history_replays(path: Path, strict: bool):
    """Under the workers' runner, and under the SDK's default sandbox, which imports the workflow
    modules afresh in the sandbox for every run (workflows/runner.py)."""
    result = await replayer(strict).replay_workflow(load(path), raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"


async def test_an_incompatible_history_fails_replay():
    """The harness must catch a break: this history came from a different workflow body."""
    with pytest.raises(NondeterminismError):
        await replayer().replay_workflow(load(HISTORIES / "nondeterministic_request.json"))
