"""Process settings from the environment. Temporal's own settings are read by temporalio.envconfig."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from keycard.durations import parse_duration

WORKFLOW_CACHE = 4000  # see Settings.worker_max_cached_workflows


@dataclass(frozen=True)
class Settings:
    config_path: Path = field(default_factory=lambda: Path("keycard.yaml"))
    task_queue: str = "keycard"
    audit_jsonl: Path | None = None
    audit_stdout: bool = True
    state_dir: Path = field(default_factory=lambda: Path(".keycard"))
    # Worker process (deployment): health endpoint for orchestrators, and how long a stopping
    # worker lets in-flight activities finish before they are cancelled and retried elsewhere.
    worker_health_port: int | None = None
    # Loopback, like everything else Keycard listens on; a container whose probes come from
    # outside (Kubernetes) sets KEYCARD_WORKER_HEALTH_HOST=0.0.0.0.
    worker_health_host: str = "127.0.0.1"
    worker_shutdown_grace: timedelta = timedelta(seconds=30)
    # Workflows the worker keeps in memory. Each open request is two (it and its grant); past the
    # cache, every task of an evicted one replays its whole history, which under a burst of
    # 1000 approvals on 2 cores made workflow tasks time out. 4000 holds 2000 open requests.
    worker_max_cached_workflows: int = WORKFLOW_CACHE
    # host:port for Prometheus's /metrics (starter/telemetry.py); None: no metrics endpoint.
    metrics_address: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        jsonl = env.get("KEYCARD_AUDIT_JSONL")
        return cls(
            config_path=Path(env.get("KEYCARD_CONFIG", "keycard.yaml")),
            task_queue=env.get("KEYCARD_TASK_QUEUE", "keycard"),
            audit_jsonl=Path(jsonl) if jsonl else None,
            audit_stdout=env.get("KEYCARD_AUDIT_STDOUT", "true").lower()
            not in {"0", "false", "no"},
            state_dir=Path(env.get("KEYCARD_STATE_DIR", ".keycard")),
            **_worker_settings(env),
        )


def _worker_settings(env: Mapping[str, str]) -> dict[str, Any]:
    port = env.get("KEYCARD_WORKER_HEALTH_PORT", "").strip()
    if port and not (port.isdigit() and int(port) < 65536):
        raise ValueError(f"KEYCARD_WORKER_HEALTH_PORT must be a port number, not {port!r}")
    try:
        grace = parse_duration(env.get("KEYCARD_WORKER_SHUTDOWN_GRACE", "30s"))
    except ValueError as err:
        raise ValueError(f"KEYCARD_WORKER_SHUTDOWN_GRACE: {err}") from None
    cache = env.get("KEYCARD_WORKER_MAX_CACHED_WORKFLOWS", "").strip() or str(WORKFLOW_CACHE)
    if not cache.isdigit() or int(cache) < 1:
        raise ValueError(
            f"KEYCARD_WORKER_MAX_CACHED_WORKFLOWS must be a whole number of workflows, such as "
            f"{WORKFLOW_CACHE}, not {cache!r}"
        )
    metrics = env.get("KEYCARD_METRICS_ADDRESS", "").strip()
    host, _, metrics_port = metrics.rpartition(":")
    if metrics and not (host and metrics_port.isdigit() and 0 < int(metrics_port) < 65536):
        raise ValueError(
            f"KEYCARD_METRICS_ADDRESS must be host:port, such as 0.0.0.0:9464 (every interface) "
            f"or 127.0.0.1:9464, not {metrics!r}"
        )
    return {
        "metrics_address": metrics or None,
        "worker_max_cached_workflows": int(cache),
        "worker_health_port": int(port) if port else None,
        "worker_health_host": env.get("KEYCARD_WORKER_HEALTH_HOST", "127.0.0.1"),
        "worker_shutdown_grace": grace,
    }


@dataclass(frozen=True)
class SlackSettings:
    """Slack joins when SLACK_BOT_TOKEN is set; Socket Mode when SLACK_APP_TOKEN is too."""

    bot_token: str | None = None
    signing_secret: str | None = None
    app_token: str | None = None
    api_url: str = "https://slack.com/api/"
    command: str = "/access"
    # The web console's public address (KEYCARD_PUBLIC_URL): messages link to the request's page.
    console_url: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bot_token)

    @property
    def socket_mode(self) -> bool:
        return bool(self.app_token)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> SlackSettings:
        env = os.environ if environ is None else environ
        command = env.get("KEYCARD_SLACK_COMMAND", "/access").strip()
        return cls(
            bot_token=env.get("SLACK_BOT_TOKEN") or None,
            signing_secret=env.get("SLACK_SIGNING_SECRET") or None,
            app_token=env.get("SLACK_APP_TOKEN") or None,
            api_url=env.get("SLACK_API_URL") or "https://slack.com/api/",
            command=command if command.startswith("/") else "/" + command,
            console_url=env.get("KEYCARD_PUBLIC_URL", "").strip().rstrip("/") or None,
        )
