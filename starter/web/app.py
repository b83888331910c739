"""The console's routes: sign-in, the home page, asking, a request's page with its decisions, and
the admins' view of who has access now. See the package docstring for sessions and sign-in.

Longer than most modules: the pages follow one another here as a person moves through them, so
the session and CSRF checks every form makes are seen together.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware
from temporalio.service import RPCError

from keycard import policy
from keycard.durations import format_duration
from keycard.models import Actor, Requester, RequestState, RequestView, Role
from keycard.policy import PolicyError
from keycard.slack_blocks import extension_choices
from starter.api.auth import Identity, hash_token
from starter.api.problems import STATUS_OF_REFUSAL
from starter.audit_trail import history_events
from starter.client import KeycardClient, RequestNotFound
from starter.pages import RequestSummary
from starter.sso import CALLBACK_PATH, SsoSettings, public_url

log = structlog.get_logger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "keycard_session"
SESSION_MAX_AGE = timedelta(hours=8)
SECRET_ENV = "KEYCARD_CONSOLE_SECRET"  # noqa: S105 -- the variable's name, not a secret
TEMPORAL_UI_ENV = "KEYCARD_TEMPORAL_UI_URL"
POLL_SECONDS = 4  # pages refresh themselves when what they show changes
LIST_LIMIT = 100
ACCESS_NOW_LIMIT = 200
# Access now asks each active request for its details; one whose worker does not answer in this
# long is listed from visibility instead of holding up the page.
ACCESS_QUERY_TIMEOUT = 3.0
PAGE_QUERY_TIMEOUT = 10.0  # a request's own page waits longer, then says it is not answering

templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["duration"] = format_duration
templates.env.globals["poll_ms"] = POLL_SECONDS * 1000


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


templates.env.filters["when"] = _when


@dataclass(frozen=True)
class ConsoleOptions:
    """`sso`: single sign-on over OpenID Connect (starter/sso.py). `public_url`: the
    console's address as browsers reach it (redirect URIs, links in messages); an https one also
    marks the session cookie Secure. `dev_users`: people anyone may sign in as without a token
    (keycard dev only; empty elsewhere, where that sign-in is refused)."""

    sso: SsoSettings | None = None
    public_url: str | None = None
    dev_users: dict[str, Role] = field(default_factory=dict)
    temporal_ui_url: str | None = None  # a request's page links to its workflow there

    @property
    def https_only(self) -> bool:
        return bool(self.public_url and self.public_url.startswith("https://"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConsoleOptions:
        """From KEYCARD_OIDC_* and KEYCARD_PUBLIC_URL; raises SsoSettingsError saying what to fix."""
        env = os.environ if environ is None else environ
        ui = env.get(TEMPORAL_UI_ENV, "").strip().rstrip("/") or None
        return cls(sso=SsoSettings.from_env(env), public_url=public_url(env), temporal_ui_url=ui)


def session_middleware(https_only: bool = False) -> tuple[type, dict[str, Any]]:
    """The middleware and its options for `app.add_middleware`: signed, HttpOnly, SameSite=Lax
    session cookies. The key is KEYCARD_CONSOLE_SECRET (the same on every API replica), or one
    made for this process, whose sessions then end when it stops."""
    secret = os.environ.get(SECRET_ENV) or secrets.token_urlsafe(32)
    return SessionMiddleware, {
        "secret_key": secret,
        "session_cookie": SESSION_COOKIE,
        "max_age": int(SESSION_MAX_AGE.total_seconds()),
        "same_site": "lax",
        "https_only": https_only,
    }


# --- who is signed in ---------------------------------------------------------------------------


def _options(request: Request) -> ConsoleOptions:
    return request.app.state.console


def _keycard(request: Request) -> KeycardClient:
    return request.app.state.keycard


def signed_in(request: Request) -> Identity | None:
    session = request.session
    if "sso_email" in session and _options(request).sso is not None:
        email = session["sso_email"]
        admins = _keycard(request).config.api.admins
        return Identity(email=email, role=Role.ADMIN if email in admins else Role.USER, name="sso")
    if "token_hash" in session:
        identity = request.app.state.tokens.identify_hash(session["token_hash"])
        if identity is None:  # the token left keycard.yaml: so does the session
            session.clear()
        return identity
    email = session.get("dev_email")
    role = _options(request).dev_users.get(email) if email else None
    if role is None:
        session.pop("dev_email", None)
        return None
    return Identity(email=email, role=role, name="keycard dev")


def _actor(identity: Identity) -> Actor:
    return Actor(email=identity.email, role=identity.role, via="console")


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


async def _form(request: Request) -> dict[str, str]:
    """The posted form, once its CSRF token matches the session's; 403 otherwise."""
    form = await request.form()
    sent = str(form.get("csrf", ""))
    expected = request.session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise _Refused(
            HTTPStatus.FORBIDDEN,
            "this form has expired or did not come from this console; reload the page and try again",
        )
    return {key: str(value) for key, value in form.items() if key != "csrf"}


