"""Schema-driven fuzzing: Schemathesis generates calls from /openapi.json, valid and invalid, with
every kind of caller; no answer may be a 5xx, and every answer must match the document."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import schemathesis
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from starter.api.app import ApiOptions
from starter.run.http import create_app
from starter.run.serve import running_api
from tests.starter.conftest import TOKENS, Api

EXAMPLES_PER_OPERATION = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
CALLERS = [*TOKENS, "nobody", "forged"]


def headers_for(caller: str) -> dict[str, str]:
    if caller == "nobody":
        return {}
    token = TOKENS.get(caller, "kc_forged-token-that-no-config-lists")
    return {"Authorization": f"Bearer {token}"}


def fuzz(document: dict, base_url: str, mode: GenerationMode) -> int:
    schema = schemathesis.openapi.from_dict(document)
    calls = 0
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy(generation_mode=mode), caller=st.sampled_from(CALLERS))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def call(case, caller):
            nonlocal calls
            calls += 1
            case.call_and_validate(
                base_url=base_url, headers=headers_for(caller), checks=CHECKS, timeout=30
            )

        try:
            call()
        except Unsatisfiable:
            # Nothing about /healthz can be invalid: no parameters, no body.
            assert mode is GenerationMode.NEGATIVE, operation.label
    return calls


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
async def test_no_server_errors(api: Api, mode: GenerationMode):
    document = (await api.http.get("/openapi.json")).json()
    # The schema's own example is a valid request, so `wait=active` really waits: briefly, here.
    app = create_app(api.stack.keycard, options=ApiOptions(wait_timeout=timedelta(seconds=1)))
    with structlog.testing.capture_logs():  # a few hundred access-log lines say nothing here
        async with running_api(app) as server:
            calls = await asyncio.to_thread(fuzz, document, server.url, mode)
    assert calls >= 10 * len(document["paths"])
