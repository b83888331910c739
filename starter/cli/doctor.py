"""`keycard doctor`: every check of starter/doctor/, printed one finding a line; exit 1 on a FAIL."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from starter.cli.terminal import config_path_for
from starter.doctor import diagnose
from starter.doctor.iam_policy import iam_policy_json
from starter.doctor.report import Level


def doctor(
    config_path: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="keycard.yaml (default: $KEYCARD_CONFIG)"),
    ] = None,
    iam_policy: Annotated[
        bool, typer.Option("--iam-policy", help="print the minimal IAM policy and exit")
    ] = False,
) -> None:
    """Check Temporal, AWS Identity Center, Slack and keycard.yaml; exit 1 if anything fails."""
    if iam_policy:
        typer.echo(iam_policy_json(), nl=False)
        return

    report = asyncio.run(diagnose(config_path_for(config_path)))
    colours = {Level.OK: typer.colors.GREEN, Level.WARN: typer.colors.YELLOW}
    width = max((len(f.check) for f in report.findings), default=0)
    for finding in report.findings:
        label = typer.style(f"{finding.level.value:<4}", fg=colours.get(finding.level, "red"))
        typer.echo(f"{label}  {finding.check:<{width}}  {finding.message}")
    counts = {level: len(report.of(level)) for level in Level}
    summary = ", ".join(f"{counts[level]} {level.value}" for level in Level)
    if report.failed:
        typer.secho(f"\n{summary}: fix the FAIL lines above.", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.secho(f"\n{summary}.", fg=typer.colors.GREEN)
