"""The `keycard` command: request and decide on access, check flows, run the worker and dev stack."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from keycard.config import ConfigError, KeycardConfig, json_schema, load_config
from keycard.durations import format_duration
from keycard.models import Actor, Requester, RequestView, Role
from keycard.policy import PolicyError
from keycard.settings import Settings
from starter.slack_cli import slack as slack_command

T = TypeVar("T")

app = typer.Typer(
    help="Keycard: just-in-time access. Ask for access, approve it, and watch it end on time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
flows_app = typer.Typer(help="Check and describe keycard.yaml.", no_args_is_help=True)
app.add_typer(flows_app, name="flows")
app.command(name="slack")(slack_command)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="keycard.yaml (default: $KEYCARD_CONFIG or ./keycard.yaml)"
    ),
]
AsOption = Annotated[
    str,
    typer.Option(
        "--as",
        help="act as this person (operator mode, straight to Temporal)",
        envvar="KEYCARD_AS",
    ),
]
CommentOption = Annotated[str, typer.Option("--comment", "-m", help="a note for the audit log")]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def load(config_path: Path | None) -> KeycardConfig:
    path = config_path or Settings.from_env().config_path
    try:
        return load_config(path)
    except ConfigError as err:
        typer.secho(f"error: {err.source} is not valid:", fg=typer.colors.RED, err=True)
        for problem in err.problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1) from None


def run(coro_factory: Callable[[], Awaitable[T]]) -> T:
    """Run an async command; a refusal prints its reason and exits 1, nothing else changes."""
    try:
        return asyncio.run(coro_factory())  # type: ignore[arg-type]
    except PolicyError as err:
        raise fail(err.message) from None
    except RuntimeError as err:
        if "Failed client connect" in str(err) or "connection" in str(err).lower():
            raise fail(
                f"cannot reach Temporal ({err}). Is `keycard dev` running, or TEMPORAL_ADDRESS set?"
            ) from None
        raise


async def _keycard(config: KeycardConfig):
    from starter.client import KeycardClient, connect_temporal

    settings = Settings.from_env()
    return KeycardClient(await connect_temporal(), config, settings.task_queue)


def parse_fields(values: list[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise fail(f"--field takes NAME=VALUE, not {item!r}")
        fields[name.strip()] = value
    return fields


# --- asking and deciding -------------------------------------------------------------------------


@app.command()
def request(
    flow: Annotated[str, typer.Argument(help="the flow to request, e.g. prod-power-user")],
    actor: AsOption,
    target: Annotated[str, typer.Option("--target", "-t", help="which of the flow's targets")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="why you need access")] = "",
    duration: Annotated[
        str | None, typer.Option("--duration", "-d", help="e.g. 1h (default: the flow's first)")
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", "-f", help="extra field NAME=VALUE, repeatable")
    ] = None,
    config_path: ConfigOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Ask for access. Prints the request id to approve."""
    config = load(config_path)

    async def go() -> RequestView:
        keycard = await _keycard(config)
        return await keycard.request(
            flow=flow,
            target=target,
            duration=duration,
            reason=reason,
            fields=parse_fields(field or []),
            requester=Requester(email=actor.strip().lower()),
        )

    view = run(go)
    show(view, output)
    if output == "text" and view.state.value == "PENDING":
        typer.echo(f"\nApprove with: keycard approve {view.id} --as <approver>")


def _decision(verb: str) -> Callable[..., None]:
    def command(
        request_id: Annotated[str, typer.Argument(help="the request id, e.g. req-abc123")],
        actor: AsOption,
        comment: CommentOption = "",
        config_path: ConfigOption = None,
        admin: Annotated[
            bool, typer.Option("--admin", help="act as an admin (approver of last resort)")
        ] = False,
        output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
    ) -> None:
        config = load(config_path)
        who = Actor(email=actor.strip().lower(), role=Role.ADMIN if admin else Role.USER)

        async def go() -> RequestView:
            keycard = await _keycard(config)
            return await getattr(keycard, verb)(request_id, who, comment)

        show(run(go), output)

    command.__doc__ = {
        "approve": "Approve a pending request (you must be one of its approvers).",
        "deny": "Deny a pending request.",
        "cancel": "Cancel your own pending request.",
        "revoke": "End active access now.",
    }[verb]
    return command


for _verb in ("approve", "deny", "cancel", "revoke"):
    app.command(name=_verb)(_decision(_verb))


