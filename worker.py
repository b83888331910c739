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
from activities.slack import SlackApprovers, SlackNotConfigured, SlackNotifier, web_client
from keycard.config import KeycardConfig
from keycard.settings import Settings, SlackSettings
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
        *chat_activities(SlackSettings.from_env()),
        *hook_activities(session, config, config.base_dir),
    ]


def chat_activities(slack: SlackSettings) -> list[Callable]:
    """Slack when SLACK_BOT_TOKEN is set; otherwise notifications go to the console."""
    if not slack.enabled:
        return [ConsoleNotifier().send, SlackNotConfigured().resolve_approvers]
    assert slack.bot_token is not None
    client = web_client(slack.bot_token, slack.api_url)
    return [SlackNotifier(client).send, SlackApprovers(client).resolve_approvers]


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
