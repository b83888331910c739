"""`keycard slack`: run the Slack app on its own (Socket Mode, or HTTP at /slack/events)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from starter.cli.terminal import fail, load, run


def slack(
    config_path: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="keycard.yaml (default: $KEYCARD_CONFIG)"),
    ] = None,
    host: Annotated[str, typer.Option(help="HTTP mode: address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP mode: port to listen on")] = 3000,
) -> None:
    """Run the Slack app: Socket Mode when SLACK_APP_TOKEN is set (no public URL needed),
    otherwise HTTP at /slack/events with Slack's request signatures checked."""
    from keycard.logging import configure_logging
    from keycard.settings import Settings, SlackSettings

    configure_logging()
    config = load(config_path)
    settings = SlackSettings.from_env()
    if not settings.enabled:
        raise fail("set SLACK_BOT_TOKEN (and SLACK_APP_TOKEN or SLACK_SIGNING_SECRET) first")

    async def go() -> None:
        import uvicorn
        from fastapi import FastAPI

        from starter.client import KeycardClient, connect_temporal
        from starter.slack.app import build_slack_app, mount_slack, run_socket_mode

        keycard = KeycardClient(await connect_temporal(), config, Settings.from_env().task_queue)
        try:
            app = build_slack_app(keycard, settings)
        except ValueError as err:
            raise fail(str(err)) from None
        if settings.socket_mode:
            assert settings.app_token is not None
            await run_socket_mode(app, settings.app_token, asyncio.Event())
            return
        api = FastAPI(title="Keycard Slack app")
        mount_slack(api, app, signing_secret=settings.signing_secret)
        await uvicorn.Server(uvicorn.Config(api, host=host, port=port)).serve()

    run(go)
