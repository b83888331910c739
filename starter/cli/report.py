"""`keycard report`: the access report for a period, for auditors (starter/reports/)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from starter.audit_trail import export_events, parse_time
from starter.cli.terminal import fail, run
from starter.client import connect_temporal
from starter.reports.access import AccessReport, build_report, period_problem
from starter.reports.render import Format, render


def report(
    since: Annotated[str, typer.Option(help="from this date or time (UTC unless an offset)")],
    until: Annotated[
        str | None, typer.Option(help="up to, not including, this (default: now)")
    ] = None,
    flow: Annotated[str | None, typer.Option(help="only this flow's requests")] = None,
    person: Annotated[str | None, typer.Option(help="only this requester's")] = None,
    format: Annotated[
        Format, typer.Option("--format", "-f", case_sensitive=False, help="md, csv, json or html")
    ] = Format.MD,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write it here (default: stdout)")
    ] = None,
) -> None:
    """The access report for a period: one row per grant (who, what, why, approved how, granted
    and removed when, under which policy), a summary, and the exceptions auditors ask about first.

        keycard report --since 2026-07-01 --until 2026-10-01 --format html -o q3.html
    """
    start = parse_time(since)
    end = parse_time(until) if until else datetime.now(UTC)
    problem = period_problem(start, end)
    if problem is not None:
        raise fail(problem.replace("`until`", "--until").replace("`since`", "--since"))

    async def go() -> AccessReport:
        events = await export_events(await connect_temporal(), since=start, until=end, flow=flow)
        return build_report(events, since=start, until=end, flow=flow, person=person)

    text = render(run(go), format)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as err:
        raise fail(f"cannot write {output}: {err.strerror}") from None
    typer.echo(f"wrote {output}", err=True)
