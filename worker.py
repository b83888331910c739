"""Runs the Temporal worker: every workflow and activity, wired to real clients from settings."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta

import boto3
import structlog
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, Worker
from temporalio.worker._workflow_instance import _WorkflowLogicFlag

from activities.audit import AuditActivities, AuditBacklog, build_audit_sinks
from activities.aws import activity_readers, drift_activities, session_activities
from activities.delivery import DeliveryActivities
from activities.hooks import hook_activities
from activities.leases import GrantActivities, LeaseActivities
from activities.metrics import ActivityMetrics
from activities.notify import ConsoleNotifier
from activities.registry import StrategyContext, strategy_activities
from activities.slack import SlackApprovers, SlackNotConfigured, SlackNotifier, web_client
from keycard import temporal as names
from keycard.codec import data_converter_from_env, require_keys_for
from keycard.config import KeycardConfig
from keycard.models import ConfigHistoryInput, ConfigLoaded
from keycard.provenance import ConfigPolicy
from keycard.settings import WORKFLOW_CACHE, Settings, SlackSettings
from starter.telemetry import Gauges, gauges_running
from workflows.access_request import AccessRequestWorkflow
from workflows.config import ConfigWorkflow
from workflows.drift import DriftSweepWorkflow
from workflows.grant import GrantWorkflow
from workflows.runner import keycard_workflow_runner
from workflows.sessions import SessionPolicyWorkflow

log = structlog.get_logger(__name__)

UNUSED_AWS_REGION = "us-east-1"
CONFIG_ANNOUNCE_TIMEOUT = timedelta(seconds=10)
WORKFLOWS = [
    AccessRequestWorkflow,
    GrantWorkflow,
    SessionPolicyWorkflow,
    DriftSweepWorkflow,
    ConfigWorkflow,
]


def build_activities(
    client: Client,
    config: KeycardConfig,
    settings: Settings,
    backlog: AuditBacklog | None = None,
) -> list[Callable]:
    """Every activity, bound to the real outside clients its module needs; `backlog` hears how
    audit delivery goes (the metrics endpoint's gauges)."""
    session = boto3.session.Session(region_name=config.aws.region)
    if session.region_name is None and not config.uses_aws:
        # No flow uses AWS (the worker refuses to start without a region otherwise): the AWS
        # activities are still registered, for a request of an AWS flow this file no longer
        # has, but their clients need some region to be made at all.
        session = boto3.session.Session(region_name=UNUSED_AWS_REGION)
    leases = LeaseActivities(client, settings.task_queue)
    return [
        *strategy_activities(StrategyContext(config, session, config.base_dir)),
        *session_activities(session, config.aws),
        *activity_readers(session, config.aws),
        *drift_activities(client, session, config.aws, settings.task_queue),
        leases.take_lease,
        leases.acquire_lease,
        leases.release_lease,
        leases.request_end_sessions,
        AuditActivities(build_audit_sinks(config.audit, settings, config.aws), backlog).deliver,
        *chat_activities(SlackSettings.from_env()),
        *hook_activities(session, config, config.base_dir),
    ]


def chat_activities(slack: SlackSettings) -> list[Callable]:
    """Slack when SLACK_BOT_TOKEN is set; otherwise notifications go to the console."""
    if not slack.enabled:
        return [
            ConsoleNotifier(console_url=slack.console_url).send,
            SlackNotConfigured().resolve_approvers,
        ]
    assert slack.bot_token is not None
    client = web_client(slack.bot_token, slack.api_url)
    return [
        SlackNotifier(client, console_url=slack.console_url).send,
        SlackApprovers(client).resolve_approvers,
    ]


def build_worker(
    client: Client,
    config: KeycardConfig,
    settings: Settings,
    activities: Sequence[Callable] | None = None,
    backlog: AuditBacklog | None = None,
) -> Worker:
    """The worker for Keycard's task queue; `activities` replaces the real ones (tests, fakes)."""
    return keycard_worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=(
            list(activities)
            if activities is not None
            else build_activities(client, config, settings, backlog)
        ),
        # A stopping worker takes no new tasks and gives in-flight activities this long to
        # finish; what is still running then is cancelled and retried on another worker.
        graceful_shutdown_timeout=settings.worker_shutdown_grace,
        max_cached_workflows=settings.worker_max_cached_workflows,
    )


def _by_name(activities: Sequence[Callable]) -> dict[str, Callable]:
    by_name = {}
    for function in activities:
        definition = activity._Definition.from_callable(function)
        if definition is not None and definition.name is not None:
            by_name[definition.name] = function
    return by_name


