"""Runs the Temporal worker: every workflow and activity, wired to real clients from settings."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from datetime import timedelta

import boto3
import structlog
from temporalio.client import Client
from temporalio.worker import Worker

from activities.audit import AuditActivities, build_audit_sinks
from activities.aws import strategy_activities
from activities.hooks import hook_activities
from activities.leases import LeaseActivities
from activities.notify import ConsoleNotifier
from keycard.config import KeycardConfig
from keycard.settings import Settings
from workflows.access_request import AccessRequestWorkflow
from workflows.grant import GrantWorkflow

log = structlog.get_logger(__name__)

WORKFLOWS = [AccessRequestWorkflow, GrantWorkflow]
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


def build_activities(client: Client, config: KeycardConfig, settings: Settings) -> list[Callable]:
    """Every activity, bound to the real outside clients its module needs."""
    session = boto3.session.Session(region_name=config.aws.region)
    leases = LeaseActivities(client, settings.task_queue)
    return [
        *strategy_activities(session, config.aws),
        leases.acquire_lease,
        leases.release_lease,
        AuditActivities(build_audit_sinks(config.audit, settings, config.aws)).deliver,
        ConsoleNotifier().send,
        *hook_activities(session, config, config.base_dir),
    ]


def build_worker(client: Client, config: KeycardConfig, settings: Settings) -> Worker:
    return Worker(
        client,
        task_queue=settings.task_queue,
        workflows=WORKFLOWS,
        activities=build_activities(client, config, settings),
        # In-flight activities get this long to finish when the worker is asked to stop.
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


async def run_worker(
    client: Client, config: KeycardConfig, settings: Settings, stop: asyncio.Event | None = None
) -> None:
    """Run until `stop` is set or SIGINT/SIGTERM arrives, then drain and return."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Outside the main thread signals cannot be handled here: the caller owns `stop` then.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    worker = build_worker(client, config, settings)
    log.info("worker.started", task_queue=settings.task_queue, namespace=client.namespace)
    async with worker:
        await stop.wait()
        log.info("worker.draining")
    log.info("worker.stopped")
