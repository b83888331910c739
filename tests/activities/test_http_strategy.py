"""The http strategy against a local endpoint of the tests: every call signed (and a wrong secret
refused by it), statuses classified (retried or refused), one idempotency key per call across its
retries, and a whole request lifecycle through the real workflows."""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.http_strategy import HttpStrategy, http_activities, sign
from activities.registry import StrategyContext
from keycard.config import ConfigError, parse_config
from keycard.models import RequestState
from keycard.sdk.strategy import Grant, Refused
from keycard.strategies import HttpOptions
from tests.fake_endpoint import SECRET, running_endpoint
from tests.harness import ALICE, BOB, running_stack, state_is, unique_id
from tests.polling import eventually
from tests.workflows.test_timers import outcome

ENV = {"ACCESS_SECRET": SECRET, "ACCESS_TOKEN": "t0ken"}


def options(url: str, **changes) -> HttpOptions:
    return HttpOptions.model_validate(
        {
            "url": url,
            "secret": "${ACCESS_SECRET}",
            "headers": {"Authorization": "Bearer ${ACCESS_TOKEN}"},
            **changes,
        }
    )


def test_the_signature_is_an_hmac_of_the_timestamp_and_the_body():
    body = b'{"operation": "grant"}'
    expected = hmac.new(b"k", b"1733300000." + body, hashlib.sha256).hexdigest()
    assert sign("k", "1733300000", body) == f"sha256={expected}"


async def test_each_operation_is_a_signed_call_and_the_answers_are_understood():
    async with running_endpoint() as endpoint, httpx.AsyncClient() as client:
        strategy = HttpStrategy(options(endpoint.url), client, ENV)
        settings = {"database": "billing", "role": "admin"}
        resolved = await strategy.resolve("alice@example.com", "billing", settings)
        assert (resolved.principal_id, resolved.resource_id) == (
            "db-alice@example.com",
            "billing/admin",
        )
        grant = Grant(
            person="alice@example.com",
            principal_id=resolved.principal_id,
            resource_id=resolved.resource_id,
            target="billing",
            settings=settings,
        )
        assert await strategy.exists(grant) is False
        await strategy.grant(grant)
        assert await strategy.exists(grant) is True
        await strategy.revoke(grant)
        assert await strategy.exists(grant) is False

        assert all(call["signed"] for call in endpoint.calls)
        first = endpoint.calls[0]
        assert first["headers"]["Authorization"] == "Bearer t0ken"
        assert first["body"] == {
            "operation": "resolve",
            "person": "alice@example.com",
            "target": {"name": "billing", "settings": settings},
        }
        assert endpoint.of("grant")[0]["body"]["resource_id"] == "billing/admin"

        with pytest.raises(Refused) as unknown:
            await strategy.resolve("mallory@example.com", "billing", settings)
        assert str(unknown.value) == (
            f"{endpoint.url} refused resolve (404): no account for mallory@example.com"
        )


async def test_a_wrong_secret_is_refused_by_the_endpoint_and_a_missing_one_is_retried():
    async with running_endpoint() as endpoint, httpx.AsyncClient() as client:
        wrong = HttpStrategy(options(endpoint.url), client, {**ENV, "ACCESS_SECRET": "guess"})
        with pytest.raises(Refused, match=r"refused resolve \(401\): bad signature"):
            await wrong.resolve("alice@example.com", "billing", {})
        unset = HttpStrategy(options(endpoint.url), client, {"ACCESS_TOKEN": "t"})
        with pytest.raises(ApplicationError) as missing:
            await unset.resolve("alice@example.com", "billing", {})
        assert not missing.value.non_retryable
        assert "ACCESS_SECRET is not set" in missing.value.message
        assert await unset.check({"billing": {}}) == [
            "the http strategy's secret is not set on this worker: "
            "environment variable ACCESS_SECRET is not set"
        ]


@pytest.mark.parametrize(
    ("status", "retried"),
    [(503, True), (500, True), (429, True), (408, True), (400, False), (403, False), (422, False)],
)
async def test_statuses_are_retried_or_refused(status, retried):
    async with running_endpoint() as endpoint, httpx.AsyncClient() as client:
        strategy = HttpStrategy(options(endpoint.url), client, ENV)
        endpoint.fail_next = [status]
        grant = Grant(person="a@x.io", principal_id="p", resource_id="r", target="t")
        if retried:
            with pytest.raises(ApplicationError) as error:
                await strategy.grant(grant)
            assert not error.value.non_retryable and error.value.type == "HttpUnavailable"
            if status == 429:
                assert error.value.next_retry_delay == timedelta(seconds=1)  # Retry-After
        else:
            with pytest.raises(Refused, match=f"refused grant \\({status}\\)"):
                await strategy.grant(grant)


