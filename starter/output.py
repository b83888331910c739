"""How CLI commands print their answers."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer


class Output(StrEnum):
    """Text for people, JSON for scripts; anything else is refused with the choices."""

    TEXT = "text"
    JSON = "json"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="text or json")]


def print_problems(file: object, problems: list[str]) -> None:
    """A checked file's problems on stderr, one per line without the file's name, then exit 1."""
    typer.secho(f"{file}: {len(problems)} problem(s)", fg=typer.colors.RED, err=True)
    for problem in problems:
        typer.echo(f"  {problem.removeprefix(f'{file}: ')}", err=True)
    raise typer.Exit(1)
