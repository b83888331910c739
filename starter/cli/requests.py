"""Asking and deciding: `keycard request`, `approve`, `deny`, `cancel`, `revoke`, `break-glass`,
`extend`, `status` and `list`. Each works the same against Temporal (operator mode, `--as`) and
the HTTP API (KEYCARD_API_URL), through the one client shape in starter/protocol.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from keycard.models import Actor, Requester, RequestState, RequestView, ReviewFinding, Role
from starter.cli.next_steps import WAIT_AT_MOST, next_steps, waiting_message
from starter.cli.terminal import (
    AsOption,
    CommentOption,
    ConfigOption,
    Output,
    OutputOption,
    acting_as,
    api_mode,
    connect,
    fail,
    load_unless_api,
    parse_fields,
    parse_start_at,
    run,
    show,
    table,
)
from starter.protocol import DECISIONS, Verb, decision

app = typer.Typer()


@app.command()
def request(
    flow: Annotated[str, typer.Argument(help="the flow to request, e.g. prod-power-user")],
    target: Annotated[
        list[str],
        typer.Option(
            "--target",
            "-t",
            help="which of the flow's targets; repeat it (or separate with commas) for several, "
            "all under one approval",
        ),
    ],
    actor: AsOption = None,
    reason: Annotated[str, typer.Option("--reason", "-r", help="why you need access")] = "",
    duration: Annotated[
        str | None, typer.Option("--duration", "-d", help="e.g. 1h (default: the flow's first)")
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", "-f", help="extra field NAME=VALUE, repeatable")
    ] = None,
    config_path: ConfigOption = None,
    output: OutputOption = Output.TEXT,
    start_at: Annotated[
        str | None,
        typer.Option(
            "--start-at",
            help="begin access then, once approved (ISO 8601, e.g. 2026-12-05T09:00Z; "
            "default: as soon as approved)",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="wait until access is active, then say how to use it")
    ] = False,
) -> None:
    """Ask for access. Prints the request id to approve."""
    targets = [name.strip() for value in target for name in value.split(",") if name.strip()]
    starts = parse_start_at(start_at)
    who = acting_as(actor, requesting=True)
    config = load_unless_api(config_path)

    async def go() -> RequestView:
        keycard = await connect(config)
        view = await keycard.request(
            flow=flow,
            target=targets[0] if len(targets) == 1 else targets,
            duration=duration,
            reason=reason,
            fields=parse_fields(field or []),
            start_at=starts,
            requester=Requester(email=who) if who else None,
        )
        waiting = (RequestState.PENDING, RequestState.SCHEDULED, RequestState.GRANTING)
        if wait and view.state in waiting:
            typer.echo(waiting_message(view), err=True)
            view = await keycard.wait(view.id, timeout=WAIT_AT_MOST)
        return view

    view = run(go)
    show(view, output)
    if wait:
        if view.state is not RequestState.ACTIVE:
            raise fail(f"request {view.id} is {view.state.value}: {view.end_reason or 'no access'}")
        if output == "text":
            typer.echo("\n" + next_steps(view))
    elif output == "text" and view.state.value == "PENDING":
        approver = "" if api_mode() else " --as <approver>"
        typer.echo(f"\nApprove with: keycard approve {view.id}{approver}")


def _decision(verb: Verb) -> Callable[..., None]:
    def command(
        request_id: Annotated[str, typer.Argument(help="the request id, e.g. req-abc123")],
        actor: AsOption = None,
        comment: CommentOption = "",
        config_path: ConfigOption = None,
        admin: Annotated[
            bool, typer.Option("--admin", help="act as an admin (approver of last resort)")
        ] = False,
        output: OutputOption = Output.TEXT,
    ) -> None:
        who = Actor(email=acting_as(actor), role=Role.ADMIN if admin else Role.USER)
        config = load_unless_api(config_path)

        async def go() -> RequestView:
            keycard = await connect(config)
            return await decision(keycard, verb)(request_id, who, comment)

        show(run(go), output)

    command.__doc__ = {
        "approve": "Approve a pending request (you must be one of its approvers).",
        "deny": "Deny a pending request.",
        "cancel": "Cancel your own pending request.",
        "revoke": "End active access now.",
    }[verb]
    return command


for _verb in DECISIONS:
    app.command(name=_verb)(_decision(_verb))


@app.command()
def extend(
    request_id: Annotated[str, typer.Argument(help="the request id")],
    duration: Annotated[str, typer.Option("--duration", "-d", help="how much longer, e.g. 30m")],
    actor: AsOption = None,
    comment: CommentOption = "",
    config_path: ConfigOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Keep active access for longer, within the flow's maximum."""
    who = Actor(email=acting_as(actor))
    config = load_unless_api(config_path)

    async def go() -> RequestView:
        keycard = await connect(config)
        return await keycard.extend(request_id, who, duration, comment)

    show(run(go), output)