async def test_a_retried_call_keeps_its_idempotency_key_and_the_next_call_gets_another():
    async with running_endpoint() as endpoint:
        context = SimpleNamespace(environ=ENV)
        grant_activity = next(a for a in http_activities(context) if "grant" in a.__name__)
        spec = {
            "strategy": "http",
            "principal_email": "alice@example.com",
            "target": "billing",
            "options": {"http": options(endpoint.url).model_dump(mode="json")},
        }
        assignment = {"spec": spec, "principal_id": "db-alice", "resource_id": "billing/admin"}
        from keycard.models import ResolvedAssignment

        resolved = ResolvedAssignment.model_validate(assignment)
        env = ActivityEnvironment()
        endpoint.fail_next = [503]
        with pytest.raises(ApplicationError):
            await env.run(grant_activity, resolved)
        await env.run(grant_activity, resolved)  # the same activity, attempted again
        other = ActivityEnvironment()
        other.info = other.info.__class__(**{**other.info.__dict__, "activity_id": "other"})
        await other.run(grant_activity, resolved)
        keys = [call["headers"]["Idempotency-Key"] for call in endpoint.of("grant")]
        assert keys[0] == keys[1] != keys[2]


FLOW = """
flows:
  - name: billing-db
    strategy: http
    http:
      url: URL
      secret: ${ACCESS_SECRET}
      headers: {Authorization: "Bearer ${ACCESS_TOKEN}"}
    targets:
      - {name: billing, label: Billing DB, settings: {database: billing, role: admin}}
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


async def test_a_whole_lifecycle_through_the_http_strategy(time_env, tmp_path):
    async with running_endpoint() as endpoint:
        config = parse_config(FLOW.replace("URL", endpoint.url))
        context = StrategyContext(config, None, tmp_path, ENV)
        async with running_stack(
            time_env.client, config, strategies=http_activities(context)
        ) as stack:
            view = await stack.keycard.request(
                flow="billing-db",
                target="billing",
                reason="migration",
                requester=ALICE,
                request_id=unique_id(),
            )
            assert view.state is RequestState.PENDING
            assert view.target_settings == {"database": "billing", "role": "admin"}
            await stack.keycard.approve(view.id, BOB)
            await state_is(stack, view.id, RequestState.ACTIVE)
            assert ("db-alice@example.com", "billing/admin") in endpoint.members
            final = await outcome(time_env, view.id)
            assert final.state is RequestState.ENDED and not endpoint.members
            operations = [c["body"]["operation"] for c in endpoint.calls]
            assert operations[0] == "resolve" and "grant" in operations
            assert operations[-1] == "revoke"
            await eventually(lambda: _has(stack, view.id, "access.ended"))
            [granted] = stack.audit.of(view.id, "access.granted")
            assert granted.target.strategy == "http"


async def _has(stack, request_id: str, type: str) -> bool:
    return bool(stack.audit.of(request_id, type))


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ("      secret: s3cret\n", "secrets are never written in keycard.yaml"),
        ('      headers: {X-Token: "${NOT CLOSED"}\n', "is not an environment reference"),
        ("      url: ftp://x\n", "String should match pattern"),
    ],
)
def test_http_flows_are_checked_when_the_file_is_read(change, problem):
    text = FLOW.replace("URL", "https://access.example.com/keycard")
    key = change.strip().split(":", 1)[0]
    lines = [line for line in text.splitlines(keepends=True) if not line.strip().startswith(key)]
    at = next(i for i, line in enumerate(lines) if line.strip() == "http:") + 1
    lines.insert(at, change)
    with pytest.raises(ConfigError) as error:
        parse_config("".join(lines))
    assert problem in str(error.value)
    with pytest.raises(ConfigError) as none:
        parse_config(text.replace("    http:\n", "    xhttp:\n"))
    assert "flows[0].http: is required" in str(none.value)
    assert "flows[0].xhttp: is not a known setting" in str(none.value)
