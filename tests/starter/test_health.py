"""The worker's health endpoint: what an orchestrator sees in each phase of the process."""

from __future__ import annotations

import aiohttp

from starter.run.health import ProcessHealth, serve_health


async def answers(port: int, path: str) -> tuple[int, dict]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.json()


async def test_phases_of_a_worker_as_probes_see_them():
    temporal_up = True

    async def temporal() -> bool:
        if not temporal_up:
            raise ConnectionError("connection refused")
        return True

    health = ProcessHealth("worker", dependency_check=temporal)
    async with serve_health(health, 0, "127.0.0.1") as port:
        assert port
        # Starting: alive, not yet ready.
        assert (await answers(port, "/healthz"))[0] == 200
        status, body = await answers(port, "/readyz")
        assert (status, body["reason"]) == (503, "worker is starting")

        health.set("ready")
        assert (await answers(port, "/readyz"))[0] == 200

        temporal_up = False
        status, body = await answers(port, "/readyz")
        assert status == 503
        assert body["reason"] == "Temporal is not answering: connection refused"
        assert (await answers(port, "/healthz"))[0] == 200  # no restart for someone else's outage

        temporal_up = True
        health.set("draining", "finishing in-flight work (up to 30s)")
        status, body = await answers(port, "/readyz")
        assert (status, body["reason"]) == (
            503,
            "worker is draining: finishing in-flight work (up to 30s)",
        )
        assert (await answers(port, "/healthz"))[0] == 200  # never killed while draining

        health.set("failed", "namespace not found")
        status, body = await answers(port, "/healthz")
        assert (status, body["live"]) == (503, False)


async def test_no_port_serves_nothing():
    async with serve_health(ProcessHealth("worker"), None) as port:
        assert port is None
