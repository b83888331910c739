"""`keycard drift`: the drift sweep's last findings, AWS access that no Keycard lease holds."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from keycard.models import DriftReport
from starter.cli.terminal import fail, run
from starter.client import connect_temporal
from starter.run.drift import last_sweep, sweep_now


def render(report: DriftReport | None, about: str) -> str:
    lines = [f"Drift sweep: {about}."]
    if report is None:
        lines.append("No sweep has finished yet.")
        return "\n".join(lines)
    finished = report.finished_at or report.started_at
    lines.append(
        f"Last sweep finished {finished:%Y-%m-%d %H:%M:%S} UTC: {report.targets} target(s), "
        f"{report.assignments} assignment(s) in AWS, {report.held} held by Keycard or standing, "
        f"{len(report.findings)} finding(s)."
    )
    for finding in report.findings:
        who = finding.principal_email or f"{finding.principal_type.lower()} {finding.principal_id}"
        verb = "REMOVED " if finding.action == "removed" else "REPORTED"
        lines.append(
            f"  {verb} {finding.kind:<9} {who} in {finding.account_id} "
            f"({finding.flow}/{finding.target}, {finding.permission_set}): {finding.why}"
        )
    for error in report.errors:
        lines.append(f"  ERROR    {error}")
    return "\n".join(lines)


def drift_command(
    now: Annotated[
        bool, typer.Option("--now", help="sweep now (trigger the schedule) and show that sweep")
    ] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Show the drift sweep's last findings: AWS access no Keycard lease holds."""
    if output not in ("text", "json"):
        raise fail(f"--output takes text or json, not {output!r}")

    async def go() -> tuple[DriftReport | None, str]:
        client = await connect_temporal()
        try:
            if now:
                report = await sweep_now(client)
                _, about = await last_sweep(client)
                return report, about
            return await last_sweep(client)
        except LookupError as err:
            raise fail(str(err)) from None

    report, about = run(go)
    if output == "json":
        typer.echo(
            json.dumps(
                {
                    "schedule": about,
                    "last_sweep": report.model_dump(mode="json") if report else None,
                },
                indent=2,
            )
        )
    else:
        typer.echo(render(report, about))
