"""The commands that run Keycard's processes: `keycard serve` (the HTTP API, the console and Slack),
`keycard demo-access`, and the two that run a worker in this process, `keycard worker` and
`keycard dev`.

Those two are added by the `keycard` command's composition root (main.py), which hands them the
worker (worker.py): starter/ holds the front doors and their runners and never imports the
worker, whose workflows and activities are a layer of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import structlog
import typer

from keycard.config import ConfigError, load_config
from keycard.settings import Settings
from starter.cli.terminal import (
    ConfigOption,
    config_path_for,
    fail,
    load,
    refuse_to_start,
    run,
)
from starter.run.health import WorkerRunner
from starter.run.serve import GRACEFUL_SHUTDOWN, serve_api
from starter.sso import SsoSettings, SsoSettingsError

log = structlog.get_logger(__name__)

app = typer.Typer()


@app.command()
def serve(
    config_path: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="keycard.yaml (default: $KEYCARD_CONFIG or ./keycard.yaml)"
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="address to listen on", envvar="KEYCARD_API_HOST")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on", envvar="KEYCARD_API_PORT")] = 8000,
    graceful_timeout: Annotated[
        int, typer.Option(help="seconds in-flight calls get to finish on SIGTERM")
    ] = int(GRACEFUL_SHUTDOWN.total_seconds()),
) -> None:
    """Serve the HTTP API (docs at /docs) against Temporal until SIGTERM."""
    from keycard.logging import configure_logging
    from keycard.settings import Settings
    from starter.api.app import ApiOptions
    from starter.api.codec_server import cors_origins
    from starter.client import KeycardClient, connect_temporal
    from starter.run.http import create_app
    from starter.slack.app import slack_serving
    from starter.telemetry import start_tracing, stop_tracing
    from starter.web import ConsoleOptions

    configure_logging()
    config = load(config_path)
    start_tracing("keycard-api")
    if not config.api.tokens:
        log.warning("api.no_tokens", hint="every call will be refused; see `keycard token create`")

    async def go() -> None:
        keycard = KeycardClient(await connect_temporal(), config, Settings.from_env().task_queue)
        app = create_app(
            keycard,
            options=ApiOptions(codec_cors_origins=cors_origins()),
            console=ConsoleOptions.from_env(),
        )
        # Slack, when configured: /slack/events on this server, or a Socket Mode connection.
        async with slack_serving(app, keycard):
            await serve_api(app, host, port, graceful=timedelta(seconds=graceful_timeout))

    try:
        run(go)
    except OSError as err:
        typer.secho(f"error: {err.strerror or err}", fg="red", err=True)
        raise typer.Exit(1) from None
    finally:
        stop_tracing()


@app.command("demo-access")
def demo_access(
    email: Annotated[str, typer.Argument(help="whose access to show")],
    state_dir: Annotated[Path, typer.Option(help="the running `keycard dev`'s state dir")] = Path(
        ".keycard"
    ),
) -> None:
    """Show what the demo AWS of a running `keycard dev` grants a person right now."""
    from starter.dev_state import read_dev_state
    from starter.run.demo_aws import assignments_for, session_denials_for

    try:
        state = read_dev_state(state_dir)
    except FileNotFoundError as err:
        raise fail(str(err)) from None
    if not state.get("aws_endpoint"):
        raise fail("this `keycard dev` uses your real AWS, not the demo; use the AWS console")
    held = assignments_for(state["aws_endpoint"], state["aws_region"], email.lower())
    if not held:
        typer.echo(f"{email} holds no access in the demo AWS.")
    for spec in held:
        what = (
            f"permission set {spec.permission_set} in account {spec.account_id}"
            if spec.strategy == "aws_sso"
            else f"member of {spec.group} ({spec.strategy})"
        )
        typer.echo(f"{email}: {what}")
    config = None
    if state.get("config_path"):
        with contextlib.suppress(ConfigError, OSError):
            config = load_config(Path(state["config_path"]))
    for permission_set, account, before in session_denials_for(
        state["aws_endpoint"], state["aws_region"], email.lower(), config
    ):
        typer.echo(
            f"{email}: sessions of {permission_set} in account {account} issued before "
            f"{before:%Y-%m-%d %H:%M:%S} UTC are denied (end_sessions)"
        )


def add_worker_commands(app: typer.Typer, run_worker: WorkerRunner) -> None:
    """Add `keycard worker` and `keycard dev` to `app`, running `run_worker` in the process."""

    @app.command()
    def worker(config_path: ConfigOption = None) -> None:
        """Run a Keycard worker (workflows and activities) against Temporal until SIGTERM.

        SIGTERM drains: no new work is taken and in-flight activities get
        KEYCARD_WORKER_SHUTDOWN_GRACE (30s) to finish. KEYCARD_WORKER_HEALTH_PORT serves /healthz and
        /readyz for orchestrators. Logs are JSON lines (KEYCARD_LOG_FORMAT=console for people).
        """
        from keycard.logging import configure_logging
        from starter.client import connect_temporal
        from starter.run.health import serve_worker
        from starter.telemetry import start_tracing, stop_tracing, worker_runtime

        config = load(config_path)
        refuse_to_start(config)
        configure_logging()
        settings = Settings.from_env()  # checked by refuse_to_start
        start_tracing("keycard-worker")

        async def go() -> None:
            client = await connect_temporal(runtime=worker_runtime(settings))
            await serve_worker(client, config, settings, run_worker)

        try:
            run(go)
        finally:
            stop_tracing()

    @app.command()
    def dev(
        config_path: ConfigOption = None,
        port: Annotated[int, typer.Option(help="Temporal frontend port")] = 7233,
        ui_port: Annotated[int, typer.Option(help="Temporal UI port")] = 8233,
        api_port: Annotated[int, typer.Option(help="Keycard HTTP API port")] = 8000,
        state_dir: Annotated[
            Path, typer.Option(help="where the dev SQLite and audit log live")
        ] = Path(".keycard"),
    ) -> None:
        """Start everything locally: Temporal dev server + UI, a demo AWS, the worker and the API."""
        from starter.run.dev import run_dev

        config = load(config_path)
        refuse_to_start(config, aws=False)  # without AWS settings, dev runs a demo AWS
        try:
            SsoSettings.from_env()
        except SsoSettingsError as err:
            raise fail(str(err)) from None
        try:
            asyncio.run(
                run_dev(
                    config,
                    port=port,
                    ui_port=ui_port,
                    api_port=api_port,
                    state_dir=state_dir,
                    config_path=config_path_for(config_path).resolve(),
                    run_worker=run_worker,
                )
            )
        except OSError as err:  # a port already taken, most likely
            raise fail(str(err.strerror or err)) from None
