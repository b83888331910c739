"""What every `keycard` command shares: loading keycard.yaml, reaching Keycard (Temporal directly,
or the HTTP API), running an async call, and printing its answer for people or scripts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from keycard.codec import PayloadKeyError, payload_key_problem
from keycard.config import ConfigError, KeycardConfig, load_config, unset_environment
from keycard.durations import format_duration
from keycard.models import RequestView
from keycard.policy import PolicyError
from keycard.settings import Settings
from starter.api.client import API_URL_ENV, ApiUnavailable, api_from_env
from starter.protocol import Keycard
from starter.sso import SsoSettingsError

if TYPE_CHECKING:
    from starter.api.client import KeycardApiClient
    from starter.client import KeycardClient

    # Both clients keep the one shape; mypy (in `make test`) fails the build where one does not.
    _THROUGH_TEMPORAL: type[Keycard] = KeycardClient
    _THROUGH_THE_API: type[Keycard] = KeycardApiClient

T = TypeVar("T")


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


async def connect(config: KeycardConfig | None) -> Keycard:
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


def show(view: RequestView, output: str = "text", *, policy: bool = False) -> None:
    if output == "json":
        typer.echo(view.model_dump_json(indent=2))
    else:
        typer.echo(describe(view, policy=policy))


def describe(view: RequestView, *, policy: bool = False) -> str:
    """A request as a person reads it in a terminal; `policy`: with the policy it is decided
    under (`keycard status` shows it; the answers to asking and deciding leave it out)."""
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
    if policy and view.policy is not None:
        lines.append(f"  policy:    {view.policy.short}")
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
        if view.review is not None:
            note = f": {view.review.comment}" if view.review.comment else ""
            lines.append(
                f"  review:    {view.review.finding} by {view.review.by.display} at "
                f"{view.review.at:%Y-%m-%d %H:%M:%S} UTC{note}"
            )
        elif view.review_due is not None:
            lines.append(
                f"  review:    awaiting an approver's, until {view.review_due:%Y-%m-%d %H:%M} UTC "
                f"(keycard review {view.id})"
            )
    for note in view.notes:
        lines.append(f"  note:      {note}")
    if view.standing_access:
        lines.append("  note:      this access existed before Keycard and stays in place")
    if view.end_reason:
        lines.append(f"  outcome:   {view.end_reason}")
    for activity in view.activity:
        on = f" ({activity.target})" if view.targets else ""
        lines.append(f"  activity:  {activity.line}{on}")
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