class _Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _page(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    identity = getattr(request.state, "console_identity", None)
    context.update(
        me=identity,
        csrf=_csrf(request) if identity or name == "signin.html" else "",
        dev_users=_options(request).dev_users,
        sso=_options(request).sso is not None,
    )
    return templates.TemplateResponse(request, name, context, status_code=status)


def _redirect(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=HTTPStatus.SEE_OTHER)


Handler = Callable[..., Awaitable[Response]]


def _people(handler: Handler) -> Handler:
    """Pages for signed-in people: the others go to the sign-in page; a refused form is shown
    on the page it came from, with the sentence."""

    async def page(request: Request, **kwargs: Any) -> Response:
        identity = signed_in(request)
        if identity is None:
            if request.method == "GET" and not request.url.path.endswith(".json"):
                return _redirect("/signin")
            return JSONResponse({"detail": "sign in first"}, status_code=HTTPStatus.UNAUTHORIZED)
        request.state.identity = identity  # for the access log
        request.state.console_identity = identity
        try:
            return await handler(request, identity, **kwargs)
        except _Refused as refused:
            return _page(request, "error.html", refused.status, message=refused.message)

    # FastAPI reads the handler's parameters (path parameters such as request_id) from this.
    signature = inspect.signature(handler)
    page.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[p for name, p in signature.parameters.items() if name != "me"]
    )
    page.__name__ = handler.__name__
    page.__doc__ = handler.__doc__
    return page


# --- routes -----------------------------------------------------------------------------------


