"""A Temporal codec server, so operators can read encrypted payloads in the Temporal UI and CLI.

With KEYCARD_PAYLOAD_KEY set (keycard/codec.py), the API also answers `POST /codec/decode` and
`POST /codec/encode` in the protocol the Temporal UI and `temporal` CLI speak: a JSON `Payloads`
message in, the same shape out. Decoding shows everything a request holds, so only an admin's
Keycard token may call them:

    temporal workflow show -w req-... \\
        --codec-endpoint http://localhost:8000/codec --codec-auth "Bearer $ADMIN_TOKEN"

A browser calling from the Temporal UI needs the UI's origin in KEYCARD_CODEC_CORS_ORIGINS, and
the admin token sent as its `Authorization` header (docs/deployment.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from google.protobuf.json_format import MessageToJson, Parse, ParseError
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from temporalio.api.common.v1 import Payloads

from keycard.codec import EncryptionCodec, UnknownPayloadKey
from keycard.models import Role
from starter.api.auth import Identity, authenticate
from starter.api.problems import ApiProblem, problem_responses

CORS_ENV = "KEYCARD_CODEC_CORS_ORIGINS"
CORS_HEADERS = ("Authorization", "Content-Type", "X-Namespace")


async def _admin(caller: Annotated[Identity, Depends(authenticate)]) -> Identity:
    if caller.role is not Role.ADMIN:
        raise ApiProblem(
            HTTPStatus.FORBIDDEN,
            "decoding payloads shows every request in full, so it needs an admin's token",
            "Forbidden",
        )
    return caller


Admin = Annotated[Identity, Depends(_admin)]


def codec_router(codec: EncryptionCodec) -> APIRouter:
    router = APIRouter(prefix="/codec", tags=["codec"])
    responses = problem_responses(400, 401, 403, 422)

    @router.post("/decode", summary="Decrypt payloads (Temporal codec server)", responses=responses)
    async def decode_payloads(request: Request, caller: Admin) -> Response:
        payloads = _payloads(await request.body())
        try:
            decoded = await codec.decode(payloads.payloads)
        except UnknownPayloadKey as err:
            raise ApiProblem(
                HTTPStatus.UNPROCESSABLE_ENTITY, str(err), "UnknownPayloadKey"
            ) from None
        return _answer(decoded)

    @router.post("/encode", summary="Encrypt payloads (Temporal codec server)", responses=responses)
    async def encode_payloads(request: Request, caller: Admin) -> Response:
        return _answer(await codec.encode(_payloads(await request.body()).payloads))

    return router


def cors_origins(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The origins (the Temporal UI's) whose browsers may call the codec routes."""
    text = (os.environ if env is None else env).get(CORS_ENV, "")
    return tuple(origin.strip().rstrip("/") for origin in text.split(",") if origin.strip())


def _payloads(body: bytes) -> Payloads:
    payloads = Payloads()
    try:
        Parse(body.decode("utf-8"), payloads)
    except (ParseError, UnicodeDecodeError) as err:
        raise ApiProblem(
            HTTPStatus.BAD_REQUEST,
            'the body must be a JSON Payloads message, {"payloads": [{"metadata": {...}, '
            f'"data": "<base64>"}}]}} ({str(err)[:200]})',
            "InvalidPayloads",
        ) from None
    return payloads


def _answer(payloads: Sequence) -> Response:
    return Response(MessageToJson(Payloads(payloads=payloads)), media_type="application/json")


class CodecCors:
    """CORS for the codec routes only: the Temporal UI's origin may call /codec/*, and nothing
    else of the API becomes callable from a browser on another origin."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]):
        self.app = app
        self.cors = CORSMiddleware(
            app,
            allow_origins=list(origins),
            allow_methods=["POST"],
            allow_headers=list(CORS_HEADERS),
            allow_credentials=True,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/codec/"):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
