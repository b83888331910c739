"""The HTTP API: ask for, decide on and read access requests over JSON, with bearer tokens.

Every route goes through KeycardClient, so the core's rules (who may approve, self-approval, N
distinct approvers, legal states) hold here unchanged. This module only turns a token into the
acting person and a refusal into an RFC 9457 problem a person can read.

The bodies it takes and gives are in bodies.py. starter/run/http.py puts these routes in the one
HTTP app, with the console and the codec server; its `routers=` adds more, such as the Slack app's
`POST /slack/events`, which Slack signs itself and so carries no bearer token:

    slack = APIRouter()

    @slack.post("/slack/events", include_in_schema=False)
    async def slack_events(request: Request):
        return await bolt_handler.handle(request)

    app = create_app(keycard, routers=[slack])

Longer than most modules: the routes of /v1 follow one another here in the order the OpenAPI
document lists them, so a reviewer sees every door into the API, and the checks each makes, in
one read.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import timedelta
from http import HTTPStatus
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.service import RPCError, RPCStatusCode

from keycard import policy
from keycard import temporal as names
from keycard.config import EMAIL_PATTERN, NAME_PATTERN, KeycardConfig
from keycard.durations import format_duration
from keycard.models import (
    Actor,
    Requester,
    RequestState,
    RequestView,
    Role,
)
from keycard.policy import DecisionRefused
from starter.api.auth import Identity, authenticate
from starter.api.bodies import (
    BreakGlassBody,
    DecisionBody,
    ExtendBody,
    FlowInfo,
    FlowList,
    Health,
    NewRequest,
    ReviewBody,
    TargetInfo,
    WaitFor,
)
from starter.api.problems import (
    ApiProblem,
    declare_problem_media_type,
    problem_responses,
)
from starter.client import KeycardClient, RequestNotFound, RequestRejected
from starter.pages import RequestPage

log = structlog.get_logger(__name__)
T = TypeVar("T")

# How long `?wait=active` holds a response, and how long a revoke waits for access to be gone.
WAIT_TIMEOUT = timedelta(seconds=60)
REVOKE_WAIT = timedelta(seconds=10)
# A call that needs a worker (every one but list) waits this long for one: no call hangs forever
# because the workers are down.
CALL_TIMEOUT = timedelta(seconds=30)
READY_TIMEOUT = timedelta(seconds=5)


@dataclass(frozen=True)
class ApiOptions:
    wait_timeout: timedelta = WAIT_TIMEOUT
    revoke_wait: timedelta = REVOKE_WAIT
    call_timeout: timedelta = CALL_TIMEOUT
    # Browsers on these origins (the Temporal UI's) may call /codec/* (starter/api/codec_server.py).
    codec_cors_origins: tuple[str, ...] = ()


# --- dependencies --------------------------------------------------------------------------------


def _keycard(request: Request) -> KeycardClient:
    return request.app.state.keycard


def _options(request: Request) -> ApiOptions:
    return request.app.state.options


Caller = Annotated[Identity, Depends(authenticate)]
Keycard = Annotated[KeycardClient, Depends(_keycard)]
Options = Annotated[ApiOptions, Depends(_options)]
RequestId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="the request id, e.g. req-abc123",
    ),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[!-~]+$",
        description="a retry with the same key from the same caller gets the first call's outcome",
    ),
]
Wait = Annotated[
    WaitFor | None,
    Query(description="`active`: answer once access is active or the request has ended (60 s)"),
]


# --- requests ------------------------------------------------------------------------------------

v1 = APIRouter(prefix="/v1")


@v1.post(
    "/requests",
    status_code=HTTPStatus.CREATED,
    response_model=RequestView,
    responses=problem_responses(401, 403, 422, 503, 504),
    summary="Ask for access",
    tags=["requests"],
)
async def create_request(
    body: NewRequest,
    caller: Caller,
    keycard: Keycard,
    options: Options,
    response: Response,
    wait: Wait = None,
    idempotency_key: IdempotencyKey = None,
) -> RequestView:
    """Start a request and answer once it is checked against AWS: PENDING until approved, or
    already decided by a rule. With `wait=active`, answer once access is ACTIVE (or the request
    has ended), for scripts that need access before their next command; after 60 s the answer is
    the request as it is then, so look at `state`."""
    requester, submitted_by = _requester(body, caller)
    ask = body.ask(requester)
    request_id = None
    if idempotency_key is not None:
        # The task queue is part of the seed: two Keycards sharing a Temporal namespace (each on
        # its own queue) must not answer each other's keys with each other's requests.
        seed = f"{keycard.task_queue}\n{_scoped(caller, idempotency_key)}"
        request_id = names.request_id_from(seed.encode())
    # An invalid body is refused here, before anything runs.
    planned = keycard.prepare(ask, submitted_by=submitted_by, request_id=request_id, via="api")
    view: RequestView | None = None
    if idempotency_key is not None:
        view = await within(options.call_timeout, _find(keycard, planned.request_id))
        if view is not None:
            _check_replay(view, planned, idempotency_key)
            response.headers["Idempotent-Replayed"] = "true"
    if view is None:
        view = await within(options.call_timeout, keycard.start(planned))
        log.info("api.request.created", request_id=view.id, caller=caller.email)
    if wait is WaitFor.ACTIVE:
        view = await _wait(keycard, view.id, options)
    response.headers["Location"] = f"/v1/requests/{view.id}"
    return view


async def within(limit: timedelta, call: Awaitable[T]) -> T:
    """`call`, or a 504 problem if Temporal and the workers have not answered within `limit`."""
    try:
        async with asyncio.timeout(limit.total_seconds()):
            return await call
    except (TimeoutError, WorkflowUpdateRPCTimeoutOrCancelledError):
        raise ApiProblem(
            HTTPStatus.GATEWAY_TIMEOUT,
            f"Keycard's workers did not answer within {limit.total_seconds():g} s, so the outcome is "
            "not known: look the request up, or retry with the same Idempotency-Key",
            "WorkersNotAnswering",
        ) from None


async def _wait(keycard: KeycardClient, request_id: str, options: ApiOptions) -> RequestView:
    limit = options.wait_timeout + options.call_timeout
    return await within(limit, keycard.wait(request_id, timeout=options.wait_timeout))


def _scoped(caller: Identity, key: str) -> str:
    """An idempotency key belongs to its caller: the same key from two callers is two keys."""
    return f"{caller.email}\n{key}"


def _update_id(caller: Identity, verb: str, key: str | None) -> str | None:
    if key is None:
        return None
    return "api-" + hashlib.sha256(_scoped(caller, f"{verb}\n{key}").encode()).hexdigest()[:32]


def _requester(body: NewRequest, caller: Identity) -> tuple[Requester, Actor | None]:
    """Who the access is for, and the service that asked on their behalf, if one did."""
    if caller.role is Role.SERVICE:
        if not body.requester:
            raise ApiProblem(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"{caller.email} is a service token: set `requester` to the email of the person "
                "the access is for",
                "RequesterRequired",
            )
        email = body.requester.strip().lower()
        if not EMAIL_PATTERN.match(email):
            raise ApiProblem(
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"requester {body.requester!r} is not an email address",
                "InvalidRequester",
            )
        return Requester(email=email), caller.actor()
    if body.requester and body.requester.strip().lower() != caller.email:
        raise ApiProblem(
            HTTPStatus.FORBIDDEN,
            f"{caller.email} may only request access for themselves; "
            "only service tokens may name another requester",
            "NotAService",
        )
    return Requester(email=caller.email), None


async def _find(keycard: KeycardClient, request_id: str) -> RequestView | None:
    try:
        return await keycard.get(request_id)
    except RequestNotFound:
        return None


def _check_replay(view: RequestView, planned: Any, key: str) -> None:
    """A repeated Idempotency-Key gets its first answer, as long as it asks for the same thing."""
    same = (
        view.flow == planned.flow.name
        and view.target == planned.target.name
        and view.requester.email == planned.requester.email
        and view.duration == planned.duration
        and view.reason == planned.reason
        and view.fields == planned.fields
    )
    if not same:
        raise ApiProblem(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"Idempotency-Key {key!r} was already used for request {view.id}, which asks for "
            "something else; use a new key for a new request",
            "IdempotencyKeyReused",
        )
    if view.state is RequestState.FAILED and view.decided_at is None:
        # The first attempt was refused by AWS's checks; the replay is refused the same way.
        raise RequestRejected("RequestFailed", view.end_reason or "the request failed its checks")


# Visibility queries are text: no control characters (a NUL ends the query early) or spaces.
LISTED_EMAIL = r"^[^\s\x00-\x1f\x7f]+@[^\s\x00-\x1f\x7f]+$"


@v1.get(
    "/requests",
    response_model=RequestPage,
    responses=problem_responses(401, 422, 503, 504),
    summary="List requests, newest first",
    tags=["requests"],
)
async def list_requests(
    caller: Caller,
    keycard: Keycard,
    options: Options,
    state: Annotated[RequestState | None, Query(description="only requests in this state")] = None,
    flow: Annotated[str | None, Query(pattern=NAME_PATTERN, description="a flow's name")] = None,
    target: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="a target's name")
    ] = None,
    requester: Annotated[
        str | None, Query(max_length=320, pattern=LISTED_EMAIL, description="an email")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    page_token: Annotated[
        str | None, Query(max_length=4096, description="`next_page_token` of the previous page")
    ] = None,
) -> RequestPage:
    """Requests from Temporal visibility, filtered on Keycard's search attributes. Pass the
    answer's `next_page_token` as `page_token` (with the same filters) for the next page."""
    filters = {"state": state, "flow": flow, "target": target, "requester": requester}
    try:
        token = _unseal(page_token, filters) if page_token else None
        page = await within(
            options.call_timeout,
            keycard.list(**filters, limit=limit, page_token=token, reader=caller.actor()),
        )
    except ValueError:
        if page_token:
            raise _bad_page_token() from None
        raise
    except RPCError as err:
        if err.status is RPCStatusCode.INVALID_ARGUMENT and page_token:
            raise _bad_page_token() from None
        raise
    page.next_page_token = _seal(page.next_page_token, filters)
    return page


