"""The `keycard` command: the registry of its sub-commands, one module each beside this one.

requests.py    request, approve, deny, cancel, revoke, break-glass, extend, status, list
flows.py       flows validate|schema          hooks.py, strategies.py   check extension files
audit.py       audit export                   drift.py                   drift
login.py       login, logout                  tokens.py                  token create
run.py         serve, demo-access; worker and dev (added by main.py, which holds the worker)
slack.py       slack                          doctor.py                  doctor
codec.py       codec new-key                  terminal.py                what every command shares
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup, TyperOption

from starter.cli import (
    audit,
    codec,
    doctor,
    drift,
    flows,
    hooks,
    login,
    report,
    requests,
    run,
    slack,
    strategies,
    tokens,
)

_option_type = TyperOption.display_type_rich


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so --help shows none (typer 0.29 prints `<bool>` beside each)."""
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


class _InPanelOrder(TyperGroup):
    """`keycard --help` shows commands in HELP_PANELS' groups and order, whichever module added
    them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(super().list_commands(ctx), key=lambda name: _ORDER.get(name, len(_ORDER)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            command.rich_help_panel = _PANEL_OF.get(cmd_name, "Other")  # type: ignore[attr-defined]
        return command


app = typer.Typer(
    cls=_InPanelOrder,
    help="Keycard: just-in-time access. Ask for access, approve it, and watch it end on time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(requests.app)
app.add_typer(run.app)
app.add_typer(flows.app, name="flows")
app.add_typer(tokens.app, name="token")
app.add_typer(hooks.app, name="hooks", no_args_is_help=True)
app.add_typer(strategies.app, name="strategies", no_args_is_help=True)
app.add_typer(audit.app, name="audit", no_args_is_help=True)
app.add_typer(codec.app, name="codec")
app.command(name="slack")(slack.slack)
app.command("drift")(drift.drift_command)
app.command(name="login")(login.login)
app.command(name="logout")(login.logout)
app.command(name="doctor")(doctor.doctor)
app.command(name="report")(report.report)

# `keycard --help` in groups a newcomer can scan.
HELP_PANELS = {
    "Ask and decide": (
        "request", "approve", "deny", "cancel", "revoke", "extend", "break-glass", "review", "status", "list",
    ),
    "Sign in": ("login", "logout", "token"),
    "Run Keycard": ("dev", "worker", "serve", "slack", "doctor", "demo-access"),
    "Configure and audit": ("flows", "hooks", "strategies", "audit", "report", "drift", "codec"),
}  # fmt: skip
_PANEL_OF = {name: panel for panel, names in HELP_PANELS.items() for name in names}
_ORDER = {name: i for i, name in enumerate(_PANEL_OF)}


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"keycard {version('keycard')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass  # only the global options; the app's help= above describes Keycard


def main(app: typer.Typer = app) -> None:
    """Run `app` (main.py passes it with `worker` and `dev` added) as the `keycard` command."""
    from keycard.logging import configure_logging

    # Commands print their results; logs are for problems (services raise the level themselves).
    configure_logging(json=False, level=os.environ.get("KEYCARD_LOG_LEVEL", "WARNING"))
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code
    # Temporal's Rust runtime threads can outlive interpreter shutdown and abort the process
    # after the command has finished (temporalio/sdk-python#300). Everything is done and flushed
    # by now, so leave without the finalization that races them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
