"""`keycard audit export` and `verify`: the audit trail rebuilt from Temporal history, as JSON
lines; and a stored trail checked for tampering."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keycard.audit_chain import (
    by_request,
    compare_with_history,
    drop_redelivered,
    event_time,
    verify_chain,
)
from keycard.models import LifecycleEvent
from starter.audit_trail import export_events, parse_time, recorded_events, written_by_grants
from starter.cli.terminal import fail, run
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


@app.command("verify")
def verify(
    file: Annotated[
        Path, typer.Argument(help="a trail: `keycard audit export`'s, or a jsonl sink's")
    ],
    offline: Annotated[
        bool,
        typer.Option("--offline", help="check the hash chains only, without Temporal's history"),
    ] = False,
) -> None:
    """Check a stored trail for tampering: each request's hash chain, and (unless --offline) the
    events against those its Temporal history recorded. Names the first event missing, altered or
    reordered in each request; exit 1 if there is one.

        keycard audit verify audit.jsonl
    """
    events, copies, findings = drop_redelivered(_read_trail(file))
    verdict = verify_chain(events)
    findings += verdict.findings
    if not offline:
        request_ids = list(by_request(events))

        async def go() -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
            client = await connect_temporal()
            history = await recorded_events(client, request_ids)
            # Events a request's own history lacks may have been written by a grant.
            known = {str(e.get("id")) for own in history.values() for e in own}
            lacking = [event_time(e) for e in events if str(e.get("id")) not in known]
            if not lacking:
                return history, {}
            return history, await written_by_grants(client, min(lacking), max(lacking))

        broken = {f.request_id for f in findings}
        history, elsewhere = run(go)
        findings += [
            f
            for f in compare_with_history(events, history, elsewhere)
            if f.request_id not in broken
        ]
    unchained = verdict.events - verdict.chained
    typer.echo(
        f"{file}: {verdict.events} event(s) of {verdict.requests} request(s); "
        f"{verdict.chained} chained"
        + (
            f", {unchained} without a chain (made outside a request, or before keycard-v13)"
            if unchained
            else ""
        )
        + (f"; {copies} redelivered cop(ies) set aside" if copies else "")
        + ("" if offline else "; compared with Temporal's history")
    )
    if findings:
        for finding in findings:
            typer.secho(f"  {finding}", fg=typer.colors.RED)
        raise typer.Exit(1)
    typer.secho("OK: nothing missing, altered or reordered.", fg=typer.colors.GREEN)


def _read_trail(file: Path) -> list[dict[str, Any]]:
    """The trail's events, one JSON object a line, in the file's order."""
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as err:
        raise fail(f"cannot read {file}: {err.strerror}") from None
    events = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise fail(
                f"{file}, line {number}: not a JSON event; a trail is one JSON object a line "
                "(`keycard audit export`, or a jsonl destination's file)"
            ) from None
        if not isinstance(event, dict) or "request_id" not in event or "id" not in event:
            raise fail(f"{file}, line {number}: not a Keycard audit event (no id or request_id)")
        events.append(event)
    return events