# Temporal's page tokens go out with a check bound to the filters, so a mangled token, or one used
# with other filters, is refused here at once: Temporal would retry it for seconds, then fail.
_PAGE_CHECK_BYTES = 8


def _page_check(raw: bytes, filters: dict[str, Any]) -> bytes:
    bound = json.dumps(filters, sort_keys=True, default=str).encode()
    return hashlib.sha256(b"keycard-page\0" + bound + b"\0" + raw).digest()[:_PAGE_CHECK_BYTES]


def _seal(token: str | None, filters: dict[str, Any]) -> str | None:
    if token is None:
        return None
    raw = base64.urlsafe_b64decode(token)
    return base64.urlsafe_b64encode(raw + _page_check(raw, filters)).decode().rstrip("=")


def _unseal(sealed: str, filters: dict[str, Any]) -> str:
    try:
        data = base64.urlsafe_b64decode(sealed + "=" * (-len(sealed) % 4))
    except ValueError:
        raise _bad_page_token() from None
    raw, check = data[:-_PAGE_CHECK_BYTES], data[-_PAGE_CHECK_BYTES:]
    if not raw or not hmac.compare_digest(check, _page_check(raw, filters)):
        raise _bad_page_token()
    return base64.urlsafe_b64encode(raw).decode()


def _bad_page_token() -> ApiProblem:
    return ApiProblem(
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "page_token is not one this API gave out for these filters: pass `next_page_token` from "
        "the previous page, with the same filters",
        "InvalidPageToken",
    )