def console_router() -> APIRouter:
    router = APIRouter(include_in_schema=False)

    @router.get("/signin")
    async def signin_page(request: Request) -> Response:
        return _page(request, "signin.html")

    @router.post("/signin")
    async def signin(request: Request) -> Response:
        try:
            form = await _form(request)
        except _Refused as refused:
            return _page(request, "signin.html", refused.status, error=refused.message)
        token = form.get("token", "").strip()
        if request.app.state.tokens.identify(token) is None:
            log.info("console.signin_refused")
            return _page(
                request,
                "signin.html",
                HTTPStatus.UNAUTHORIZED,
                error="that token is not valid (unknown, mistyped or removed); "
                "a Keycard admin makes one with `keycard token create`",
            )
        request.session.clear()  # a fresh session (and CSRF token) for whoever signs in
        request.session["token_hash"] = hash_token(token)
        return _redirect("/")

    @router.get("/signin/sso")
    async def signin_sso(request: Request) -> Response:
        client = _sso_client(request)
        if client is None:
            return _page(
                request,
                "signin.html",
                HTTPStatus.NOT_FOUND,
                error="single sign-on is not configured here; sign in with a token",
            )
        options = _options(request)
        redirect_uri = (
            f"{options.public_url}{CALLBACK_PATH}"
            if options.public_url
            else str(request.url_for("signin_sso_callback"))
        )
        try:
            return await client.authorize_redirect(request, redirect_uri)
        except Exception as err:  # the provider is down or its metadata is wrong
            log.warning("console.sso_unavailable", error=str(err))
            return _page(
                request,
                "signin.html",
                HTTPStatus.BAD_GATEWAY,
                error="the identity provider did not answer; try again, or sign in with a token",
            )

    @router.get(CALLBACK_PATH)
    async def signin_sso_callback(request: Request) -> Response:
        client = _sso_client(request)
        if client is None:
            return _redirect("/signin")
        try:
            token = await client.authorize_access_token(request)
        except Exception as err:  # a forged or replayed callback, a refused code, a bad token
            log.info("console.sso_refused", error=str(err)[:200])
            return _page(
                request,
                "signin.html",
                HTTPStatus.UNAUTHORIZED,
                error="single sign-on did not complete (the link was used already, expired, or "
                "did not come from your identity provider); sign in again",
            )
        claims = token.get("userinfo") or {}
        email = str(claims.get("email") or "").strip().lower()
        if not email or claims.get("email_verified") is False:
            return _page(
                request,
                "signin.html",
                HTTPStatus.FORBIDDEN,
                error="your identity provider did not give a verified email address, which is "
                "how Keycard knows you; ask its admins to release the email claim",
            )
        request.session.clear()
        request.session["sso_email"] = email
        log.info("console.sso_signed_in", caller=email)
        return _redirect("/")

    @router.post("/signin/dev")
    async def signin_dev(request: Request) -> Response:
        try:
            form = await _form(request)
        except _Refused as refused:
            return _page(request, "signin.html", refused.status, error=refused.message)
        email = form.get("email", "")
        if email not in _options(request).dev_users:
            return _page(
                request,
                "signin.html",
                HTTPStatus.FORBIDDEN,
                error="signing in without a token is only for `keycard dev`'s demo users",
            )
        request.session.clear()
        request.session["dev_email"] = email
        return _redirect("/")

    @router.post("/signout")
    async def signout(request: Request) -> Response:
        if signed_in(request) is not None:  # a page elsewhere cannot sign people out
            try:
                await _form(request)
            except _Refused as refused:
                return _page(request, "error.html", refused.status, message=refused.message)
        request.session.clear()
        return _redirect("/signin")

    @router.get("/")
    @_people
    async def home(request: Request, me: Identity) -> Response:
        mine, to_decide = await _home_lists(_keycard(request), me)
        return _page(request, "home.html", mine=mine, to_decide=to_decide)

    @router.get("/home.json")
    @_people
    async def home_stamp(request: Request, me: Identity) -> Response:
        mine, to_decide = await _home_lists(_keycard(request), me)
        return JSONResponse({"stamp": _stamp([*mine, *to_decide])})

    @router.get("/new")
    @_people
    async def new_page(request: Request, me: Identity) -> Response:
        return _page(request, "new.html", flows=_requestable(_keycard(request), me), values={})

    @router.post("/new")
    @_people
    async def new_request(request: Request, me: Identity) -> Response:
        keycard = _keycard(request)
        form: dict[str, Any] = dict(await _form(request))
        # One target, or several (a multiple select): one approval covers them all.
        form["targets"] = [str(t) for t in (await request.form()).getlist("target") if t]
        flows = _requestable(keycard, me)
        flow = next((f for f in flows if f.name == form.get("flow")), None)
        fields = {
            key.removeprefix("field."): value
            for key, value in form.items()
            if key.startswith("field.") and value != ""
        }
        try:
            if flow is None:
                raise PolicyError(
                    "UnknownFlow",
                    "choose one of the flows listed; you may not request that one",
                    policy.Refusal.INVALID,
                )
            view = await keycard.request(
                flow=flow.name,
                target=form["targets"][0] if len(form["targets"]) == 1 else form["targets"],
                duration=form.get("duration") or None,
                reason=form.get("reason", ""),
                fields=fields,  # text, as from any form: check_fields types them
                start_at=_start_at(form.get("start_at", "")),
                requester=Requester(email=me.email),
                via="console",
            )
        except PolicyError as refusal:
            return _page(
                request,
                "new.html",
                _status(refusal),
                flows=flows,
                values=form,
                error=refusal.message,
            )
        log.info("console.request", request_id=view.id, caller=me.email)
        return _redirect(f"/requests/{view.id}")

    @router.get("/requests/{request_id}")
    @_people
    async def request_page(request: Request, me: Identity, request_id: str) -> Response:
        return await _show(request, me, await _readable(_keycard(request), me, request_id))

    @router.get("/requests/{request_id}/state.json")
    @_people
    async def request_stamp(request: Request, me: Identity, request_id: str) -> Response:
        view = await _readable(_keycard(request), me, request_id)
        return JSONResponse({"stamp": _stamp([view])})

    @router.post("/requests/{request_id}/{verb}")
    @_people
    async def decide(request: Request, me: Identity, request_id: str, verb: str) -> Response:
        keycard = _keycard(request)
        form = await _form(request)
        view = await _readable(keycard, me, request_id)
        actor = _actor(me)
        calls: dict[str, Callable[[], Awaitable[RequestView]]] = {
            "approve": lambda: keycard.approve(view.id, actor, form.get("comment", "")),
            "deny": lambda: keycard.deny(view.id, actor, form.get("comment", "")),
            "cancel": lambda: keycard.cancel(view.id, actor, form.get("comment", "")),
            "revoke": lambda: keycard.revoke(view.id, actor, form.get("comment", "")),
            "extend": lambda: keycard.extend(
                view.id, actor, form.get("duration", ""), form.get("comment", "")
            ),
            "break-glass": lambda: keycard.break_glass(
                view.id, actor, form.get("justification", "")
            ),
            "review": lambda: keycard.review(
                view.id,
                actor,
                "unjustified" if form.get("finding") == "unjustified" else "justified",
                form.get("comment", ""),
            ),
        }
        if verb not in calls:
            raise _Refused(HTTPStatus.NOT_FOUND, f"there is no decision called {verb!r}")
        try:
            await calls[verb]()
        except PolicyError as refusal:
            return await _show(
                request, me, await keycard.get(view.id), _status(refusal), refusal.message
            )
        log.info("console.decision", verb=verb, request_id=view.id, caller=me.email)
        return _redirect(f"/requests/{view.id}")

    @router.get("/access")
    @_people
    async def access_now(request: Request, me: Identity) -> Response:
        if me.role is not Role.ADMIN:
            raise _Refused(HTTPStatus.FORBIDDEN, "who has access now is for admins")
        wanted = {k: request.query_params.get(k, "").strip() for k in ("flow", "target", "person")}
        active = await _active(_keycard(request))
        views = [v for v in active.views if _matches(v, **wanted)]
        flows = sorted({f.name for f in _keycard(request).config.flows})
        return _page(
            request,
            "access.html",
            views=views,
            silent=active.silent,
            wanted=wanted,
            flows=flows,
        )

    @router.get("/access.json")
    @_people
    async def access_stamp(request: Request, me: Identity) -> Response:
        if me.role is not Role.ADMIN:
            return JSONResponse({"detail": "for admins"}, status_code=HTTPStatus.FORBIDDEN)
        active = await _active(_keycard(request))
        return JSONResponse({"stamp": _stamp([*active.views, *active.silent])})

    return router


