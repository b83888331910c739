"""`keycard audit export`: the audit trail rebuilt from Temporal history, as JSON lines."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from keycard.models import LifecycleEvent
from starter.audit_trail import export_events, parse_time
from starter.cli.terminal import run
from starter.client import connect_temporal

app = typer.Typer(help="The audit trail: every request, decision, grant and revocation.")


@app.command("export")
def export(
    since: Annotated[str, typer.Option(help="from this date or time (UTC unless an offset)")],
    until: Annotated[
        str | None, typer.Option(help="up to, not including, this (default: now)")
    ] = None,
    flow: Annotated[str | None, typer.Option(help="only requests of this flow")] = None,
) -> None:
    """Rebuild the audit trail from Temporal history as JSON lines on stdout:

    keycard audit export --since 2026-01-01 > audit.jsonl
    """
    start, end = parse_time(since), parse_time(until) if until else None
    if end is not None and end <= start:
        raise typer.BadParameter("--until must be later than --since")

    async def go() -> list[LifecycleEvent]:
        return await export_events(await connect_temporal(), since=start, until=end, flow=flow)

    events = run(go)
    for event in events:
        sys.stdout.write(event.model_dump_json() + "\n")
    requests = len({e.request_id for e in events})
    typer.echo(f"{len(events)} event(s) from {requests} request(s)", err=True)
