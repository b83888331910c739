"""A workflow runner under which an update takes the same place in history live and on replay.

The SDK starts an update's handler (and writes its acceptance) as soon as the update's job is
applied, before the work that the other jobs of the same activation set off. That is only
deterministic if the update arrives in the same activation live and on replay, and it does not
always. A worker that was not running a request can be handed a query for it while the request's
workflow task waits on a killed worker's sticky queue; to answer, it applies the events waiting in
history (a `lease.granted` signal, say) and runs the workflow on them. When the task then reaches
it, carrying a `revoke` update, the update is alone in its activation, so the history records the
signal's work (a cancelled timer, the `access.granted` event) and then the acceptance. Replay
cannot know about the query: it hands the signal and the update over together, the SDK accepts the
update first, and every later task of the request fails with TMPRL1100.

Under this runner, a workflow that opts in (`UPDATES_LAST` true on the workflow object) has an
update wait until the work already in hand has run as far as it can go; then the update is
accepted, and runs to the same point before the next one. Whether the jobs came in one activation
or two, the history is the same. Requests opt in with `workflow.patched`, so those started before
keep the SDK's order on replay. tests/workflows/test_update_order.py rebuilds the situation with a
killed worker, a query and a signal, and replays the result.

Replayers must use the same runner: `keycard_workflow_runner()`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.bridge.proto.workflow_activation import (
    DoUpdate,
    WorkflowActivation,
    WorkflowActivationJob,
)
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.worker import UnsandboxedWorkflowRunner, WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker._workflow_instance import _WorkflowInstanceImpl
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

UPDATES_LAST = "keycard_updates_last"
"""The workflow object's attribute that opts it in; set it from `workflow.patched` in __init__."""


class UpdatesLastRunner(UnsandboxedWorkflowRunner):
    """Runs workflows like the SDK's runner, with updates held back as described above."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _UpdatesLastInstance(det)  # type: ignore[abstract]


def keycard_workflow_runner(*, strict: bool = False) -> SandboxedWorkflowRunner:
    """The sandboxed runner every Keycard worker and replayer uses.

    The sandbox still refuses non-deterministic calls (the clock, randomness, I/O), but it does
    not import the workflow modules afresh for every run: that took about half the worker's CPU
    per request (bench/). It is safe while nothing a workflow imports keeps state between runs:
    keycard/ and workflows/ are pure and hold no mutable module globals (keep it so). `strict`
    gives the SDK's default (every run imports anew, in the sandbox), which
    tests/workflows/test_replay.py also replays under: a workflow module that did something
    non-deterministic when imported fails there.
    """
    restrictions = SandboxRestrictions.default
    if not strict:
        restrictions = restrictions.with_passthrough_all_modules()
    return SandboxedWorkflowRunner(runner_class=UpdatesLastRunner, restrictions=restrictions)


class _UpdatesLastInstance(_WorkflowInstanceImpl):
    def __init__(self, det: WorkflowInstanceDetails) -> None:
        super().__init__(det)
        self._held_updates: list[DoUpdate] = []

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        self._held_updates = []
        return super().activate(act)

    def _apply_do_update(self, job: DoUpdate) -> None:
        # The workflow object exists from the end of the first activation; an update in that
        # one (update-with-start) keeps the SDK's order, live and on replay alike.
        if getattr(self._object, UPDATES_LAST, False):
            self._held_updates.append(job)
        else:
            super()._apply_do_update(job)

    def _run_once(self, *, check_conditions: bool, **kwargs: Any) -> None:
        super()._run_once(check_conditions=check_conditions, **kwargs)
        while self._held_updates:
            job = self._held_updates.pop(0)
            super()._apply_do_update(job)
            # As the SDK does for an activation of updates alone: conditions are checked only
            # once the update is accepted (a rejected one leaves no trace to replay).
            jobs: Sequence[WorkflowActivationJob] = [WorkflowActivationJob(do_update=job)]
            super()._run_once(check_conditions=True, jobs=jobs)
