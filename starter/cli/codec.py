"""`keycard codec`: make keys for the payload codec (keycard/codec.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from keycard.codec import KEY_ENV, PayloadKeyError, PayloadKeys, new_key

app = typer.Typer(
    help=f"Encrypt what Keycard writes into Temporal ({KEY_ENV}).", no_args_is_help=True
)


@app.command("new-key")
def new_key_command(
    key_id: Annotated[
        str | None,
        typer.Option(
            "--id", help="the key's id, written beside every payload (default: kYYYYMMDD)"
        ),
    ] = None,
) -> None:
    """Print a fresh AES-256 key as ID:BASE64, ready for KEYCARD_PAYLOAD_KEY."""
    key_id = key_id or datetime.now(UTC).strftime("k%Y%m%d")
    try:
        entry = new_key(key_id)
        current = PayloadKeys.from_env()
    except PayloadKeyError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    if current is not None and key_id in current.by_id:
        typer.secho(
            f"error: {KEY_ENV} already has a key {key_id!r}; pick another --id (an id names one "
            "key forever: payloads carry it)",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(entry)
    value = f"{entry},${KEY_ENV}" if current else entry  # rotating: the new key goes first
    typer.echo(
        "\nKeep it secret (a secret manager, not keycard.yaml). Every worker, API and CLI that "
        f"talks to Temporal needs the same value:\n\n  {KEY_ENV}={value}\n\n"
        "The first key encrypts; all of them decrypt. Keep an old key listed for as long as "
        "Temporal keeps the histories it encrypted (the namespace's retention).",
        err=True,
    )
