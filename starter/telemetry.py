"""Metrics and traces of Keycard's processes, both off unless configured.

Metrics: KEYCARD_METRICS_ADDRESS (say `0.0.0.0:9464`) serves Prometheus's /metrics from the
Temporal SDK runtime (`PrometheusConfig`): the SDK's own worker metrics (`temporal_*`) and
Keycard's (`keycard_*`, names in keycard/temporal.py). Counters are counted where things happen
(workflow and activity code); the gauges below are set by each worker every METRICS_INTERVAL.

Traces: the standard OpenTelemetry variables (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, ...) turn on
spans for API request → workflow → activity, carried in Temporal headers by
`temporalio.contrib.opentelemetry.TracingInterceptor`. OTEL_SDK_DISABLED=true or
OTEL_TRACES_EXPORTER=none keep them off; OTEL_TRACES_EXPORTER=console prints them.
docs/deployment.md has the endpoint, every metric and sample alert rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog
from temporalio.client import Client, Interceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from keycard import temporal as names
from keycard.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from activities.audit import AuditBacklog

log = structlog.get_logger("keycard.telemetry")

# --- metrics -----------------------------------------------------------------------------------


def metrics_runtime(address: str) -> Runtime:
    """A Temporal runtime serving Prometheus metrics at http://<address>/metrics. Counters end
    in `_total` and durations are in seconds, as Prometheus's conventions have them."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address,
                counters_total_suffix=True,
                durations_as_seconds=True,
            )
        )
    )


def worker_runtime(settings: Settings) -> Runtime | None:
    """The runtime a worker connects with: one serving metrics when KEYCARD_METRICS_ADDRESS is
    set, else None (the SDK's default runtime)."""
    return metrics_runtime(settings.metrics_address) if settings.metrics_address else None


class Gauges:
    """Keycard's gauges, set every `interval` by each worker that serves metrics:

    - keycard_pending_requests, keycard_active_grants: requests PENDING / ACTIVE now, counted by
      Temporal's visibility (the same figure from every worker: aggregate with max, not sum);
    - keycard_audit_backlog_events{destination}, keycard_audit_oldest_undelivered_seconds
      {destination}: events a destination refused and this worker is retrying (sum them).
    """

    def __init__(
        self,
        client: Client,
        runtime: Runtime,
        *,
        backlog: AuditBacklog,
        destinations: Sequence[str],
        interval: timedelta = names.METRICS_INTERVAL,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        meter = runtime.metric_meter
        self._client = client
        self._backlog = backlog
        self._destinations = list(destinations)
        self._interval = interval.total_seconds()
        self._now = now
        self._pending = meter.create_gauge(
            names.METRIC_PENDING_REQUESTS, "requests waiting for a decision now"
        )
        self._active = meter.create_gauge(names.METRIC_ACTIVE_GRANTS, "requests whose access is on")
        self._waiting = meter.create_gauge(
            names.METRIC_AUDIT_BACKLOG, "audit events a destination refused, being retried"
        )
        self._oldest = meter.create_gauge_float(
            names.METRIC_AUDIT_OLDEST, "how long the oldest of them has waited", "s"
        )

    async def run(self) -> None:
        """Until cancelled; a failed count (Temporal briefly away) leaves the last values."""
        while True:
            await self.update()
            await asyncio.sleep(self._interval)

    async def update(self) -> None:
        try:
            pending, active = await asyncio.gather(self._count("PENDING"), self._count("ACTIVE"))
        except Exception as err:  # metrics must never take a worker down
            log.warning("metrics.count_failed", error=str(err))
        else:
            self._pending.set(pending)
            self._active.set(active)
        waiting = self._backlog.waiting(self._now())
        for destination in sorted({*self._destinations, *waiting}):
            events, oldest = waiting.get(destination, (0, 0.0))
            self._waiting.set(events, {"destination": destination})
            self._oldest.set(oldest, {"destination": destination})

    async def _count(self, state: str) -> int:
        query = (
            f'WorkflowType = "{names.ACCESS_REQUEST_WORKFLOW}" AND ExecutionStatus = "Running" '
            f'AND {names.SA_STATE.name} = "{state}"'
        )
        return (await self._client.count_workflows(query)).count


@contextlib.asynccontextmanager
async def gauges_running(gauges: Gauges | None):
    task = asyncio.create_task(gauges.run(), name="keycard-gauges") if gauges else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


# --- traces ------------------------------------------------------------------------------------


def tracing_configured(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return exporter == "console" or bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


_provider: TracerProvider | None = None


def start_tracing(service: str, env: Mapping[str, str] | None = None) -> bool:
    """Install the process's tracer provider from the OTEL_* variables, once. False when they
    do not ask for traces. `service` names the process unless OTEL_SERVICE_NAME does."""
    global _provider
    env = os.environ if env is None else env
    if not tracing_configured(env):
        return False
    if _provider is not None:
        return True
    from opentelemetry import trace
    from opentelemetry.sdk.resources import OTELResourceDetector, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or service})
    resource = resource.merge(OTELResourceDetector().detect())
    _provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "console":
        exporter = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout: OTEL_EXPORTER_OTLP_*
    _provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(_provider)
    log.info("tracing.started", service=resource.attributes.get("service.name"))
    return True


def stop_tracing() -> None:
    """Send what is buffered before the process exits."""
    if _provider is not None:
        _provider.shutdown()


def tracing_interceptors() -> list[Interceptor]:
    """For Client.connect: spans for starting and signalling workflows, and (the worker inherits
    a client's interceptors) for running workflows and activities, all in the caller's trace."""
    if not tracing_configured():
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def trace_api(app: Any) -> None:
    """Spans for every HTTP request the API serves, continuing a caller's `traceparent`."""
    if not tracing_configured():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls="healthz,readyz")