def _sso_client(request: Request):
    """The OIDC client, made once per app (it caches the provider's metadata and keys)."""
    sso = _options(request).sso
    if sso is None:
        return None
    state = request.app.state
    if getattr(state, "sso_client", None) is None:
        state.sso_client = sso.client()
    return state.sso_client


def static_files() -> StaticFiles:
    return StaticFiles(directory=HERE / "static")


# --- helpers ------------------------------------------------------------------------------------


def _status(refusal: PolicyError) -> int:
    if isinstance(refusal, RequestNotFound):
        return HTTPStatus.NOT_FOUND
    return STATUS_OF_REFUSAL.get(refusal.kind, HTTPStatus.CONFLICT)


async def _readable(keycard: KeycardClient, me: Identity, request_id: str) -> RequestView:
    try:
        view = await asyncio.wait_for(keycard.get(request_id), PAGE_QUERY_TIMEOUT)
    except RequestNotFound as missing:
        raise _Refused(HTTPStatus.NOT_FOUND, missing.message) from None
    except TimeoutError:
        raise _Refused(
            HTTPStatus.SERVICE_UNAVAILABLE,
            f"request {request_id} is not answering: is a Keycard worker running? Try again soon",
        ) from None
    if not policy.may_read(view, _actor(me)):  # as for an id that does not exist
        raise _Refused(HTTPStatus.NOT_FOUND, RequestNotFound(request_id).message)
    return view


