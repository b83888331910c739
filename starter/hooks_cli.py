"""`keycard hooks check FILE` and `keycard break-glass`: the hooks SDK's commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keycard.models import Actor, RequestView
from keycard.sdk.loader import load_hooks_file
from starter.output import Output, OutputOption, print_problems

hooks_app = typer.Typer(help="Check hooks files (keycard.sdk) before deploying them.")


@hooks_app.command("check")
def check(file: Annotated[Path, typer.Argument(help="the hooks file, e.g. hooks/prod.py")]) -> None:
    """Import a hooks file and report unknown hook names and wrong signatures; exit 1 if any."""
    hooks = load_hooks_file(file)
    if not hooks.ok:
        print_problems(file, hooks.problems)
    found = ", ".join(sorted(hooks.functions)) or "no hooks"
    typer.secho(f"{file}: OK ({found})", fg=typer.colors.GREEN)


def break_glass(
    request_id: Annotated[str, typer.Argument(help="your own pending request")],
    justification: Annotated[
        str, typer.Option("--justification", "-m", help="what is broken and why it cannot wait")
    ],
    actor: Annotated[
        str | None,
        typer.Option("--as", help="you, the requester (operator mode)", envvar="KEYCARD_AS"),
    ] = None,
    config_path: Annotated[Path | None, typer.Option("--config", "-c", help="keycard.yaml")] = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Approve your own request in an emergency (flows with break_glass). Access starts now;
    the request is marked break-glass, announced to security and reviewed afterwards."""
    from starter.cli import _keycard, acting_as, load_unless_api, run, show

    who = Actor(email=acting_as(actor))  # with the API, the token says who you are
    config = load_unless_api(config_path)

    async def go() -> RequestView:
        keycard = await _keycard(config)
        return await keycard.break_glass(request_id, who, justification)

    show(run(go), output)