def with_delivery_rounds(activities: Sequence[Callable]) -> list[Callable]:
    """`activities` plus `delivery.round`, made of the `audit.deliver` and `notify.send` among them
    (activities/delivery.py), when there is either and no round of its own."""
    by_name = _by_name(activities)
    if names.DELIVER_ROUND in by_name or not (
        names.DELIVER_AUDIT in by_name or names.SEND_NOTIFICATION in by_name
    ):
        return list(activities)
    rounds = DeliveryActivities(
        by_name.get(names.DELIVER_AUDIT), by_name.get(names.SEND_NOTIFICATION)
    )
    return [*activities, rounds.deliver]


def with_grant_and_tell(client: Client, activities: Sequence[Callable]) -> list[Callable]:
    """`activities` plus `leases.grant`, made of the strategies' `<strategy>.grant` among them
    (activities/leases.py), when there is one and no `leases.grant` of its own."""
    by_name = _by_name(activities)
    grants = {name: fn for name, fn in by_name.items() if name.endswith(".grant")}
    if names.GRANT_AND_TELL in by_name or not grants:
        return list(activities)
    return [*activities, GrantActivities(client, grants).grant_and_tell]


def keycard_worker(client: Client, **options) -> Worker:
    """A Temporal worker that runs Keycard's workflows as their histories expect: activation jobs
    applied as one batch (below) and updates after the work in hand (workflows/runner.py), and
    the activities made of the ones it is given: `delivery.round` (of audit.deliver and
    notify.send) and `leases.grant` (of the strategies' grants). Every worker that runs them,
    tests included, is made here."""
    options.setdefault("max_cached_workflows", WORKFLOW_CACHE)
    options["interceptors"] = [*options.get("interceptors", ()), ActivityMetrics()]
    if "activities" in options:
        options["activities"] = with_grant_and_tell(
            client, with_delivery_rounds(options["activities"])
        )
    return apply_jobs_as_one_batch(
        Worker(client, workflow_runner=keycard_workflow_runner(), **options)
    )


def keycard_replayer(*, strict: bool = False, **options) -> Replayer:
    """A Replayer for Keycard's histories, with the workflow runner their workers use (`strict`:
    in the SDK's default sandbox, which imports the workflow modules afresh for every run)."""
    options.setdefault("workflows", WORKFLOWS)
    return Replayer(
        data_converter=data_converter_from_env(),
        workflow_runner=keycard_workflow_runner(strict=strict),
        **options,
    )


def apply_jobs_as_one_batch(worker: Worker) -> Worker:
    """Have the worker apply every job of an activation before any workflow code runs.

    A worker rebuilding a request from history (after a restart or a redeploy) may be handed an
    activity completion and a decision together that the first worker saw in two workflow tasks
    (temporalio/sdk-python#1591). By default the SDK applies the decision first, the request's
    delivery loops then wake in another order than they did, and every later task fails with
    TMPRL1100, stranding the request. With this flag the order is the one history records. The SDK
    writes the flag into each history it is used for, so histories written without it replay as
    before, and it plans to make it the default (`_DEFAULT_ENABLED_WORKFLOW_LOGIC_FLAGS`); until
    then this private switch is the way to turn it on, and tests/workflows/test_cold_worker.py
    fails if it stops working. Under the flag, a cancel request from Temporal raises
    CancelledError once out of every pending wait: workflows/waiting.py carries waits through it.
    """
    worker._set_default_workflow_logic_flag(
        _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH, enabled=True
    )
    return worker


async def run_worker(
    client: Client,
    config: KeycardConfig,
    settings: Settings,
    stop: asyncio.Event | None = None,
    *,
    activities: Sequence[Callable] | None = None,
    on_state: Callable[[str, str], None] | None = None,
) -> None:
    """Run until `stop` is set or SIGINT/SIGTERM arrives, then drain and return.

    `on_state(state, detail)` hears "ready", "draining", "stopped" or "failed" (health endpoints).
    A worker that fails on its own (say, its namespace vanished) raises instead of idling.
    """
    stop = stop or asyncio.Event()
    report = on_state or (lambda state, detail: None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Outside the main thread signals cannot be handled here: the caller owns `stop` then.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, _on_signal, stop, sig)
    backlog = AuditBacklog()
    worker = build_worker(client, config, settings, activities, backlog)
    runtime = client.service_client.config.runtime
    gauges = (
        Gauges(client, runtime, backlog=backlog, destinations=config.audit.destination_names)
        if settings.metrics_address and runtime is not None
        else None
    )
    running = asyncio.create_task(worker.run(), name="keycard-worker")
    stopping = asyncio.create_task(stop.wait(), name="keycard-worker-stop")
    log.info("worker.started", task_queue=settings.task_queue, namespace=client.namespace)
    await _schedule_drift_sweep(client, config, settings)
    await announce_config(client, config, settings.task_queue)
    report("ready", "")
    try:
        async with gauges_running(gauges):
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            grace = settings.worker_shutdown_grace.total_seconds()
            log.info("worker.draining", grace_seconds=grace)
            report("draining", f"finishing in-flight work (up to {grace:g}s)")
            await worker.shutdown()
        await running  # a worker that stopped by itself raises its error here
    except asyncio.CancelledError:
        # The caller gave up on us (say, `keycard dev` shutting down): drain all the same.
        if not running.done():
            report("draining", "cancelled")
            await worker.shutdown()
        raise
    except Exception as err:
        report("failed", str(err))
        log.error("worker.failed", error=str(err))
        raise
    finally:
        stopping.cancel()
    report("stopped", "")
    log.info("worker.stopped")