async def _show(
    request: Request,
    me: Identity,
    view: RequestView,
    status: int = HTTPStatus.OK,
    error: str | None = None,
) -> Response:
    keycard = _keycard(request)
    events = await history_events(keycard.temporal, view.id, None)
    flow = next((f for f in keycard.config.flows if f.name == view.flow), None)
    # The flow's durations that still fit under its maximum, as Slack offers them.
    extensions = [format_duration(d) for d in extension_choices(view, flow)]
    return _page(
        request,
        "request.html",
        status,
        view=view,
        events=events,
        error=error,
        may=_may(view, me, flow, bool(extensions)),
        extensions=extensions,
        temporal_url=_temporal_url(_options(request), keycard, view.id),
    )


def _temporal_url(options: ConsoleOptions, keycard: KeycardClient, request_id: str) -> str | None:
    if not options.temporal_ui_url:
        return None
    namespace = quote(keycard.temporal.namespace, safe="")
    return (
        f"{options.temporal_ui_url}/namespaces/{namespace}/workflows/{quote(request_id, safe='')}"
    )


def _may(view: RequestView, me: Identity, flow: Any, extendable: bool) -> dict[str, bool]:
    """Which buttons to show; the workflow still decides, and says why it refuses."""
    state = view.state
    mine = view.requester.email.lower() == me.email.lower()
    decider = me.role is Role.ADMIN or me.email.lower() in view.approvers
    return {
        "approve": state is RequestState.PENDING and decider and not mine,
        "deny": state is RequestState.PENDING and decider,
        "cancel": state is RequestState.PENDING and (mine or me.role is Role.ADMIN),
        "revoke": state is RequestState.ACTIVE and (mine or decider),
        "extend": extendable and (mine or decider),
        "break_glass": state is RequestState.PENDING and mine and bool(flow and flow.break_glass),
        "review": view.break_glass and view.review is None and decider and not mine,
    }


async def _home_lists(keycard: KeycardClient, me: Identity) -> tuple[list, list]:
    actor = _actor(me)
    mine_page, pending_page = await asyncio.gather(
        keycard.list(requester=me.email, limit=LIST_LIMIT, reader=actor, details=False),
        keycard.list(state=RequestState.PENDING, limit=LIST_LIMIT, reader=actor, details=False),
    )
    mine = me.email.lower()
    to_decide = [r for r in pending_page.requests if not r.requester or r.requester.email != mine]
    return mine_page.requests, to_decide


@dataclass(frozen=True)
class ActiveNow:
    """Access now: the requests that answered, soonest ending first, and those that did not
    (their worker is down or busy: listed from visibility, so none goes unseen)."""

    views: list[RequestView]
    silent: list[RequestSummary]


async def _active(keycard: KeycardClient) -> ActiveNow:
    page = await keycard.list(state=RequestState.ACTIVE, limit=ACCESS_NOW_LIMIT, details=False)

    async def read(summary: RequestSummary) -> RequestView | RequestSummary:
        try:
            return await asyncio.wait_for(keycard.get(summary.id), ACCESS_QUERY_TIMEOUT)
        except (TimeoutError, PolicyError, RPCError):
            return summary

    answers = await asyncio.gather(*(read(r) for r in page.requests))
    views = [a for a in answers if isinstance(a, RequestView)]
    return ActiveNow(
        views=sorted(views, key=lambda v: v.expires_at or datetime.max.replace(tzinfo=UTC)),
        silent=[a for a in answers if isinstance(a, RequestSummary)],
    )


def _matches(view: RequestView, flow: str, target: str, person: str) -> bool:
    return (
        (not flow or view.flow == flow)
        and (not target or target.lower() in _target_text(view))
        and (not person or person.lower() in view.requester.email)
    )


def _target_text(view: RequestView) -> str:
    """Every target a request names, by name and label, for the access page's filter."""
    names = [view.target, view.target_label] + [f"{t.name} {t.label}" for t in view.targets]
    return " ".join(names).lower()


def _requestable(keycard: KeycardClient, me: Identity) -> list[Any]:
    config = keycard.config
    return [f for f in config.flows if policy.may_request(f, me.email, config.approver_groups)]


def _stamp(items: list[Any]) -> str:
    """Changes whenever what a page shows of these requests changes."""
    text = "|".join(item.model_dump_json() for item in items)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _start_at(value: str) -> datetime | None:
    """The form's optional start (a datetime-local input, read as UTC)."""
    if not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise PolicyError(
            "InvalidStart",
            f"start time {value!r} is not a date and time; pick one, or leave it empty",
            policy.Refusal.INVALID,
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
