"""`keycard flows validate|schema`: check keycard.yaml and describe it to editors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keycard.config import ConfigError, json_schema, load_config
from starter.cli.terminal import start_problems

app = typer.Typer(help="Check and describe keycard.yaml.", no_args_is_help=True)


@app.command("validate")
def flows_validate(
    file: Annotated[Path, typer.Argument(help="the keycard.yaml to check")],
) -> None:
    """Check a keycard.yaml; print every problem with where it is, exit 1 if there are any."""
    try:
        config = load_config(file)
    except ConfigError as err:
        typer.secho(f"{err.source}: {len(err.problems)} problem(s)", fg=typer.colors.RED, err=True)
        for problem in err.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None
    targets = sum(len(f.targets) for f in config.flows)
    typer.secho(f"{file}: OK ({len(config.flows)} flows, {targets} targets)", fg=typer.colors.GREEN)
    # Not errors in the file, but a worker started here would refuse to run: say so now.
    for problem in start_problems(config):
        typer.secho(f"  warning: {problem}", fg=typer.colors.YELLOW)


@app.command("schema")
def flows_schema() -> None:
    """Print the JSON Schema of keycard.yaml, for editor completion."""
    typer.echo(json_schema())
