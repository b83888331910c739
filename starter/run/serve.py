"""Serving the HTTP API: `keycard serve`, the API inside `keycard dev`, and `keycard token create`."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog
import uvicorn
from fastapi import APIRouter, FastAPI

from keycard.config import ApiSettings, KeycardConfig
from keycard.models import Role
from starter.api.app import ApiOptions
from starter.api.auth import config_entry, new_token
from starter.api.codec_server import cors_origins
from starter.client import KeycardClient
from starter.run.http import create_app
from starter.slack.app import slack_serving
from starter.web import ConsoleOptions

log = structlog.get_logger(__name__)

# In-flight calls get this long to finish on SIGTERM (a `wait=active` call may hold up to 60 s).
GRACEFUL_SHUTDOWN = timedelta(seconds=30)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DEMO_USERS = ("alice@example.com", "bob@example.com", "carol@example.com")


def bind(host: str, port: int) -> socket.socket:
    """Listen now, so the port is taken (or the error raised) before anything else starts; port 0
    picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _uvicorn_config(app: FastAPI, graceful: timedelta) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_config=None,  # structlog owns the output; the API logs one JSON line per call
        log_level="warning",
        access_log=False,  # the API's own access log leaves out what must not be logged
        timeout_graceful_shutdown=int(graceful.total_seconds()),
        server_header=False,
    )


async def serve_api(
    app: FastAPI, host: str, port: int, *, graceful: timedelta = GRACEFUL_SHUTDOWN
) -> None:
    """Serve until SIGINT/SIGTERM, then stop taking calls, let those in flight finish, return."""
    sock = bind(host, port)
    log.info("api.started", url=f"http://{_url_host(host)}:{sock.getsockname()[1]}", docs="/docs")
    server = _Server(_uvicorn_config(app, graceful), handle_signals=True)
    await server.serve(sockets=[sock])
    log.info("api.stopped")


class _Server(uvicorn.Server):
    """uvicorn's server, minus its habit of re-raising the signal that stopped it: a service
    stopped on purpose exits 0 after its last log line. Embedded (`keycard dev`, tests), it leaves
    signals alone: whoever runs it stops it with `should_exit`."""

    def __init__(self, config: uvicorn.Config, *, handle_signals: bool):
        super().__init__(config)
        self._handle_signals = handle_signals

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._handle_signals or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


@dataclass(frozen=True)
class RunningApi:
    url: str
    server: uvicorn.Server


@contextlib.asynccontextmanager
async def running_api(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[RunningApi]:
    """Serve `app` on this event loop while the block runs; the URL works as soon as it is given."""
    sock = bind(host, port)
    server = _Server(_uvicorn_config(app, timedelta(seconds=5)), handle_signals=False)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield RunningApi(f"http://{_url_host(host)}:{sock.getsockname()[1]}", server)
    finally:
        server.should_exit = True
        await task
        sock.close()


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 -- naming the wildcard, not binding it
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# --- keycard dev: the API with a ready token per demo user ------------------------------------------


@dataclass(frozen=True)
class DevApi:
    url: str
    tokens: dict[str, str]  # email -> token
    env_file: Path | None

    def banner(self) -> str:
        """Lines for `keycard dev`'s banner, in its two-column layout."""
        width = max(len(email) for email in self.tokens)
        lines = [
            f"  Console       {self.url}/  (sign in as a demo user, or an admin: {DEV_ADMIN})",
            f"  API           {self.url}  (docs: {self.url}/docs)",
        ]
        for index, (email, token) in enumerate(self.tokens.items()):
            label = "API tokens" if index == 0 else ""
            lines.append(f"  {label:13} {email:{width}}  {token}")
        if self.env_file:
            names = ", ".join(f"${_env_name(email)}" for email in self.tokens)
            lines.append(
                f"  {'':13} `source {self.env_file}` in another shell sets them as {names}"
            )
        return "\n".join(lines)


DEV_ADMIN = "admin@example.com"  # signs in to `keycard dev`'s console only; holds no token


def _env_name(email: str) -> str:
    return email.split("@")[0].upper()


def dev_config(
    config: KeycardConfig, users: tuple[str, ...] = DEMO_USERS
) -> tuple[KeycardConfig, dict[str, str]]:
    """`config` plus a fresh user token for each demo user (their hashes only, as in production)."""
    tokens = {email: new_token() for email in users}
    entries = [config_entry(t, email, Role.USER, name="keycard dev") for email, t in tokens.items()]
    api = ApiSettings(tokens=[*config.api.tokens, *entries])
    return config.model_copy(update={"api": api}), tokens


@contextlib.asynccontextmanager
async def dev_api(
    keycard: KeycardClient,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    state_dir: Path | None = None,
    routers: list[APIRouter] | None = None,
    temporal_ui_url: str | None = None,
) -> AsyncIterator[DevApi]:
    """The API for `keycard dev`: serves on `port` while the block runs, accepting the config's
    tokens plus a fresh token per demo user. With `state_dir`, also writes `dev.env` there (mode
    0600): `source` it in another shell for KEYCARD_API_URL, KEYCARD_TOKEN (alice) and
    $ALICE/$BOB/$CAROL."""
    config, tokens = dev_config(keycard.config)
    options = ApiOptions(codec_cors_origins=cors_origins())
    # The console's demo sign-in: the demo users, and an admin for "Access now" (dev only).
    console = dataclasses.replace(
        ConsoleOptions.from_env(),
        dev_users={**dict.fromkeys(tokens, Role.USER), DEV_ADMIN: Role.ADMIN},
        temporal_ui_url=temporal_ui_url,
    )
    app = create_app(keycard, config, routers=routers or [], options=options, console=console)
    async with slack_serving(app, keycard), running_api(app, host, port) as running:
        env_file = _write_env(state_dir, running.url, tokens) if state_dir else None
        try:
            yield DevApi(running.url, tokens, env_file)
        finally:
            if env_file:
                env_file.unlink(missing_ok=True)


def _write_env(state_dir: Path, url: str, tokens: dict[str, str]) -> Path:
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "dev.env"
    lines = [f"export KEYCARD_API_URL={url}"]
    lines += [f"export {_env_name(email)}={token}" for email, token in tokens.items()]
    lines.append(f"export KEYCARD_TOKEN=${_env_name(next(iter(tokens)))}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path
