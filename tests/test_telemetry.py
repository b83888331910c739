"""The metrics endpoint and the traces, as an operator turns them on (docs/deployment.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.audit import AuditBacklog
from keycard.config import parse_config
from keycard.models import Actor, RequestState
from keycard.settings import Settings
from starter.api.app import ApiOptions
from starter.client import connect_temporal
from starter.run.http import create_app
from starter.telemetry import Gauges, metrics_runtime, tracing_configured
from tests.fakes import FakeCloud
from tests.harness import BOB, ask, running_stack, state_is
from tests.polling import eventually
from tests.starter.conftest import api_config, auth, free_port, new_account_id
from tests.workflows.test_audit_trail import SwitchableSink, with_destinations

SAMPLE = re.compile(r"^(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    samples = []
    for line in text.splitlines():
        if match := SAMPLE.match(line):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"] or ""))
            samples.append((match["name"], labels, float(match["value"])))
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    found = [v for n, ls, v in samples if n == name and labels.items() <= ls.items()]
    return sum(found) if found else None


async def test_the_metrics_endpoint_has_keycards_figures_and_the_sdks(dev_env):
    port = free_port()
    runtime = metrics_runtime(f"127.0.0.1:{port}")
    client = await Client.connect(
        dev_env.client.service_client.config.target_host,
        namespace=dev_env.client.namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )
    backlog = AuditBacklog()
    siem, steady = SwitchableSink(up=False), SwitchableSink()
    cloud = FakeCloud()
    cloud.revoke_failures_left = 1
    config = parse_config(with_destinations("steady", "siem"))
    async with running_stack(
        client,
        config=config,
        cloud=cloud,
        audit_sinks={"steady": steady, "siem": siem},
        backlog=backlog,
    ) as stack:
        gauges = Gauges(client, runtime, backlog=backlog, destinations=["steady", "siem"])
        view = await ask(stack)
        await gauges.update()
        assert value(scrape(port), "keycard_pending_requests") >= 1

        await stack.keycard.approve(view.id, BOB)
        await state_is(stack, view.id, RequestState.ACTIVE)
        await gauges.update()
        samples = scrape(port)
        assert value(samples, "keycard_active_grants") >= 1
        # The SIEM refuses everything: its backlog shows, and how long its oldest event waits.
        assert siem.refused >= 1
        assert value(samples, "keycard_audit_backlog_events", destination="siem") >= 1
        assert value(samples, "keycard_audit_oldest_undelivered_seconds", destination="siem") > 0
        assert value(samples, "keycard_audit_backlog_events", destination="steady") == 0

        await stack.keycard.revoke(view.id, Actor(email="alice@example.com"), "done")
        await state_is(stack, view.id, RequestState.ENDED)
        siem.up = True  # back: the backlog drains
        everything = steady.types(view.id)
        await eventually(lambda: _async(siem.types(view.id) == everything), timeout=90)
        await gauges.update()
        samples = scrape(port)
        assert value(samples, "keycard_audit_backlog_events", destination="siem") == 0

    flow = {"flow": "prod-power-user"}
    assert value(samples, "keycard_events_total", type="request.created", **flow) >= 1
    assert value(samples, "keycard_events_total", type="access.granted", **flow) >= 1
    assert value(samples, "keycard_revoke_retries_total", strategy="aws_sso") >= 1
    # The SDK's own worker metrics, on the same endpoint.
    assert value(samples, "temporal_workflow_completed_total") is not None
    assert value(samples, "temporal_activity_execution_latency_count") is not None


def test_backlog_forgets_a_request_whose_retries_went_elsewhere():
    clock = [0.0]
    backlog = AuditBacklog(forget_after=timedelta(minutes=3), clock=lambda: clock[0])
    event = _event()
    backlog.failed("siem", [event, event])
    now = event.time + timedelta(seconds=90)
    assert backlog.waiting(now) == {"siem": (2, 90.0)}
    clock[0] = 181.0
    assert backlog.waiting(now) == {}
    backlog.failed("siem", [event])
    backlog.delivered("siem", [event])
    assert backlog.waiting(now) == {}


def _event():
    from keycard.models import LifecycleEvent, Requester, TargetRef

    return LifecycleEvent(
        id="req-x:1", type="request.created", time=datetime(2026, 12, 3, tzinfo=UTC),
        request_id="req-x", workflow_id="req-x", run_id="r", requester=Requester(
            email="alice@example.com"), flow="f", target=TargetRef(name="prod", label="Prod", strategy="aws_sso"),
        duration=timedelta(hours=1), reason="r", state=RequestState.PENDING,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ],
)
def test_tracing_is_off_unless_the_otel_variables_ask(env, on):
    assert tracing_configured(env) is on


@pytest.mark.parametrize("address", ["9464", ":9464", "0.0.0.0:http", "0.0.0.0:70000"])
def test_a_bad_metrics_address_is_refused_with_an_example(address):
    with pytest.raises(ValueError, match=r"KEYCARD_METRICS_ADDRESS must be host:port, such as"):
        Settings.from_env({"KEYCARD_METRICS_ADDRESS": address})
    assert Settings.from_env({"KEYCARD_METRICS_ADDRESS": "0.0.0.0:9464"}).metrics_address


async def test_one_trace_from_the_api_call_to_the_activities(dev_env, monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "_TRACER_PROVIDER", None)
    monkeypatch.setattr(trace, "_TRACER_PROVIDER_SET_ONCE", trace.Once())
    trace.set_tracer_provider(provider)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")  # asks for traces
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", dev_env.client.namespace)
    client = await connect_temporal()  # as `keycard serve` and `keycard worker` connect
    async with running_stack(client, config=api_config(new_account_id())) as stack:
        app = create_app(stack.keycard, options=ApiOptions(wait_timeout=timedelta(seconds=30)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http:
            created = await http.post(
                "/v1/requests",
                json={"flow": "prod-power-user", "target": "prod", "duration": "1h",
                      "reason": "incident 4312", "fields": {"incident": "4312"}},
                headers=auth("alice"),
            )  # fmt: skip
            assert created.status_code == 201, created.text

            def spans_of_the_request():
                return [s for s in exporter.get_finished_spans() if s.name.startswith("Run")]

            await eventually(lambda: _async(spans_of_the_request()))
    provider.force_flush()
    spans = exporter.get_finished_spans()
    api = next(s for s in spans if s.name == "POST /v1/requests")
    in_trace = [s for s in spans if s.context.trace_id == api.context.trace_id]
    names = {s.name for s in in_trace}
    # The API call starts the workflow (update-with-start), whose run, update handler and
    # activities are all in the API call's trace.
    assert "StartUpdateWithStartWorkflow:AccessRequestWorkflow" in names, names
    assert "HandleUpdate:submitted" in names, names
    assert "RunWorkflow:AccessRequestWorkflow" in names, names
    assert "RunActivity:aws_sso.resolve" in names, names


async def _async(value):
    return value


def test_the_sample_alert_rules_use_metrics_keycard_exports():
    import yaml

    from keycard import temporal as names

    root = Path(__file__).resolve().parent.parent
    rules = yaml.safe_load((root / "deploy" / "prometheus-alerts.yml").read_text())
    counters = {names.METRIC_EVENTS, names.METRIC_REVOKE_RETRIES, names.METRIC_HOOK_FAILURES}
    exported = {f"{c}_total" for c in counters} | {
        names.METRIC_ACTIVE_GRANTS,
        names.METRIC_PENDING_REQUESTS,
        names.METRIC_AUDIT_BACKLOG,
        names.METRIC_AUDIT_OLDEST,
    }
    alerts = {}
    for rule in rules["groups"][0]["rules"]:
        assert {"alert", "expr", "labels", "annotations"} <= rule.keys(), rule
        used = set(re.findall(r"keycard_\w+", rule["expr"]))
        assert used and used <= exported, (rule["alert"], used - exported)
        alerts[rule["alert"]] = rule
    assert {"KeycardRevocationRetrying", "KeycardAuditDestinationBehind"} <= alerts.keys()
    guide = (root / "docs" / "deployment.md").read_text()
    for metric in exported:
        assert f"`{metric}`" in guide, f"docs/deployment.md does not list {metric}"
