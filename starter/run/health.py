"""Health endpoints for orchestrators: /healthz (is the process alive) and /readyz (is it useful).

A Keycard worker has no HTTP traffic of its own, so Kubernetes and docker-compose learn its state
here. Liveness stays green while the process works normally, draining included, so an orchestrator
never kills a worker that is finishing in-flight activities. Readiness is green only while the
worker polls its task queue and Temporal answers, so a rollout waits for the new worker to connect.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiohttp import web
from temporalio.client import Client

from keycard.config import KeycardConfig
from keycard.settings import Settings

log = structlog.get_logger(__name__)

# How long /readyz waits for Temporal before calling the process not ready.
TEMPORAL_CHECK_TIMEOUT = 3.0


@dataclass
class ProcessHealth:
    """What the process reports; the worker loop flips these as it starts, drains and stops."""

    role: str
    # Awaitable probe of the process's dependency (Temporal); raises or returns False when down.
    dependency_check: Callable[[], Awaitable[bool]] | None = None
    state: str = "starting"  # starting -> ready -> draining -> stopped, or failed
    detail: str = ""

    @property
    def live(self) -> bool:
        return self.state != "failed"

    def set(self, state: str, detail: str = "") -> None:
        self.state, self.detail = state, detail
        log.info("health.changed", role=self.role, state=state, detail=detail or None)

    async def ready(self) -> tuple[bool, str]:
        if self.state != "ready":
            return False, f"worker is {self.state}" + (f": {self.detail}" if self.detail else "")
        if self.dependency_check is None:
            return True, "ready"
        try:
            ok = await asyncio.wait_for(self.dependency_check(), TEMPORAL_CHECK_TIMEOUT)
        except Exception as err:  # any failure to answer means "not ready", with the reason
            return False, f"Temporal is not answering: {err or type(err).__name__}"
        return (True, "ready") if ok else (False, "Temporal reports it is not serving")


def health_app(health: ProcessHealth) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        body = {"role": health.role, "state": health.state, "live": health.live}
        return web.json_response(body, status=200 if health.live else 503)

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = await health.ready()
        body = {"role": health.role, "state": health.state, "ready": ok, "reason": reason}
        return web.json_response(body, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


@asynccontextmanager
async def serve_health(
    health: ProcessHealth,
    port: int | None,
    host: str = "127.0.0.1",
) -> AsyncIterator[int | None]:
    """Serve the endpoints on host:port while the block runs; yields the bound port.

    `port=None` serves nothing (the endpoint is opt-in); `port=0` picks a free port.
    """
    if port is None:
        yield None
        return
    runner = web.AppRunner(health_app(health), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    log.info("health.listening", host=host, port=bound)
    try:
        yield bound
    finally:
        await runner.cleanup()


class WorkerRunner(Protocol):
    """Runs a Keycard worker until `stop` is set or a signal arrives, then drains (worker.run_worker).

    The runners here take it as a parameter: starter/ never imports the worker, whose workflows and
    activities sit below the front doors; main.py, the `keycard` command, hands it over."""

    async def __call__(
        self,
        client: Client,
        config: KeycardConfig,
        settings: Settings,
        stop: asyncio.Event | None = None,
        *,
        activities: Sequence[Callable[..., Any]] | None = None,
        on_state: Callable[[str, str], None] | None = None,
    ) -> None: ...


async def serve_worker(
    client: Client,
    config: KeycardConfig,
    settings: Settings,
    run_worker: WorkerRunner,
    *,
    activities: Sequence[Callable] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """`keycard worker`: the Temporal worker plus its health endpoint, until SIGTERM drains it."""

    async def temporal_serving() -> bool:
        return await client.service_client.check_health()

    health = ProcessHealth("worker", dependency_check=temporal_serving)
    async with serve_health(health, settings.worker_health_port, settings.worker_health_host):
        await run_worker(client, config, settings, stop, activities=activities, on_state=health.set)