@app.command()
def status(
    request_id: Annotated[str, typer.Argument(help="the request id")],
    config_path: ConfigOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Show a request: its state, approvals, the policy it is decided under, and when access ends."""
    config = load_unless_api(config_path)

    async def go() -> RequestView:
        return await (await connect(config)).get(request_id)

    show(run(go), output, policy=True)


@app.command(name="list")
def list_requests(
    state: Annotated[
        RequestState | None, typer.Option(case_sensitive=False, help="only requests in this state")
    ] = None,
    flow: Annotated[str | None, typer.Option(help="only this flow")] = None,
    requester: Annotated[str | None, typer.Option(help="only this requester's")] = None,
    target: Annotated[str | None, typer.Option(help="only this target")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    config_path: ConfigOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """List requests, newest first."""
    config = load_unless_api(config_path)

    async def go():
        keycard = await connect(config)
        return await keycard.list(
            state=state.value if state else None,
            flow=flow,
            requester=requester,
            target=target,
            limit=limit,
        )

    page = run(go)
    if output == "json":
        typer.echo(page.model_dump_json(indent=2))
        return
    rows = [
        (
            r.id,
            r.state or "?",
            r.requester.email if r.requester else "",
            f"{r.flow}/{r.target}",
            f"{r.started_at:%F %T}",
            f"{r.expires_at:%F %T}" if r.expires_at else "",
            r.decided_by or "",
        )
        for r in page.requests
    ]
    headers = (
        "ID",
        "STATE",
        "REQUESTER",
        "FLOW/TARGET",
        "STARTED (UTC)",
        "ENDS (UTC)",
        "DECIDED BY",
    )
    typer.echo(table(headers, rows))


@app.command()
def review(
    request_id: Annotated[str, typer.Argument(help="a request approved with break-glass")],
    unjustified: Annotated[
        bool,
        typer.Option(
            "--unjustified",
            help="the emergency was not real, or the access did not fit it (say why with -m)",
        ),
    ] = False,
    comment: Annotated[str, typer.Option("--comment", "-m", help="what the review found")] = "",
    actor: Annotated[
        str | None,
        typer.Option(
            "--as", help="you, an approver of the flow (operator mode)", envvar="KEYCARD_AS"
        ),
    ] = None,
    config_path: Annotated[Path | None, typer.Option("--config", "-c", help="keycard.yaml")] = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Review a break-glass use afterwards, as an approver of the flow: justified (the default)
    or --unjustified with a comment. Audited as break_glass.reviewed; the request waits for it
    after its access ends, until the flow's break_glass_review_within (7 days by default).

        keycard review req-3k3frn88hz -m "the primary was down; INC-4312" --as bob@example.com
    """
    who = Actor(email=acting_as(actor))
    config = load_unless_api(config_path)
    finding: ReviewFinding = "unjustified" if unjustified else "justified"

    async def go() -> RequestView:
        keycard = await connect(config)
        return await keycard.review(request_id, who, finding, comment)

    show(run(go), output)


@app.command(name="break-glass")
def break_glass(
    request_id: Annotated[str, typer.Argument(help="your own pending request")],
    justification: Annotated[
        str, typer.Option("--justification", "-m", help="what is broken and why it cannot wait")
    ],
    actor: Annotated[
        str | None,
        typer.Option("--as", help="you, the requester (operator mode)", envvar="KEYCARD_AS"),
    ] = None,
    config_path: Annotated[Path | None, typer.Option("--config", "-c", help="keycard.yaml")] = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Approve your own request in an emergency (flows with break_glass). Access starts now;
    the request is marked break-glass, announced to security and reviewed afterwards."""
    who = Actor(email=acting_as(actor))  # with the API, the token says who you are
    config = load_unless_api(config_path)

    async def go() -> RequestView:
        keycard = await connect(config)
        return await keycard.break_glass(request_id, who, justification)

    show(run(go), output)
