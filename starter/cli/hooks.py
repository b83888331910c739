"""`keycard hooks check FILE`: the hooks SDK's command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keycard.sdk.loader import load_hooks_file
from starter.cli.terminal import print_problems

app = typer.Typer(help="Check hooks files (keycard.sdk) before deploying them.")


@app.command("check")
def check(file: Annotated[Path, typer.Argument(help="the hooks file, e.g. hooks/prod.py")]) -> None:
    """Import a hooks file and report unknown hook names and wrong signatures; exit 1 if any."""
    hooks = load_hooks_file(file)
    if not hooks.ok:
        print_problems(file, hooks.problems)
    found = ", ".join(sorted(hooks.functions)) or "no hooks"
    typer.secho(f"{file}: OK ({found})", fg=typer.colors.GREEN)
