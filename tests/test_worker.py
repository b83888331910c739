"""Workers are disposable: stopping or killing one mid-grant loses nothing and grants only once.

Each test runs real worker processes (tests/worker_process.py: the `keycard worker` code path with
a file-backed fake cloud) against the dev server, and drives a request through KeycardClient.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from keycard.config import parse_config
from starter.client import KeycardClient
from tests.harness import ALICE, BOB, CONFIG
from tests.polling import eventually

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 60.0  # seconds; every wait below is a bounded poll of a condition, never a fixed sleep
# Where a test needs a dead worker's attempt retried, heartbeat timeouts of 5s instead of 30s;
# long enough that a busy machine does not time out a live attempt.
QUICK_HEARTBEAT = {"KEYCARD_TEST_HEARTBEAT": "5"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(command: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a process with its stdout and stderr going to `log_path`."""
    with log_path.open("w") as log:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def probe(port: int, path: str) -> tuple[int, dict] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
    except OSError:
        return None


@dataclass
class WorkerProcess:
    name: str
    process: subprocess.Popen
    health_port: int
    log_path: Path

    def status(self, path: str) -> int | None:
        answer = probe(self.health_port, path)
        return answer[0] if answer else None

    def log_events(self) -> list[dict]:
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # an unstructured line is a bug the assertions below will report
            if isinstance(record, dict):
                events.append(record)
        return events

    def unstructured_lines(self) -> list[str]:
        bad = []
        for line in self.log_path.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                bad.append(line)
        return bad


class Cluster:
    """Worker processes sharing one task queue and one file-backed cloud."""

    def __init__(self, temporal_address: str, cloud: Path, logs: Path):
        self.task_queue = f"test-workers-{uuid.uuid4().hex[:8]}"
        # Its own AWS account, so its grant workflows never meet another test's.
        self.account_id = str(secrets.randbelow(9 * 10**11) + 10**11)
        self.config = parse_config(CONFIG.replace("111111111111", self.account_id))
        self.temporal_address = temporal_address
        self.cloud = cloud
        self.logs = logs
        self.workers: list[WorkerProcess] = []

    def start(self, name: str, **env: str) -> WorkerProcess:
        port = free_port()
        log_path = self.logs / f"{name}.log"
        environment = {
            **os.environ,
            "TEMPORAL_ADDRESS": self.temporal_address,
            "TEMPORAL_NAMESPACE": "default",
            "KEYCARD_TASK_QUEUE": self.task_queue,
            "KEYCARD_WORKER_HEALTH_PORT": str(port),
            "KEYCARD_WORKER_HEALTH_HOST": "127.0.0.1",
            "KEYCARD_LOG_FORMAT": "json",
            "KEYCARD_TEST_ACCOUNT_ID": self.account_id,
            **env,
        }
        process = spawn(
            [sys.executable, "-m", "tests.worker_process", str(self.cloud)], environment, log_path
        )
        worker = WorkerProcess(name, process, port, log_path)
        self.workers.append(worker)
        return worker

    async def ready(self, worker: WorkerProcess) -> None:
        await eventually(
            lambda: worker.status("/readyz") == 200 or worker.process.poll() is not None,
            f"{worker.name} to be ready",
        )
        assert worker.process.poll() is None, worker.log_path.read_text()

    def lines(self, name: str) -> list[str]:
        path = self.cloud / name
        return path.read_text().splitlines() if path.exists() else []

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                worker.process.kill()
            worker.process.wait(timeout=10)


@pytest.fixture
async def cluster(dev_env, tmp_path) -> AsyncIterator[Cluster]:
    address = dev_env.client.service_client.config.target_host
    cloud, logs = tmp_path / "cloud", tmp_path / "logs"
    cloud.mkdir()
    logs.mkdir()
    running = Cluster(address, cloud, logs)
    try:
        yield running
    finally:
        running.stop_all()
        # Nothing of this test may keep running on the shared server once its workers are gone.
        query = f"TaskQueue = '{running.task_queue}' AND ExecutionStatus = 'Running'"
        async for execution in dev_env.client.list_workflows(query):
            handle = dev_env.client.get_workflow_handle(execution.id, run_id=execution.run_id)
            await handle.terminate("test finished")


async def start_grant(dev_env, cluster: Cluster) -> tuple[KeycardClient, str]:
    """Request and approve; returns once a worker is inside the (blocking) grant call."""
    keycard = KeycardClient(dev_env.client, cluster.config, cluster.task_queue)
    view = await keycard.request(
        flow="prod-power-user", target="prod", duration="1h", reason="incident 4312",
        requester=ALICE,
    )  # fmt: skip
    await keycard.approve(view.id, BOB)
    await eventually(lambda: cluster.lines("grant-calls.log"), "the grant to start")
    return keycard, view.id


async def state_of(keycard: KeycardClient, request_id: str) -> str:
    return (await keycard.get(request_id)).state.value


