"""The `keycard` command: request and decide on access, check flows, run the worker and dev stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from typer.core import TyperOption

from keycard.codec import PayloadKeyError, payload_key_problem
from keycard.config import ConfigError, KeycardConfig, json_schema, load_config, unset_environment
from keycard.durations import format_duration
from keycard.models import Actor, Requester, RequestState, RequestView, Role
from keycard.policy import PolicyError
from keycard.settings import Settings
from starter.api_client import API_URL_ENV, ApiUnavailable, api_from_env
from starter.codec_cli import codec_app
from starter.console.sso import SsoSettings, SsoSettingsError
from starter.doctor import doctor as _doctor
from starter.drift import drift_command
from starter.hooks_cli import break_glass, hooks_app
from starter.login import login, logout
from starter.next_steps import WAIT_AT_MOST, next_steps, waiting_message
from starter.output import Output, OutputOption
from starter.serve import serve, token_app
from starter.slack_cli import slack as slack_command
from starter.strategies_cli import strategies_app

T = TypeVar("T")


_option_type = TyperOption.display_type_rich


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """A flag takes no value, so --help shows none (typer 0.29 prints `<bool>` beside each)."""
    return None if self.is_flag else _option_type(self, ctx)


TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(
    help="Keycard: just-in-time access. Ask for access, approve it, and watch it end on time.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
flows_app = typer.Typer(help="Check and describe keycard.yaml.", no_args_is_help=True)
app.add_typer(flows_app, name="flows")
app.add_typer(token_app, name="token")
app.add_typer(hooks_app, name="hooks", no_args_is_help=True)
app.add_typer(strategies_app, name="strategies", no_args_is_help=True)
app.command(name="break-glass")(break_glass)

from starter.audit import app as audit_app  # noqa: E402 - the sub-app needs `app` defined first

app.add_typer(audit_app, name="audit", no_args_is_help=True)
app.command(name="slack")(slack_command)
app.add_typer(codec_app, name="codec")
app.command("drift")(drift_command)
app.command(name="login")(login)
app.command(name="logout")(logout)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="keycard.yaml (default: $KEYCARD_CONFIG or ./keycard.yaml)"
    ),
]
AsOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        help="act as this person (operator mode, straight to Temporal; with the API, your token "
        "says who you are, and a service token uses --as on `request` for the requester)",
        envvar="KEYCARD_AS",
    ),
]
CommentOption = Annotated[str, typer.Option("--comment", "-m", help="a note for the audit log")]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def config_path_for(config_path: Path | None) -> Path:
    """--config, else $KEYCARD_CONFIG, else ./keycard.yaml; and when none of those exists, the
    file a `keycard dev` running from this directory uses (so its printed commands just work)."""
    if config_path is not None or os.environ.get("KEYCARD_CONFIG"):
        return config_path or Settings.from_env().config_path
    default = Settings.from_env().config_path
    if default.exists():
        return default
    from starter.dev_state import read_dev_state

    try:
        recorded = read_dev_state(Path(".keycard")).get("config_path")
    except FileNotFoundError:
        recorded = None
    return Path(recorded) if recorded else default


def start_problems(config: KeycardConfig, *, aws: bool = True) -> list[str]:
    """What keeps a worker from starting with this config here: unset `${VAR}`s, PagerDuty
    settings its client refuses, and (`aws`) no AWS region."""
    from activities.aws import region_problem  # boto3: only for commands that talk to AWS
    from activities.pagerduty import settings_problem

    problems = unset_environment(config)
    aws = aws and config.uses_aws  # a worker of Okta, http and custom flows needs no region
    problems += [p for p in (settings_problem(), region_problem(config.aws) if aws else None) if p]
    problems += [p for p in (payload_key_problem(),) if p]
    try:
        Settings.from_env()  # KEYCARD_WORKER_* and KEYCARD_METRICS_ADDRESS
    except ValueError as err:
        problems.append(str(err))
    return problems


def refuse_to_start(config: KeycardConfig, *, aws: bool = True) -> None:
    problems = start_problems(config, aws=aws)
    if problems:
        typer.secho("error: the worker cannot start:", fg=typer.colors.RED, err=True)
        for problem in problems:
            typer.echo(f"  {problem}", err=True)
        raise typer.Exit(1)


def load(config_path: Path | None) -> KeycardConfig:
    path = config_path_for(config_path)
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
    except (ApiUnavailable, PayloadKeyError, SsoSettingsError) as err:
        raise fail(str(err)) from None
    except RuntimeError as err:
        if "Failed client connect" in str(err) or "connection" in str(err).lower():
            raise fail(
                f"cannot reach Temporal ({err}). Is `keycard dev` running, or TEMPORAL_ADDRESS set?"
            ) from None
        raise


def api_mode() -> bool:
    """KEYCARD_API_URL (with KEYCARD_TOKEN) set: talk to the HTTP API, as the token's owner."""
    return bool(os.environ.get(API_URL_ENV, "").strip())


def load_unless_api(config_path: Path | None) -> KeycardConfig | None:
    """Operator mode reads keycard.yaml; in API mode the API holds the config."""
    return None if api_mode() else load(config_path)


