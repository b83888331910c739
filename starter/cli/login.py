"""`keycard login` / `keycard logout`: sign the CLI in with single sign-on instead of a pasted token.

OpenID Connect's device authorization grant (RFC 8628): the CLI asks the API how to sign in
(`GET /v1/auth`), asks the identity provider for a code, prints where to enter it, and polls until
the person has signed in there. The ID token it gets back is the CLI's bearer token for that API;
the refresh token renews it when it expires. Both are kept in a file only this user can read
(`$KEYCARD_CREDENTIALS`, default `~/.config/keycard/credentials.json`), keyed by API URL.
KEYCARD_TOKEN, when set, wins over a stored sign-in.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any, NoReturn

import httpx
import typer

from starter.api.client import (
    API_URL_ENV,
    credentials_path,
    load_sign_ins,
    save_sign_ins,
    sign_in_entry,
)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
TIMEOUT = httpx.Timeout(10.0)


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
    store = load_sign_ins(path)
    store[url] = entry
    save_sign_ins(path, store)
    typer.echo(f"Signed in to {url} as {entry['email']}.")


def logout() -> None:
    """Forget the single sign-on of KEYCARD_API_URL (every API's, without it)."""
    url = os.environ.get(API_URL_ENV, "").strip().rstrip("/")
    path = credentials_path()
    store = load_sign_ins(path)
    gone = [url] if url in store else ([] if url else list(store))
    for key in gone:
        store.pop(key)
    if gone:
        save_sign_ins(path, store)
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
                return sign_in_entry(body, base)
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