@app.command()
def extend(
    request_id: Annotated[str, typer.Argument(help="the request id")],
    actor: AsOption,
    duration: Annotated[str, typer.Option("--duration", "-d", help="how much longer, e.g. 30m")],
    comment: CommentOption = "",
    config_path: ConfigOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Keep active access for longer, within the flow's maximum."""
    config = load(config_path)

    async def go() -> RequestView:
        keycard = await _keycard(config)
        who = Actor(email=actor.strip().lower())
        return await keycard.extend(request_id, who, duration, comment)

    show(run(go), output)


@app.command()
def status(
    request_id: Annotated[str, typer.Argument(help="the request id")],
    config_path: ConfigOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """Show a request: its state, approvals and when access ends."""
    config = load(config_path)

    async def go() -> RequestView:
        return await (await _keycard(config)).get(request_id)

    show(run(go), output)


@app.command(name="list")
def list_requests(
    state: Annotated[str | None, typer.Option(help="PENDING, ACTIVE, ENDED, ...")] = None,
    flow: Annotated[str | None, typer.Option(help="only this flow")] = None,
    requester: Annotated[str | None, typer.Option(help="only this requester's")] = None,
    limit: Annotated[int, typer.Option(help="at most this many")] = 50,
    config_path: ConfigOption = None,
    output: Annotated[str, typer.Option("--output", "-o", help="text or json")] = "text",
) -> None:
    """List requests, newest first."""
    config = load(config_path)

    async def go():
        keycard = await _keycard(config)
        return await keycard.list(
            state=state.upper() if state else None, flow=flow, requester=requester, limit=limit
        )

    page = run(go)
    if output == "json":
        typer.echo(page.model_dump_json(indent=2))
        return
    rows = [
        (r.id, r.state or "?", r.requester or "", f"{r.flow}/{r.target}", f"{r.started_at:%F %T}")
        for r in page.requests
    ]
    typer.echo(table(("ID", "STATE", "REQUESTER", "FLOW/TARGET", "STARTED (UTC)"), rows))


# --- flows ---------------------------------------------------------------------------------------


@flows_app.command("validate")
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


@flows_app.command("schema")
def flows_schema() -> None:
    """Print the JSON Schema of keycard.yaml, for editor completion."""
    typer.echo(json_schema())


# --- processes -----------------------------------------------------------------------------------


@app.command()
def worker(config_path: ConfigOption = None) -> None:
    """Run a Keycard worker (workflows and activities) against Temporal until SIGTERM."""
    from keycard.logging import configure_logging
    from starter.client import connect_temporal
    from worker import run_worker

    configure_logging()
    config = load(config_path)

    async def go() -> None:
        await run_worker(await connect_temporal(), config, Settings.from_env())

    run(go)


@app.command()
def dev(
    config_path: ConfigOption = None,
    port: Annotated[int, typer.Option(help="Temporal frontend port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port")] = 8233,
    state_dir: Annotated[Path, typer.Option(help="where the dev SQLite and audit log live")] = Path(
        ".keycard"
    ),
) -> None:
    """Start everything locally: Temporal dev server + UI, a demo AWS, and the worker."""
    from starter.dev import run_dev

    config = load(config_path)
    asyncio.run(run_dev(config, port=port, ui_port=ui_port, state_dir=state_dir))


# --- output --------------------------------------------------------------------------------------


def show(view: RequestView, output: str = "text") -> None:
    if output == "json":
        typer.echo(view.model_dump_json(indent=2))
    else:
        typer.echo(describe(view))


def describe(view: RequestView) -> str:
    """A request as a person reads it in a terminal."""
    lines = [
        f"{view.id}  {view.state.value}",
        f"  {view.requester.email} → {view.flow_label} ({view.target_label}), "
        f"{format_duration(view.duration)}",
    ]
    if view.reason:
        lines.append(f"  reason:    {view.reason}")
    for name, value in view.fields.items():
        lines.append(f"  {name}: {value}")
    lines.append(
        f"  approvals: {len(view.approvals)} of {view.approvals_required}"
        + (f" ({', '.join(a.actor.display for a in view.approvals)})" if view.approvals else "")
    )
    if view.state.value == "PENDING":
        lines.append(f"  approvers: {', '.join(view.approvers) or 'admins only'}")
    for label, value in (
        ("granted", view.granted_at),
        ("expires", view.expires_at),
        ("ended", view.ended_at),
    ):
        if value:
            lines.append(f"  {label + ':':10} {value:%Y-%m-%d %H:%M:%S} UTC")
    if view.standing_access:
        lines.append("  note:      this access existed before Keycard and stays in place")
    if view.end_reason:
        lines.append(f"  outcome:   {view.end_reason}")
    return "\n".join(lines)


def table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [tuple(str(c) for c in headers), *[tuple(str(c) for c in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    if not rows:
        lines.append("(no requests)")
    return "\n".join(line.rstrip() for line in lines)


def main() -> None:
    app()