async def test_sigterm_mid_grant_drains_and_a_second_worker_carries_on(dev_env, cluster):
    first = cluster.start("first")
    await cluster.ready(first)
    keycard, request_id = await start_grant(dev_env, cluster)
    assert cluster.lines("grant-calls.log") == [f"{first.process.pid} 1"]

    second = cluster.start("second")
    await cluster.ready(second)
    first.process.send_signal(signal.SIGTERM)

    # Draining: still alive for its orchestrator, but no longer ready for work.
    await eventually(lambda: first.status("/readyz") == 503, "the first worker to stop being ready")
    assert first.status("/healthz") == 200
    assert first.process.poll() is None, "the worker quit before its grant call finished"

    (cluster.cloud / "release").touch()
    assert await asyncio.to_thread(first.process.wait, DEADLINE) == 0
    await eventually(
        lambda: _is(keycard, request_id, "ACTIVE"), "the request to become ACTIVE elsewhere"
    )

    # The in-flight call finished during the drain: one call, one assignment, nothing retried.
    assert cluster.lines("grant-calls.log") == [f"{first.process.pid} 1"]
    assert len(cluster.lines("grant-applied.log")) == 1
    assert len(list((cluster.cloud / "assigned").iterdir())) == 1
    events = [e.get("event") for e in first.log_events()]
    assert events.index("worker.draining") < events.index("worker.stopped")
    assert first.unstructured_lines() == []


async def test_sigterm_past_the_grace_period_retries_the_grant_elsewhere_once(dev_env, cluster):
    first = cluster.start("first", KEYCARD_WORKER_SHUTDOWN_GRACE="1s", **QUICK_HEARTBEAT)
    await cluster.ready(first)
    keycard, request_id = await start_grant(dev_env, cluster)

    second = cluster.start("second", **QUICK_HEARTBEAT)
    await cluster.ready(second)
    first.process.send_signal(signal.SIGTERM)
    # The grant outlives the grace period: the worker cancels it and exits cleanly.
    assert await asyncio.to_thread(first.process.wait, DEADLINE) == 0

    (cluster.cloud / "release").touch()
    await eventually(
        lambda: _is(keycard, request_id, "ACTIVE"), "the second worker to finish the grant"
    )
    calls = cluster.lines("grant-calls.log")
    assert calls[0] == f"{first.process.pid} 1"
    assert all(line.startswith(f"{second.process.pid} ") for line in calls[1:]), calls
    assert len(cluster.lines("grant-applied.log")) == 1
    assert len(list((cluster.cloud / "assigned").iterdir())) == 1


async def test_worker_killed_mid_grant_and_restarted_finishes_the_grant_exactly_once(
    dev_env, cluster
):
    first = cluster.start("first", **QUICK_HEARTBEAT)
    await cluster.ready(first)
    keycard, request_id = await start_grant(dev_env, cluster)
    # The assignment was already created when the worker dies, before it can report success.
    await eventually(lambda: cluster.lines("grant-applied.log"), "the assignment to be created")

    first.process.send_signal(signal.SIGKILL)
    assert await asyncio.to_thread(first.process.wait, DEADLINE) == -signal.SIGKILL
    (cluster.cloud / "release").touch()

    restarted = cluster.start("restarted", **QUICK_HEARTBEAT)
    await cluster.ready(restarted)
    await eventually(
        lambda: _is(keycard, request_id, "ACTIVE"), "the restarted worker to finish the grant"
    )
    calls = cluster.lines("grant-calls.log")
    assert calls[0] == f"{first.process.pid} 1"
    assert calls[1:] and all(c.startswith(f"{restarted.process.pid} ") for c in calls[1:])
    # Retried, yet created once: the retry found the assignment and left it alone.
    assert len(cluster.lines("grant-applied.log")) == 1
    assert len(list((cluster.cloud / "assigned").iterdir())) == 1
    view = await keycard.get(request_id)
    assert view.granted_at is not None and not view.standing_access


async def _is(keycard: KeycardClient, request_id: str, state: str) -> bool:
    return await state_of(keycard, request_id) == state


async def test_keycard_worker_command_serves_health_and_exits_cleanly_on_sigterm(dev_env, tmp_path):
    """The real entry point, with the real activities: what a container runs."""
    config = tmp_path / "keycard.yaml"
    config.write_text(CONFIG)
    port = free_port()
    log_path = tmp_path / "worker.log"
    environment = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "KEYCARD_TASK_QUEUE": f"test-cli-{uuid.uuid4().hex[:8]}",
        "KEYCARD_WORKER_HEALTH_PORT": str(port),
        "KEYCARD_WORKER_HEALTH_HOST": "127.0.0.1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "unused",
        "AWS_SECRET_ACCESS_KEY": "unused",
    }
    for name in ("KEYCARD_LOG_FORMAT", "SLACK_BOT_TOKEN", "PAGERDUTY_API_KEY"):
        environment.pop(name, None)  # the defaults: JSON logs, no Slack, no PagerDuty
    keycard = Path(sys.executable).parent / "keycard"
    process = spawn([str(keycard), "worker", "--config", str(config)], environment, log_path)
    worker = WorkerProcess("cli", process, port, log_path)
    try:
        await eventually(
            lambda: worker.status("/readyz") == 200 or process.poll() is not None,
            "`keycard worker` to be ready",
        )
        assert process.poll() is None, log_path.read_text()
        assert worker.status("/healthz") == 200

        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, DEADLINE) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    events = [e.get("event") for e in worker.log_events()]
    assert [e for e in events if e and e.startswith("worker.")] == [
        "worker.started",
        "worker.signal",
        "worker.draining",
        "worker.stopped",
    ]
    assert worker.unstructured_lines() == []