@v1.get(
    "/requests/{request_id}",
    response_model=RequestView,
    responses=problem_responses(401, 404, 422, 503, 504),
    summary="Show a request",
    tags=["requests"],
)
async def get_request(
    request_id: RequestId, caller: Caller, keycard: Keycard, options: Options, wait: Wait = None
) -> RequestView:
    """The request as its workflow sees it now, if you may read it (your own, one you may decide
    on, or any as an admin; a service token, those it asked for). `wait=active` holds the answer
    as on create."""
    view = await within(options.call_timeout, keycard.get(request_id))
    _readable(view, caller)
    if wait is WaitFor.ACTIVE:
        view = await _wait(keycard, request_id, options)
    return view


def _readable(view: RequestView, caller: Identity) -> None:
    """A request the caller may not read is answered exactly like one that does not exist."""
    if not policy.may_read(view, caller.actor()):
        raise RequestNotFound(view.id)


# --- decisions -----------------------------------------------------------------------------------


async def _decided(
    keycard: KeycardClient,
    caller: Identity,
    options: ApiOptions,
    request_id: str,
    decision: Awaitable[RequestView],
) -> RequestView:
    """The decision's answer, within the call timeout; but a refusal to a caller who may not read
    the request is the answer to an unknown id (404), so a refusal says nothing about a request
    one cannot see. The attempt is still in the request's audit trail."""
    try:
        return await within(options.call_timeout, decision)
    except DecisionRefused:
        _readable(await keycard.get(request_id), caller)
        raise


