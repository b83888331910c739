"""The one HTTP app that `keycard serve` and `keycard dev` run: the API (/v1, /healthz, /readyz,
/docs), the web console at /, the codec server for the Temporal UI when payloads are encrypted,
and any routers a runner adds (Slack's events).

It puts the front doors together, so it sits above them: the API (starter/api) and the console
(starter/web) do not know about each other's routes.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import Response

from keycard.codec import EncryptionCodec
from keycard.config import KeycardConfig
from starter.api.app import ApiOptions, access_log, health, openapi_schema, v1
from starter.api.auth import TokenBook
from starter.api.codec_server import CodecCors, codec_router
from starter.api.problems import BodyLimit, add_problem_handlers
from starter.api.reports import reports
from starter.client import KeycardClient
from starter.sso import BearerVerifier
from starter.telemetry import trace_api
from starter.web import ConsoleOptions, console_router, session_middleware, static_files


def create_app(
    keycard: KeycardClient,
    config: KeycardConfig | None = None,
    *,
    routers: Sequence[APIRouter] = (),
    options: ApiOptions | None = None,
    console: ConsoleOptions | None = None,
) -> FastAPI:
    """The API for `keycard`, accepting the tokens in `config` (default: the client's config).

    `routers` are included as they are, without bearer auth: the Slack helper mounts Bolt's
    `POST /slack/events` this way (see the module docstring).
    """
    config = config or keycard.config
    app = FastAPI(
        generate_unique_id_function=lambda route: route.name,  # operationIds: approve_request
        # /docs is served below from Keycard's own copy of Swagger UI: no CDN, works offline.
        docs_url=None,
        redoc_url=None,
        title="Keycard",
        summary="Just-in-time access: ask, approve, and watch access end on time.",
        version="1",
        description=(
            "Every call but the health checks needs `Authorization: Bearer <token>`. Errors are "
            "RFC 9457 problem details (`application/problem+json`) whose `detail` says what was "
            "wrong and what to do."
        ),
    )
    app.state.keycard = keycard
    app.state.tokens = TokenBook(config.api.tokens)
    app.state.options = options or ApiOptions()
    app.include_router(v1)
    app.include_router(reports)
    app.include_router(health)
    app.add_api_route("/docs", _docs, include_in_schema=False)
    # The web console at / (starter/web): pages, their static files, and signed sessions.
    app.state.console = console or ConsoleOptions()
    if app.state.console.sso is not None:  # `keycard login`'s ID tokens are bearer tokens too
        app.state.bearer_verifier = BearerVerifier(app.state.console.sso)
    app.include_router(console_router())
    app.mount("/console/static", static_files(), name="console-static")
    middleware, settings = session_middleware(https_only=app.state.console.https_only)
    app.add_middleware(middleware, **settings)
    temporal = keycard.temporal  # None in tests of routes that never reach Temporal
    codec = temporal.data_converter.payload_codec if temporal is not None else None
    if isinstance(codec, EncryptionCodec):  # payloads are encrypted: serve a codec server
        app.include_router(codec_router(codec))
        if app.state.options.codec_cors_origins:
            app.add_middleware(CodecCors, origins=app.state.options.codec_cors_origins)
    for router in routers:
        app.include_router(router)
    add_problem_handlers(app)
    app.middleware("http")(access_log)
    app.add_middleware(BodyLimit)
    app.openapi = lambda: openapi_schema(app)  # type: ignore[method-assign]
    trace_api(app)  # when OTEL_* variables ask for traces
    return app


SWAGGER_UI = "/console/static/vendor/swagger-ui"  # swagger-ui-dist 5, Apache-2.0 (LICENSE there)


async def _docs() -> Response:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Keycard API",
        swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
        swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
        swagger_favicon_url="/console/static/favicon.svg",
        swagger_ui_parameters={"validatorUrl": None},  # no calls to swagger.io either
    )
