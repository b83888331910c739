"""`keycard flows validate|schema|diff`: check keycard.yaml, describe it to editors, and say what a
change to it changes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from keycard.config import ConfigError, KeycardConfig, json_schema, load_config, parse_config
from keycard.flow_diff import diff_configs, render
from starter.cli.terminal import Output, OutputOption, fail, print_problems, start_problems

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


@app.command("diff")
def flows_diff(
    old: Annotated[str, typer.Argument(help="the keycard.yaml before: a file, or REV:PATH in git")],
    new: Annotated[str, typer.Argument(help="the keycard.yaml after: a file, or REV:PATH in git")],
    output: OutputOption = Output.TEXT,
) -> None:
    """Say, flow by flow, what a change to keycard.yaml changes: who may ask and approve, how
    many approvals, durations, rules that decide alone, targets; with each flow's digest.

        keycard flows diff main:deploy/keycard.yaml deploy/keycard.yaml
    """
    changes = diff_configs(_read(old), _read(new))
    if output == "json":
        typer.echo(json.dumps([change.as_json() for change in changes], indent=2))
    else:
        typer.echo(render(changes))


def _read(where: str) -> KeycardConfig:
    """A keycard.yaml from a file, or from git as REV:PATH (PATH from the repository's top)."""
    path = Path(where)
    if path.exists() or ":" not in where:
        return _load_or_exit(path)
    rev, _, name = where.partition(":")
    try:
        shown = subprocess.run(  # noqa: S603 -- git show REV:PATH, as the person asked
            ["git", "show", f"{rev}:{name}"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError as err:
        raise fail(f"cannot read {where} from git ({err.strerror}); give a file instead") from None
    if shown.returncode != 0:
        raise fail(
            f"{where} is neither a file nor something git can show "
            f"({shown.stderr.strip() or 'git show failed'}); give a file, or REV:PATH"
        )
    try:
        return parse_config(shown.stdout, where)
    except ConfigError as err:
        print_problems(err.source, err.problems)
        raise  # print_problems exits


def _load_or_exit(path: Path) -> KeycardConfig:
    try:
        return load_config(path)
    except ConfigError as err:
        print_problems(err.source, err.problems)
        raise
