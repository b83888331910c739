"""`keycard login` / `keycard logout`: sign the CLI in with single sign-on instead of a pasted token.

OpenID Connect's device authorization grant (RFC 8628): the CLI asks the API how to sign in
(`GET /v1/auth`), asks the identity provider for a code, prints where to enter it, and polls until
the person has signed in there. The ID token it gets back is the CLI's bearer token for that API;
the refresh token renews it when it expires. Both are kept in a file only this user can read
(`$KEYCARD_CREDENTIALS`, default `~/.config/keycard/credentials.json`), keyed by API URL.
KEYCARD_TOKEN, when set, wins over a stored sign-in.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from starter.api_client import API_URL_ENV, ApiUnavailable

CREDENTIALS_ENV = "KEYCARD_CREDENTIALS"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
EXPIRY_MARGIN_SECONDS = 60  # renew a token this close to its end
TIMEOUT = httpx.Timeout(10.0)


def credentials_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CREDENTIALS_ENV):
        return Path(env[CREDENTIALS_ENV])
    base = Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "keycard" / "credentials.json"


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}


def _save(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2)
    path.chmod(0o600)  # also when the file existed with looser permissions


def stored_token(url: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The signed-in ID token for this API, renewed first if it is about to expire; None when
    this API was never signed in to (or the sign-in cannot be renewed: sign in again)."""
    path = credentials_path(environ)
    store = _load(path)
    entry = store.get(url.rstrip("/"))
    if not entry:
        return None
    if entry.get("expires_at", 0) - EXPIRY_MARGIN_SECONDS > time.time():
        return entry["id_token"]
    if not entry.get("refresh_token"):
        return None
    try:
        with httpx.Client(timeout=TIMEOUT) as http:
            answer = http.post(
                entry["token_endpoint"],
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": entry["refresh_token"],
                    "client_id": entry["client_id"],
                },
            )
    except httpx.HTTPError as err:
        raise ApiUnavailable(f"the identity provider did not answer ({err}); try again") from None
    if answer.status_code != 200 or "id_token" not in answer.json():
        return None
    store[url.rstrip("/")] = _entry(answer.json(), entry)
    _save(path, store)
    return store[url.rstrip("/")]["id_token"]


def _entry(tokens: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    claims = _claims(tokens["id_token"])
    return {
        **base,
        "id_token": tokens["id_token"],
        "refresh_token": tokens.get("refresh_token") or base.get("refresh_token"),
        "expires_at": int(claims.get("exp", time.time() + int(tokens.get("expires_in", 300)))),
        "email": claims.get("email"),
    }


def _claims(id_token: str) -> dict[str, Any]:
    """The token's claims, unverified: only to know when it ends and whose it is (the API is
    what checks it)."""
    payload = id_token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def login(
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="only print the address; do not open a browser")
    ] = False,
) -> None:
    """Sign in to the Keycard API at KEYCARD_API_URL with single sign-on."""
    url = os.environ.get(API_URL_ENV, "").strip().rstrip("/")
    if not url:
        _fail(
            f"set {API_URL_ENV} to the Keycard API you sign in to, such as https://keycard.example.com"
        )
    try:
        entry = _device_flow(url, open_browser=not no_browser)
    except _LoginError as err:
        _fail(str(err))
    path = credentials_path()
    store = _load(path)
    store[url] = entry
    _save(path, store)
    typer.echo(f"Signed in to {url} as {entry['email']}.")


def logout() -> None:
    """Forget the single sign-on of KEYCARD_API_URL (every API's, without it)."""
    url = os.environ.get(API_URL_ENV, "").strip().rstrip("/")
    path = credentials_path()
    store = _load(path)
    gone = [url] if url in store else ([] if url else list(store))
    for key in gone:
        store.pop(key)
    if gone:
        _save(path, store)
    typer.echo(f"Signed out of {', '.join(gone)}." if gone else "Not signed in.")


class _LoginError(Exception):
    pass


def _device_flow(url: str, open_browser: bool) -> dict[str, Any]:
    with httpx.Client(timeout=TIMEOUT) as http:
        settings = _get(http, f"{url}/v1/auth", "the Keycard API")
        metadata = _get(
            http, f"{settings['issuer']}/.well-known/openid-configuration", "the identity provider"
        )
        device_endpoint = metadata.get("device_authorization_endpoint")
        if not device_endpoint:
            raise _LoginError(
                "the identity provider does not offer the device flow (no "
                "device_authorization_endpoint); ask its admins to enable it for Keycard's CLI client"
            )
        started = _post(
            http, device_endpoint, {"client_id": settings["client_id"], "scope": settings["scopes"]}
        )
        where = started.get("verification_uri_complete") or started["verification_uri"]
        typer.echo(f"Open {where}")
        typer.echo(f"and confirm the code {started['user_code']} to sign in.")
        if open_browser:
            import webbrowser

            webbrowser.open(where)
        interval = int(started.get("interval", 5))
        deadline = time.monotonic() + int(started.get("expires_in", 600))
        while time.monotonic() < deadline:
            time.sleep(interval)
            answer = http.post(
                metadata["token_endpoint"],
                data={
                    "grant_type": DEVICE_GRANT,
                    "device_code": started["device_code"],
                    "client_id": settings["client_id"],
                },
            )
            body = answer.json()
            error = body.get("error")
            if answer.status_code == 200 and "id_token" in body:
                base = {
                    "token_endpoint": metadata["token_endpoint"],
                    "client_id": settings["client_id"],
                }
                return _entry(body, base)
            if error == "slow_down":
                interval += 5
            elif error != "authorization_pending":
                raise _LoginError(
                    {
                        "access_denied": "the sign-in was declined at the identity provider",
                        "expired_token": "the code expired before it was confirmed; run it again",
                    }.get(
                        error,
                        f"the identity provider refused: {body.get('error_description') or error}",
                    )
                )
    raise _LoginError("the code expired before it was confirmed; run `keycard login` again")


def _get(http: httpx.Client, url: str, who: str) -> dict[str, Any]:
    try:
        answer = http.get(url)
    except httpx.HTTPError as err:
        raise _LoginError(f"{who} did not answer at {url} ({err})") from None
    if answer.status_code != 200:
        try:
            detail = answer.json().get("detail")
        except ValueError:
            detail = None
        raise _LoginError(detail or f"{who} answered {answer.status_code} at {url}")
    return answer.json()


def _post(http: httpx.Client, url: str, data: dict[str, str]) -> dict[str, Any]:
    try:
        answer = http.post(url, data=data)
    except httpx.HTTPError as err:
        raise _LoginError(f"the identity provider did not answer at {url} ({err})") from None
    if answer.status_code != 200:
        raise _LoginError(f"the identity provider refused the sign-in: {answer.text[:200]}")
    return answer.json()


def _fail(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)