def _decision_route(verb: str, summary: str, description: str) -> None:
    async def decide(
        request_id: RequestId,
        caller: Caller,
        keycard: Keycard,
        options: Options,
        body: DecisionBody | None = None,
        idempotency_key: IdempotencyKey = None,
    ) -> RequestView:
        comment = body.comment if body else ""
        # Temporal deduplicates updates by id: a retried decision is applied once, answered twice.
        update_id = _update_id(caller, verb, idempotency_key)
        decision = getattr(keycard, verb)
        view = await _decided(
            keycard, caller, options, request_id,
            decision(request_id, caller.actor(), comment, update_id=update_id),
        )  # fmt: skip
        log.info(f"api.request.{verb}", request_id=request_id, caller=caller.email)
        if verb == "revoke":
            # Answer once access is gone (ENDED), so the caller need not ask again.
            view = await within(
                options.revoke_wait + options.call_timeout,
                keycard.wait(request_id, until=(), timeout=options.revoke_wait),
            )
        return view

    decide.__name__ = f"{verb}_request"
    v1.add_api_route(
        f"/requests/{{request_id}}/{verb}",
        decide,
        methods=["POST"],
        response_model=RequestView,
        responses=problem_responses(401, 403, 404, 409, 422, 503, 504),
        summary=summary,
        description=description,
        tags=["decisions"],
    )


_decision_route(
    "approve",
    "Approve a pending request",
    "As one of the flow's approvers, or as an admin (approver of last resort, audited as such). "
    "Access is granted once the flow's number of distinct approvals is reached.",
)
_decision_route("deny", "Deny a pending request", "As an approver or an admin.")
_decision_route(
    "revoke",
    "End active access now",
    "As the requester (when the flow allows it), an approver or an admin. Answers once the access "
    "is removed (ENDED), or after 10 s with the request still REVOKING if the cloud is slow.",
)
_decision_route(
    "cancel", "Cancel a pending request", "As the requester, the service that asked, or an admin."
)


@v1.post(
    "/requests/{request_id}/extend",
    response_model=RequestView,
    responses=problem_responses(401, 403, 404, 409, 422, 503, 504),
    summary="Keep active access for longer",
    tags=["decisions"],
)
async def extend_request(
    request_id: RequestId,
    body: ExtendBody,
    caller: Caller,
    keycard: Keycard,
    options: Options,
    idempotency_key: IdempotencyKey = None,
) -> RequestView:
    """Adds `duration` to the expiry, within the flow's maximum (extensions included)."""
    update_id = _update_id(caller, "extend", idempotency_key)
    view = await _decided(
        keycard, caller, options, request_id,
        keycard.extend(request_id, caller.actor(), body.duration, body.comment, update_id=update_id),
    )  # fmt: skip
    log.info("api.request.extend", request_id=request_id, caller=caller.email)
    return view


@v1.post(
    "/requests/{request_id}/break-glass",
    response_model=RequestView,
    responses=problem_responses(401, 403, 404, 409, 422, 503, 504),
    summary="Approve your own request in an emergency",
    tags=["decisions"],
)
async def break_glass_request(
    request_id: RequestId,
    body: BreakGlassBody,
    caller: Caller,
    keycard: Keycard,
    options: Options,
    idempotency_key: IdempotencyKey = None,
) -> RequestView:
    """As the requester, on flows with `break_glass`, with a written justification. Access starts
    at once; the request is marked break-glass, announced and reviewed afterwards."""
    update_id = _update_id(caller, "break-glass", idempotency_key)
    view = await _decided(
        keycard, caller, options, request_id,
        keycard.break_glass(request_id, caller.actor(), body.justification, update_id=update_id),
    )  # fmt: skip
    log.info("api.request.break_glass", request_id=request_id, caller=caller.email)
    return view


@v1.post(
    "/requests/{request_id}/review",
    response_model=RequestView,
    responses=problem_responses(401, 403, 404, 409, 422, 503, 504),
    summary="Review a break-glass use, afterwards",
    tags=["decisions"],
)
async def review_request(
    request_id: RequestId,
    caller: Caller,
    keycard: Keycard,
    options: Options,
    body: ReviewBody | None = None,
    idempotency_key: IdempotencyKey = None,
) -> RequestView:
    """As an approver of the flow (or an admin), not the requester: was the emergency real and the
    access fit for it? Recorded as `break_glass.reviewed`; a request waits for it after its access
    ends, until the flow's `break_glass_review_within` (7 days by default)."""
    body = body or ReviewBody()
    update_id = _update_id(caller, "review", idempotency_key)
    view = await _decided(
        keycard, caller, options, request_id,
        keycard.review(
            request_id, caller.actor(), body.finding, body.comment, update_id=update_id
        ),
    )  # fmt: skip
    log.info("api.request.review", request_id=request_id, caller=caller.email)
    return view


