"""The drift sweep's Temporal Schedule: made by every worker at start, read by `keycard drift`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.service import RPCError, RPCStatusCode

from keycard import policy
from keycard import temporal as names
from keycard.config import AwsSsoFlow, KeycardConfig
from keycard.durations import format_duration
from keycard.models import DriftReport, DriftSweepInput, DriftTarget, TargetRef

log = structlog.get_logger(__name__)


def sweep_input(config: KeycardConfig) -> DriftSweepInput:
    """Every aws_sso target once (two flows may name one): removing unmanaged assignments, or
    ending sessions, where any flow that grants it says so."""
    targets: dict[tuple[str, str], DriftTarget] = {}
    for flow in config.flows:
        if not isinstance(flow, AwsSsoFlow):
            continue
        for target in flow.targets:
            key = (target.account_id, target.permission_set)
            seen = targets.get(key)
            if seen is not None:
                seen.remove_unmanaged |= flow.remove_unmanaged
                if flow.ends_sessions and not seen.end_sessions:
                    seen.sessions_policy = flow.end_sessions_policy
                seen.end_sessions |= flow.ends_sessions
                continue
            targets[key] = DriftTarget(
                flow=flow.name,
                target=TargetRef(
                    name=target.name,
                    label=target.label or target.name,
                    strategy=flow.strategy,
                    settings=policy.target_settings(target),
                ),
                account_id=target.account_id,
                permission_set=target.permission_set,
                max_duration=flow.maximum,
                remove_unmanaged=flow.remove_unmanaged,
                end_sessions=flow.ends_sessions,
                sessions_policy=flow.end_sessions_policy if flow.ends_sessions else None,
            )
    return DriftSweepInput(
        targets=list(targets.values()), audit_destinations=config.audit.destination_names
    )


def drift_schedule(config: KeycardConfig, task_queue: str, every: timedelta) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            names.DRIFT_SWEEP_WORKFLOW,
            sweep_input(config),
            id=names.DRIFT_SCHEDULE_ID,  # Temporal appends the time of each run
            task_queue=task_queue,
            static_summary="Keycard drift sweep: AWS against the grants Keycard holds",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        # A sweep still running when the next is due: skip that one, never two at once.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_drift_schedule(client: Client, config: KeycardConfig, task_queue: str) -> None:
    """Create the sweep's schedule, or bring it in line with this config (targets, interval);
    `drift.every: null` deletes it. Every worker does this at start: the last one wins, and they
    all run the same config."""
    every = config.drift.every
    handle = client.get_schedule_handle(names.DRIFT_SCHEDULE_ID)
    if every is None:
        try:
            await handle.delete()
            log.info("drift.schedule_deleted")
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
        return
    schedule = drift_schedule(config, task_queue, every)
    try:
        await client.create_schedule(names.DRIFT_SCHEDULE_ID, schedule)
        log.info("drift.schedule_created", every=format_duration(every))
    except ScheduleAlreadyRunningError:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await handle.update(update)
        log.info("drift.schedule_updated", every=format_duration(every))


async def last_sweep(client: Client) -> tuple[DriftReport | None, str]:
    """The most recent finished sweep's report (None if none finished yet) and a line about the
    schedule: when it runs, and whether a sweep is running now."""
    handle = client.get_schedule_handle(names.DRIFT_SCHEDULE_ID)
    try:
        described = await handle.describe()
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise LookupError(
                "no drift sweep is scheduled: start a worker (`keycard worker` or `keycard dev`) "
                "with drift.every set in keycard.yaml (the default is 15m)"
            ) from None
        raise
    info = described.info
    intervals = described.schedule.spec.intervals
    every = format_duration(intervals[0].every) if intervals else "?"
    upcoming = info.next_action_times[0] if info.next_action_times else None
    about = f"sweeps every {every}" + (
        f"; next at {upcoming:%Y-%m-%d %H:%M:%S} UTC" if upcoming else ""
    )
    if info.running_actions:
        about += "; one is running now"
    for action in reversed(info.recent_actions):
        workflow_id = action.action.workflow_id
        run = client.get_workflow_handle(
            workflow_id, run_id=action.action.first_execution_run_id, result_type=DriftReport
        )
        if (await run.describe()).status == WorkflowExecutionStatus.COMPLETED:
            return await run.result(), about
    return None, about


async def sweep_now(client: Client) -> DriftReport:
    """Trigger the schedule and wait for that sweep's report."""
    handle = client.get_schedule_handle(names.DRIFT_SCHEDULE_ID)
    before = {a.action.workflow_id for a in (await handle.describe()).info.recent_actions}
    await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    for _ in range(600):
        described = await handle.describe()
        # Finished ones are results around the execution; running ones are the execution.
        executions = [
            *(result.action for result in described.info.recent_actions),
            *described.info.running_actions,
        ]
        started = [e for e in executions if e.workflow_id not in before]
        if started:
            run = client.get_workflow_handle(
                started[0].workflow_id,
                run_id=started[0].first_execution_run_id,
                result_type=DriftReport,
            )
            return await run.result()
        await asyncio.sleep(0.1)
    raise TimeoutError("the triggered sweep did not start within a minute; is a worker running?")