async def _schedule_drift_sweep(client: Client, config: KeycardConfig, settings: Settings) -> None:
    """Create or update the drift sweep's Schedule; a failure is logged, never fatal: the sweep
    is a safety net, and grants and revocations do not depend on it."""
    from starter.run.drift import ensure_drift_schedule

    try:
        await ensure_drift_schedule(client, config, settings.task_queue)
    except Exception as err:
        log.error("drift.schedule_failed", error=str(err))


async def announce_config(client: Client, config: KeycardConfig, task_queue: str) -> None:
    """Tell the task queue's ConfigWorkflow which config this worker loaded (starting it if need
    be), which audits `config.loaded` when it differs from the last one (workflows/config.py).
    A failure is logged, never fatal: the record is for auditors, and no grant waits on it."""
    policy = config.policy()
    try:
        await client.start_workflow(
            ConfigWorkflow.run,
            await _record_so_far(client, task_queue),
            id=names.config_workflow_id(task_queue),
            task_queue=task_queue,
            start_signal=names.CONFIG_LOADED,
            start_signal_args=[
                ConfigLoaded(
                    policy=policy,
                    worker=client.identity,
                    audit_destinations=config.audit.destination_names,
                    longest_access=max(flow.maximum for flow in config.flows),
                )
            ],
            rpc_timeout=CONFIG_ANNOUNCE_TIMEOUT,
        )
    except Exception as err:
        log.error("config.announce_failed", error=str(err))
    else:
        log.info("config.announced", digest=policy.digest, commit=policy.commit)


async def _record_so_far(client: Client, task_queue: str) -> ConfigHistoryInput:
    """How a new ConfigWorkflow starts: afresh, or, when the last one ended (terminated by hand),
    where it stood, so event ids and the hash chain go on. That run started where the one before
    it stood (its input says so) and went on from there (its config.loaded events). Only read
    when no record runs (a running one ignores this input)."""
    from starter.audit_trail import history_events, sequence

    fresh = ConfigHistoryInput(task_queue=task_queue)
    workflow_id = names.config_workflow_id(task_queue)
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        if err.status is RPCStatusCode.NOT_FOUND:
            return fresh
        raise
    if described.status is WorkflowExecutionStatus.RUNNING:
        return fresh
    started = await _run_input(client, workflow_id, described.run_id)
    so_far = fresh.model_copy(
        update={"events": started.events, "last_hash": started.last_hash, "last": started.last}
    )
    loaded = [
        e
        for e in await history_events(client, workflow_id, described.run_id)
        if e.type == "config.loaded"
    ]
    if not loaded:
        return so_far
    last = loaded[-1]
    detail = last.detail
    return so_far.model_copy(
        update={
            "events": sequence(last),
            "last_hash": last.hash,
            "last": ConfigLoaded(
                policy=ConfigPolicy(
                    digest=detail["digest"],
                    flows=detail["flows"],
                    commit=detail.get("commit"),
                    path=detail.get("path"),
                    dirty=bool(detail.get("dirty")),
                ),
                worker=str(detail.get("worker", "")),
                longest_access=last.duration,
            ),
        }
    )


async def _run_input(client: Client, workflow_id: str, run_id: str) -> ConfigHistoryInput:
    """The input one run of the config record started with."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        payloads = event.workflow_execution_started_event_attributes.input.payloads
        require_keys_for(payloads, client.data_converter)
        [started] = await client.data_converter.decode(payloads, [ConfigHistoryInput])
        return started
    raise LookupError(f"{workflow_id} run {run_id} has no history")


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("worker.signal", signal=sig.name, already_stopping=stop.is_set())
    stop.set()