# --- sign-in -------------------------------------------------------------------------------------


class SignIn(BaseModel):
    """How `keycard login` signs a person in: OpenID Connect's device flow at this provider."""

    issuer: str
    client_id: str = Field(description="the public client for the device flow")
    scopes: str


@v1.get(
    "/auth",
    response_model=SignIn,
    responses=problem_responses(404),
    summary="How to sign in with single sign-on (for `keycard login`)",
    tags=["sign-in"],
)
async def sign_in_settings(request: Request) -> SignIn:
    sso = request.app.state.console.sso
    if sso is None:
        raise ApiProblem(
            HTTPStatus.NOT_FOUND,
            "this Keycard has no single sign-on; ask an admin for an API token "
            "(`keycard token create`) and set KEYCARD_TOKEN",
            "NoSingleSignOn",
        )
    return SignIn(
        issuer=sso.issuer, client_id=sso.cli_client_id or sso.client_id, scopes=sso.scopes
    )


# --- flows ---------------------------------------------------------------------------------------


@v1.get(
    "/flows",
    response_model=FlowList,
    responses=problem_responses(401),
    summary="The flows you may request",
    tags=["flows"],
)
async def list_flows(caller: Caller, keycard: Keycard) -> FlowList:
    """With their targets, durations and fields. A service token sees every flow."""
    config = keycard.config
    flows = [
        _flow_info(flow, config)
        for flow in config.flows
        if caller.role is Role.SERVICE
        or policy.may_request(flow, caller.email, config.approver_groups)
    ]
    return FlowList(flows=flows)


def _flow_info(flow: Any, config: KeycardConfig) -> FlowInfo:
    return FlowInfo(
        name=flow.name,
        label=flow.display,
        description=flow.description,
        strategy=flow.strategy,
        targets=[
            TargetInfo(name=t.name, label=t.display, settings=policy.target_settings(t))
            for t in flow.targets
        ],
        durations=[format_duration(d) for d in flow.durations],
        max_duration=format_duration(flow.maximum),
        max_start_delay=format_duration(flow.max_start_delay),
        reason_required=flow.reason_required,
        reason=flow.reason,
        fields=list(flow.fields),
        approvers=policy.approvers_of(flow, config.approver_groups),
        approvals_required=flow.approvals_needed,
        approval_steps=policy.steps_of(flow, config.approver_groups),
        approval_timeout=format_duration(flow.approval_timeout),
        allow_self_approval=flow.allow_self_approval,
        allow_early_revoke=flow.allow_early_revoke,
        allow_extension=flow.allow_extension,
    )


# --- health --------------------------------------------------------------------------------------

health = APIRouter(tags=["health"])


@health.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health(status="ok")


@health.get(
    "/readyz",
    response_model=Health,
    responses=problem_responses(503),
    summary="Temporal is reachable",
)
async def readyz(keycard: Keycard) -> Health:
    try:
        serving = await keycard.temporal.service_client.check_health(timeout=READY_TIMEOUT)
    except Exception as err:  # any failure to reach Temporal means not ready
        log.warning("api.not_ready", error=str(err))
        serving = False
    if not serving:
        raise ApiProblem(
            HTTPStatus.SERVICE_UNAVAILABLE, "Temporal is not reachable", "TemporalUnavailable"
        )
    return Health(status="ready")


# --- the app -------------------------------------------------------------------------------------


async def access_log(request: Request, call_next: Any) -> Response:
    """One JSON line per call: method, path, status, time and the caller's email — never the
    Authorization header, the query string or the body."""
    started = time.perf_counter()
    response = await call_next(request)
    identity = getattr(request.state, "identity", None)
    log.info(
        "api.http",
        method=request.method,
        path=request.url.path,
        status=response.status_code,
        ms=round((time.perf_counter() - started) * 1000, 1),
        caller=identity.email if identity else None,
    )
    return response


def openapi_schema(app: FastAPI) -> dict[str, Any]:
    """The generated document, with errors declared as application/problem+json."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        app.openapi_schema = jsonable_encoder(declare_problem_media_type(schema))
    return app.openapi_schema


__all__ = ["ApiOptions", "access_log", "health", "openapi_schema", "v1"]