def acting_as(actor: str | None, *, requesting: bool = False) -> str | None:
    """The --as person (lower-cased); required in operator mode, the token's owner otherwise."""
    if not api_mode():
        if not actor:
            raise fail(
                "say who you are with --as EMAIL (operator mode talks to Temporal directly), "
                f"or set {API_URL_ENV} and KEYCARD_TOKEN to use the API"
            )
        return actor.strip().lower()
    if actor and not requesting:
        typer.secho("note: --as is ignored with the API: you act as your token's owner", err=True)
        return None
    return actor.strip().lower() if actor else None


async def _keycard(config: KeycardConfig | None):
    from starter.client import KeycardClient, connect_temporal

    remote = api_from_env()
    if remote is not None:
        return remote
    assert config is not None, "operator mode loads keycard.yaml first"

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


def parse_start_at(value: str | None) -> datetime | None:
    """--start-at as an ISO 8601 time; without a zone, UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise fail(
            f"--start-at takes a time such as 2026-12-05T09:00Z (ISO 8601; without a zone, "
            f"UTC), not {value!r}"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- asking and deciding -------------------------------------------------------------------------


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
        keycard = await _keycard(config)
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


def _decision(verb: str) -> Callable[..., None]:
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
        keycard = await _keycard(config)
        return await keycard.extend(request_id, who, duration, comment)

    show(run(go), output)


@app.command()
def status(
    request_id: Annotated[str, typer.Argument(help="the request id")],
    config_path: ConfigOption = None,
    output: OutputOption = Output.TEXT,
) -> None:
    """Show a request: its state, approvals and when access ends."""
    config = load_unless_api(config_path)

    async def go() -> RequestView:
        return await (await _keycard(config)).get(request_id)

    show(run(go), output)


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
        keycard = await _keycard(config)
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
    # Not errors in the file, but a worker started here would refuse to run: say so now.
    for problem in start_problems(config):
        typer.secho(f"  warning: {problem}", fg=typer.colors.YELLOW)


@flows_app.command("schema")
def flows_schema() -> None:
    """Print the JSON Schema of keycard.yaml, for editor completion."""
    typer.echo(json_schema())


# --- processes -----------------------------------------------------------------------------------


@app.command()
def worker(config_path: ConfigOption = None) -> None:
    """Run a Keycard worker (workflows and activities) against Temporal until SIGTERM.

    SIGTERM drains: no new work is taken and in-flight activities get
    KEYCARD_WORKER_SHUTDOWN_GRACE (30s) to finish. KEYCARD_WORKER_HEALTH_PORT serves /healthz and
    /readyz for orchestrators. Logs are JSON lines (KEYCARD_LOG_FORMAT=console for people).
    """
    from keycard.logging import configure_logging
    from starter.client import connect_temporal
    from starter.health import serve_worker
    from starter.telemetry import start_tracing, stop_tracing, worker_runtime

    config = load(config_path)
    refuse_to_start(config)
    configure_logging()
    settings = Settings.from_env()  # checked by refuse_to_start
    start_tracing("keycard-worker")

    async def go() -> None:
        client = await connect_temporal(runtime=worker_runtime(settings))
        await serve_worker(client, config, settings)

    try:
        run(go)
    finally:
        stop_tracing()


app.command(name="doctor")(_doctor)


@app.command()
def dev(
    config_path: ConfigOption = None,
    port: Annotated[int, typer.Option(help="Temporal frontend port")] = 7233,
    ui_port: Annotated[int, typer.Option(help="Temporal UI port")] = 8233,
    api_port: Annotated[int, typer.Option(help="Keycard HTTP API port")] = 8000,
    state_dir: Annotated[Path, typer.Option(help="where the dev SQLite and audit log live")] = Path(
        ".keycard"
    ),
) -> None:
    """Start everything locally: Temporal dev server + UI, a demo AWS, the worker and the API."""
    from starter.dev import run_dev

    config = load(config_path)
    refuse_to_start(config, aws=False)  # without AWS settings, dev runs a demo AWS
    try:
        SsoSettings.from_env()
    except SsoSettingsError as err:
        raise fail(str(err)) from None
    try:
        asyncio.run(
            run_dev(
                config,
                port=port,
                ui_port=ui_port,
                api_port=api_port,
                state_dir=state_dir,
                config_path=config_path_for(config_path).resolve(),
            )
        )
    except OSError as err:  # a port already taken, most likely
        raise fail(str(err.strerror or err)) from None


app.command()(serve)


@app.command("demo-access")
def demo_access(
    email: Annotated[str, typer.Argument(help="whose access to show")],
    state_dir: Annotated[Path, typer.Option(help="the running `keycard dev`'s state dir")] = Path(
        ".keycard"
    ),
) -> None:
    """Show what the demo AWS of a running `keycard dev` grants a person right now."""
    from starter.demo_aws import assignments_for, session_denials_for
    from starter.dev_state import read_dev_state

    try:
        state = read_dev_state(state_dir)
    except FileNotFoundError as err:
        raise fail(str(err)) from None
    if not state.get("aws_endpoint"):
        raise fail("this `keycard dev` uses your real AWS, not the demo; use the AWS console")
    held = assignments_for(state["aws_endpoint"], state["aws_region"], email.lower())
    if not held:
        typer.echo(f"{email} holds no access in the demo AWS.")
    for spec in held:
        what = (
            f"permission set {spec.permission_set} in account {spec.account_id}"
            if spec.strategy == "aws_sso"
            else f"member of {spec.group} ({spec.strategy})"
        )
        typer.echo(f"{email}: {what}")
    config = None
    if state.get("config_path"):
        with contextlib.suppress(ConfigError, OSError):
            config = load_config(Path(state["config_path"]))
    for permission_set, account, before in session_denials_for(
        state["aws_endpoint"], state["aws_region"], email.lower(), config
    ):
        typer.echo(
            f"{email}: sessions of {permission_set} in account {account} issued before "
            f"{before:%Y-%m-%d %H:%M:%S} UTC are denied (end_sessions)"
        )


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
        f"  {view.requester.email} → {view.flow_label} ({view.targets_label}), "
        f"{format_duration(view.duration)}"
        + "".join(f" + {format_duration(e.duration)}" for e in view.extensions),
    ]
    if view.start_at is not None:
        lines.append(f"  starts:    {view.start_at:%Y-%m-%d %H:%M:%S} UTC (once approved)")
    if view.reason:
        lines.append(f"  reason:    {view.reason}")
    if view.ticket is not None:
        lines.append(
            f"  ticket:    {view.ticket.key}" + (f" {view.ticket.url}" if view.ticket.url else "")
        )
    for name, value in view.fields.items():
        lines.append(f"  {name}: {value}")
    lines.append(
        f"  approvals: {len(view.approvals)} of {view.approvals_required}"
        + (f" ({', '.join(a.actor.display for a in view.approvals)})" if view.approvals else "")
    )
    for step in view.approval_steps:
        if step.satisfied:
            lines.append(f"    step {step.name}: met ({', '.join(step.approved_by)})")
        else:
            can = ", ".join(view.can_still_approve(step)) or "an admin only"
            lines.append(
                f"    step {step.name}: {len(step.approved_by)} of {step.count}; can approve: {can}"
            )
    if view.state.value == "PENDING":
        lines.append(f"  approvers: {', '.join(view.approvers) or 'admins only'}")
    for target in view.targets:
        state = target.state + (f": {target.error}" if target.error else "")
        if target.state == "ended" and target.removed is False:
            state += " (other requests still hold it)"
        lines.append(f"  target {target.name} ({target.label}): {state}")
    for label, value in (
        ("granted", view.granted_at),
        ("expires", view.expires_at),
        ("ended", view.ended_at),
    ):
        if value:
            lines.append(f"  {label + ':':10} {value:%Y-%m-%d %H:%M:%S} UTC")
    if view.break_glass:
        lines.append("  BREAK-GLASS: the requester approved their own request; it will be reviewed")
    for note in view.notes:
        lines.append(f"  note:      {note}")
    if view.standing_access:
        lines.append("  note:      this access existed before Keycard and stays in place")
    if view.end_reason:
        lines.append(f"  outcome:   {view.end_reason}")
    return "\n".join(printable(line) for line in lines)


def printable(text: str) -> str:
    """`text` safe to print in a terminal: control characters (escape sequences that retitle the
    window or clear the screen, carriage returns that overwrite a line) shown as \\xNN. Reasons,
    fields and comments come from other people."""
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    cells = [
        tuple(str(c) for c in headers),
        *[tuple(printable(str(c)) for c in row) for row in rows],
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    if not rows:
        lines.append("(no requests)")
    return "\n".join(line.rstrip() for line in lines)


# `keycard --help` in groups a newcomer can scan.
HELP_PANELS = {
    "Ask and decide": (
        "request", "approve", "deny", "cancel", "revoke", "extend", "break-glass", "status", "list",
    ),
    "Sign in": ("login", "logout", "token"),
    "Run Keycard": ("dev", "worker", "serve", "slack", "doctor", "demo-access"),
    "Configure and audit": ("flows", "hooks", "strategies", "audit", "drift", "codec"),
}  # fmt: skip
_PANEL_OF = {name: panel for panel, names in HELP_PANELS.items() for name in names}
for _info in [*app.registered_commands, *app.registered_groups]:
    _name = _info.name or _info.callback.__name__.replace("_", "-")  # type: ignore[union-attr]
    _info.rich_help_panel = _PANEL_OF.get(_name, "Other")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"keycard {version('keycard')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    pass  # only the global options; the app's help= above describes Keycard


def main() -> None:
    from keycard.logging import configure_logging

    # Commands print their results; logs are for problems (services raise the level themselves).
    configure_logging(json=False, level=os.environ.get("KEYCARD_LOG_LEVEL", "WARNING"))
    code: int | str | None = 0
    try:
        app()
    except SystemExit as exit_:
        code = exit_.code
    # Temporal's Rust runtime threads can outlive interpreter shutdown and abort the process
    # after the command has finished (temporalio/sdk-python#300). Everything is done and flushed
    # by now, so leave without the finalization that races them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)
