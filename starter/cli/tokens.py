"""`keycard token create`: API tokens, of which keycard.yaml keeps only the hashes."""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic import ValidationError

from keycard.config import describe_errors
from keycard.models import Role
from starter.api.auth import config_entry, config_line, new_token

app = typer.Typer(
    help="Make API tokens (keycard.yaml keeps only their hashes).", no_args_is_help=True
)


@app.command("create")
def token_create(
    email: Annotated[str, typer.Option(help="who the token acts as")],
    role: Annotated[
        Role, typer.Option(help="user; admin (approver of last resort); service")
    ] = Role.USER,
    name: Annotated[str, typer.Option(help="what it is for, e.g. ci-deploy")] = "",
) -> None:
    """Print a new API token once, and the keycard.yaml line that lets it in."""
    token = new_token()
    try:
        entry = config_entry(token, email, role, name)
    except ValidationError as err:
        for problem in describe_errors(err):
            typer.secho(f"error: {problem}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"API token for {entry.email} ({entry.role}); it is shown only now, so store it:\n")
    typer.echo(f"    {token}\n")
    typer.echo("Add this under `api: tokens:` in keycard.yaml (it holds only the hash):\n")
    typer.echo(f"    {config_line(entry)}\n")
    typer.echo("Then restart `keycard serve`. To revoke the token later, delete that line.")
