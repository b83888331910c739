"""Errors as RFC 9457 problem details (application/problem+json), each with a sentence a person
can act on: refusals of the core's rules, invalid input, unknown routes, an unreachable Temporal."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError, RPCStatusCode

from keycard.config import NAME_PATTERN
from keycard.policy import PolicyError, Refusal
from starter.client import RequestNotFound

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"

STATUS_OF_REFUSAL = {
    Refusal.INVALID: HTTPStatus.UNPROCESSABLE_ENTITY,
    Refusal.FORBIDDEN: HTTPStatus.FORBIDDEN,
    Refusal.CONFLICT: HTTPStatus.CONFLICT,
}


class Problem(BaseModel):
    """An RFC 9457 problem: `detail` says what went wrong and what to do, for a person."""

    type: str = Field(description="identifies the kind of problem; `code` is its short name")
    title: str
    status: int
    detail: str
    instance: str | None = None
    code: str = Field(description="stable; match on this, not on the wording")
    errors: list[dict[str, str]] | None = Field(
        default=None, description="invalid input: one entry per problem, with its location"
    )


class ApiProblem(Exception):
    """Ends a request with a problem response; raised by routes and dependencies."""

    def __init__(
        self,
        status: HTTPStatus,
        detail: str,
        code: str,
        *,
        headers: dict[str, str] | None = None,
        errors: list[dict[str, str]] | None = None,
    ):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.headers = headers
        self.errors = errors


def problem_response(
    request: Request,
    status: HTTPStatus,
    detail: str,
    code: str,
    *,
    headers: dict[str, str] | None = None,
    errors: list[dict[str, str]] | None = None,
) -> JSONResponse:
    problem = Problem(
        type=f"urn:keycard:problem:{code}",
        title=status.phrase,
        status=status.value,
        detail=detail,
        instance=request.url.path,
        code=code,
        errors=errors,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status.value,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


MAX_BODY_BYTES = 256 * 1024
"""No call needs more (a request's strings are capped far below); a bigger body is refused before
it is read, let alone handed to Temporal."""


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets a 413 problem that names the limit, whether
    the client declared its length or streamed it."""

    def __init__(self, app: Any, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send, int(declared))
            return
        if declared:
            await self.app(scope, receive, send)
            return
        # Streamed without a length: read it here, at most `limit` bytes, then hand it on.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunks.append(message)
            size += len(message.get("body", b""))
            more = message.get("more_body", False)
            if size > self.limit:
                await self._refuse(scope, receive, send, size, at_least=True)
                return
        await self.app(scope, _replay(chunks, receive), send)

    async def _refuse(
        self, scope: dict[str, Any], receive: Any, send: Any, size: int, at_least: bool = False
    ) -> None:
        amount = f"{'more than ' if at_least else ''}{size:,} bytes"
        response = problem_response(
            Request(scope),
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the request body is {amount}; Keycard accepts at most {self.limit // 1024} KiB "
            "(reasons, comments and field values are capped far below that)",
            "BodyTooLarge",
        )
        await response(scope, receive, send)


def _replay(messages: list[dict[str, Any]], then: Any) -> Any:
    """A `receive` that gives the messages already read, then the client's own: a response that
    listens for the client going away (files, streams) must hear it only when it really does,
    not as soon as the body has been read."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer with."""
    return {
        status: {"model": Problem, "description": HTTPStatus(status).phrase} for status in statuses
    }


def add_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiProblem)
    async def on_problem(request: Request, exc: ApiProblem) -> JSONResponse:
        return problem_response(
            request, exc.status, exc.detail, exc.code, headers=exc.headers, errors=exc.errors
        )

    @app.exception_handler(PolicyError)
    async def on_refusal(request: Request, exc: PolicyError) -> JSONResponse:
        if isinstance(exc, RequestNotFound):
            status = HTTPStatus.NOT_FOUND
        else:
            status = STATUS_OF_REFUSAL.get(exc.kind, HTTPStatus.UNPROCESSABLE_ENTITY)
        return problem_response(request, status, exc.message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [_describe(error) for error in exc.errors()]
        detail = "; ".join(f"{e['location']}: {e['message']}" for e in errors)
        return problem_response(
            request, HTTPStatus.UNPROCESSABLE_ENTITY, detail, "InvalidInput", errors=errors
        )

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status = HTTPStatus(exc.status_code)
        if status is HTTPStatus.BAD_REQUEST:
            # FastAPI's answer to a body it cannot decode at all (not UTF-8, say): an invalid
            # body, like any other, so the same 422 as for malformed JSON.
            error = {"location": "body", "message": "is not valid JSON (it cannot be decoded)"}
            return problem_response(
                request,
                HTTPStatus.UNPROCESSABLE_ENTITY,
                f"{error['location']}: {error['message']}",
                "InvalidInput",
                errors=[error],
            )
        detail = {
            HTTPStatus.NOT_FOUND: f"there is nothing at {request.url.path}; see /docs",
            HTTPStatus.METHOD_NOT_ALLOWED: (
                f"{request.method} is not allowed on {request.url.path}; see /docs"
            ),
        }.get(status, str(exc.detail))
        return problem_response(
            request, status, detail, status.phrase.replace(" ", ""), headers=exc.headers
        )

    @app.exception_handler(RPCError)
    async def on_temporal(request: Request, exc: RPCError) -> JSONResponse:
        log.error("api.temporal_error", path=request.url.path, status=exc.status, error=str(exc))
        if exc.status in (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED):
            return problem_response(
                request,
                HTTPStatus.SERVICE_UNAVAILABLE,
                "Temporal is not reachable right now; nothing was changed, try again shortly",
                "TemporalUnavailable",
            )
        return problem_response(
            request,
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "Temporal refused the call; the error is logged for the operators",
            "TemporalError",
        )

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("api.unhandled", path=request.url.path)
        return problem_response(
            request,
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "Keycard failed unexpectedly; the error is logged for the operators",
            "InternalError",
        )


def _describe(error: dict[str, Any]) -> dict[str, str]:
    """One FastAPI/pydantic validation error as {location, message} a person reads."""
    where, *path = error.get("loc", ()) or ("body",)
    dotted = ".".join(str(p) for p in path)
    kind = error.get("type", "")
    message = str(error.get("msg", "is not valid")).removeprefix("Value error, ")
    if kind == "json_invalid":
        reason = (error.get("ctx") or {}).get("error", "")
        return {"location": "body", "message": f"is not valid JSON ({reason})".replace(" ()", "")}
    if kind == "missing":
        message = "is required"
    elif kind == "extra_forbidden":
        message = "is not a known field (check the spelling)"
    elif kind == "string_pattern_mismatch":
        if (error.get("ctx") or {}).get("pattern") == NAME_PATTERN:
            message = "must be lower-case letters, digits, - or _, e.g. prod-admin"
        else:
            message = "has characters that are not allowed here"
    location = {
        "body": dotted or "body",
        "query": f"query parameter {dotted}",
        "header": f"header {dotted}",
        "path": f"path {dotted}",
    }.get(str(where), dotted or str(where))
    if location == "body" and kind == "missing":
        message = "is required: send a JSON object (Content-Type: application/json)"
    return {"location": location, "message": message}


def declare_problem_media_type(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare every 4xx/5xx answer of an OpenAPI document as application/problem+json."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            for status, answer in operation.get("responses", {}).items():
                content = answer.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content[PROBLEM_JSON] = content.pop("application/json")
    return schema
