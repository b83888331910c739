"""`keycard strategies`: the kinds of target Keycard can grant, and a check for your own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keycard.sdk.strategy_loader import load_strategy_file
from keycard.strategies import STRATEGIES
from starter.cli.terminal import print_problems

app = typer.Typer(help="The kinds of target Keycard grants; check a strategy file.")


@app.command("list")
def list_strategies() -> None:
    """Every strategy a flow may name, with what its targets say."""
    for name, info in STRATEGIES.items():
        keys = [k for k in info.target.model_fields if k not in ("name", "label")]
        needs = "targets: " + ", ".join(keys)
        if info.flow_fields:
            needs += "; the flow: " + ", ".join(info.flow_fields)
        typer.echo(f"{name:14} {info.summary}\n{'':14} ({needs})")


@app.command("check")
def check(
    file: Annotated[Path, typer.Argument(help="a strategy file, e.g. strategies/db.py")],
) -> None:
    """Import a strategy file (a custom flow's `module`) and check its one keycard.sdk.Strategy
    class: the four async methods with the right parameters; exit 1 on any problem."""
    found = load_strategy_file(file)
    if not found.ok:
        print_problems(file, found.problems)
    assert found.strategy is not None
    typer.secho(f"{file}: OK ({found.strategy.__name__})", fg=typer.colors.GREEN)
