"""`config.loaded`: each worker says at start which config it loaded; the task queue's
ConfigWorkflow audits a config unlike the last one, flow by flow, chained like a request's events,
and keeps doing so across continue-as-new."""

from __future__ import annotations

import asyncio
import json

from temporalio.client import WorkflowExecutionStatus
from typer.testing import CliRunner

from keycard import temporal as names
from keycard.audit_chain import event_hash, verify_chain
from keycard.config import parse_config
from keycard.models import ConfigHistoryInput, ConfigLoaded
from main import app
from starter.audit_trail import export_events
from tests.harness import CONFIG, HeldSink, cancel_heard, running_stack
from tests.polling import eventually
from worker import announce_config
from workflows.config import ConfigWorkflow

EDITED = CONFIG.replace("max_duration: 4h", "max_duration: 8h")
SECOND_FLOW = (
    CONFIG
    + """
  - name: dr-read-only
    strategy: aws_sso
    targets: [{name: dr, account_id: "222222222222", permission_set: ReadOnlyAccess}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""
)


async def _loaded(stack, n: int):
    await eventually(
        lambda: (
            len(stack.audit.of(names.config_workflow_id(stack.task_queue), "config.loaded")) >= n
        ),
        f"{n} config.loaded event(s)",
    )
    return stack.audit.of(names.config_workflow_id(stack.task_queue), "config.loaded")


async def test_a_worker_start_is_audited_only_when_the_config_differs(dev_env):
    original, edited = parse_config(CONFIG), parse_config(EDITED)
    async with running_stack(dev_env.client, original) as stack:
        await announce_config(stack.client, original, stack.task_queue)
        [first] = await _loaded(stack, 1)
        assert first.detail["added"] == ["prod-admin", "prod-power-user"]
        assert first.detail["digest"] == original.policy().digest
        assert first.actor is not None and first.actor.rule == names.CONFIG_ACTOR
        assert first.detail["worker"] == stack.client.identity
        assert first.prev_hash is None and first.hash == event_hash(first.model_dump(mode="json"))

        await announce_config(stack.client, original, stack.task_queue)  # a restart
        await announce_config(stack.client, edited, stack.task_queue)  # a deploy
        first_again, change = await _loaded(stack, 2)
        assert first_again == first
        assert (change.detail["added"], change.detail["removed"]) == ([], [])
        assert change.detail["changed"] == ["prod-power-user"]
        assert change.detail["flows"]["prod-admin"] == first.detail["flows"]["prod-admin"]
        assert "changed prod-power-user" in change.reason
        assert change.prev_hash == first.hash and change.id.endswith("/2")

        record = dev_env.client.get_workflow_handle(names.config_workflow_id(stack.task_queue))
        current = await record.query(names.CONFIG_CURRENT, result_type=ConfigLoaded)
        assert current is not None and current.policy == edited.policy()
        await record.terminate()


async def test_the_record_continues_as_new_and_its_chain_with_it(dev_env, monkeypatch, tmp_path):
    configs = [parse_config(text) for text in (CONFIG, SECOND_FLOW, CONFIG)]
    async with running_stack(dev_env.client, configs[0]) as stack:
        workflow_id = names.config_workflow_id(stack.task_queue)
        handle = await dev_env.client.start_workflow(
            ConfigWorkflow.run,
            ConfigHistoryInput(task_queue=stack.task_queue, continue_after=1),
            id=workflow_id,
            task_queue=stack.task_queue,
        )
        started = (await handle.describe()).start_time
        for config in configs:
            await announce_config(stack.client, config, stack.task_queue)
        events = await _loaded(stack, 3)
        assert [e.detail["added"] for e in events] == [
            ["prod-admin", "prod-power-user"], ["dr-read-only"], []
        ]  # fmt: skip
        assert events[2].detail["removed"] == ["dr-read-only"]
        assert len({e.run_id for e in events}) == 3  # one run per load
        assert verify_chain(e.model_dump(mode="json") for e in events).ok

        async def exported():
            found = await export_events(dev_env.client, since=started)
            mine = [e for e in found if e.request_id == workflow_id]
            return mine if len(mine) == 3 else None

        assert await eventually(exported, "the three runs in visibility") == events
        # `keycard audit verify` reads the record's every run from history.
        trail = tmp_path / "config.jsonl"
        trail.write_text("".join(json.dumps(e.model_dump(mode="json")) + "\n" for e in events))
        monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
        result = await asyncio.to_thread(CliRunner().invoke, app, ["audit", "verify", str(trail)])
        assert result.exit_code == 0, result.output
        await dev_env.client.get_workflow_handle(workflow_id).terminate()


class _Unreachable:
    identity = "1@nowhere"

    async def start_workflow(self, *args, **kwargs):
        raise RuntimeError("connection refused")


async def test_a_worker_that_cannot_record_its_config_still_starts(capsys):
    config = parse_config(CONFIG)
    await announce_config(_Unreachable(), config, "some-queue")  # type: ignore[arg-type]
    assert "config.announce_failed" in capsys.readouterr().out


async def test_a_terminated_record_is_started_again_where_it_stood(dev_env, monkeypatch, tmp_path):
    """Someone ended the record by hand (a cancel it carries on through; a termination it cannot):
    the next worker starts a new one that goes on with the ids, the chain and the last config,
    even when the run it follows recorded nothing of its own."""
    original, edited = parse_config(CONFIG), parse_config(EDITED)
    async with running_stack(dev_env.client, original) as stack:
        record = dev_env.client.get_workflow_handle(names.config_workflow_id(stack.task_queue))
        await announce_config(stack.client, original, stack.task_queue)
        [first] = await _loaded(stack, 1)
        await record.cancel()  # taken as nothing, even while the event is still being delivered
        await announce_config(stack.client, original, stack.task_queue)
        described = await record.describe()
        assert (described.status, described.run_id) == (
            WorkflowExecutionStatus.RUNNING,
            first.run_id,
        )

        for _ in range(2):  # the second run follows one that recorded nothing
            await record.terminate("cleaning up long-running workflows")
            await announce_config(stack.client, original, stack.task_queue)  # the same: no event
        await announce_config(stack.client, edited, stack.task_queue)
        _, change = await _loaded(stack, 2)
        assert len(stack.audit.of(record.id, "config.loaded")) == 2
        assert change.id.endswith("/2") and change.prev_hash == first.hash
        assert change.detail["changed"] == ["prod-power-user"] and change.detail["added"] == []
        assert change.run_id != first.run_id
        assert verify_chain(e.model_dump(mode="json") for e in (first, change)).ok

        # `keycard audit verify` finds each event in the run that recorded it.
        trail = tmp_path / "config.jsonl"
        trail.write_text("".join(e.model_dump_json() + "\n" for e in (first, change)))
        monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)

        async def verified():
            result = await asyncio.to_thread(
                CliRunner().invoke, app, ["audit", "verify", str(trail)]
            )
            return result if result.exit_code == 0 else None

        assert "OK" in (await eventually(verified, "the three runs in visibility")).output
        await record.terminate()


async def test_a_cancel_while_an_event_is_delivered_does_not_end_the_record(dev_env):
    """A cancel request that comes while a config.loaded is still on its way to a destination
    neither cancels the delivery nor ends the record (PATCH_V15; before, the record ended and the
    next worker started another run)."""
    original, edited = parse_config(CONFIG), parse_config(EDITED)
    sink = HeldSink()
    async with running_stack(dev_env.client, original, audit_sinks={"default": sink}) as stack:
        record = dev_env.client.get_workflow_handle(names.config_workflow_id(stack.task_queue))
        await announce_config(stack.client, original, stack.task_queue)
        await asyncio.wait_for(sink.writing.wait(), timeout=20)
        await record.cancel()
        await eventually(lambda: cancel_heard(record), "the record to hear the cancel request")
        sink.released.set()
        await announce_config(stack.client, edited, stack.task_queue)
        await eventually(lambda: len(sink.of(record.id, "config.loaded")) == 2, "two loads")
        first, change = sink.of(record.id, "config.loaded")
        assert change.run_id == first.run_id and change.prev_hash == first.hash
        assert (await record.describe()).status is WorkflowExecutionStatus.RUNNING
        await record.terminate()
