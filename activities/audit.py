"""Audit delivery: each lifecycle event, as one JSON object, to the destinations in keycard.yaml.

The workflow calls `audit.deliver` once per destination with that destination's next events, so a
destination that is down only holds up its own delivery. Delivery is at least once: an activity
retried after a partial success sends some events again, with the same ids, for consumers to drop.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol, TextIO

import boto3
import httpx
import structlog
from botocore.config import Config as BotoConfig
from temporalio import activity
from temporalio.exceptions import ApplicationError

from keycard import temporal as names
from keycard.config import (
    DEFAULT_AUDIT_DESTINATION,
    AuditConfig,
    AuditDestination,
    AwsSettings,
    FirehoseDestination,
    HttpDestination,
    JsonlDestination,
    KinesisDestination,
    S3Destination,
    StdoutDestination,
)
from keycard.models import AuditBatch, LifecycleEvent
from keycard.redact import scrub_text
from keycard.settings import Settings

log = structlog.get_logger("keycard.audit")

# Inside one delivery, records an AWS batch API turned down are retried alone this many times
# (with a short backoff) before the activity fails and Temporal retries it with its own backoff.
PARTIAL_RETRY_ATTEMPTS = 4
PARTIAL_RETRY_BASE_DELAY = 0.2
AWS_CLIENT_CONFIG = BotoConfig(
    retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=20
)


class AuditSink(Protocol):
    """One destination. `write` returns once every event is stored, or raises."""

    name: str

    async def write(self, events: list[LifecycleEvent]) -> None: ...


class DeliveryFailed(ApplicationError):
    """A destination did not take the events; Temporal retries (never non-retryable: nothing is
    dropped, a destination that is down or misconfigured delays only its own delivery)."""

    def __init__(self, destination: str, message: str):
        super().__init__(f"audit destination {destination}: {message}", type="AuditDeliveryFailed")


def _line(event: LifecycleEvent) -> str:
    return event.model_dump_json()


# --- local destinations --------------------------------------------------------------------------


class JsonlSink:
    """Appends one JSON line per event, synced to disk: the evidence file under `keycard dev`."""

    name = "jsonl"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()  # one batch's lines stay together

    async def write(self, events: list[LifecycleEvent]) -> None:
        lines = "".join(_line(event) + "\n" for event in events)
        await asyncio.to_thread(self._append, lines)

    def _append(self, lines: str) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(lines)
                file.flush()
                os.fsync(file.fileno())


class StdoutSink:
    """Each event as one structlog JSON record on standard output, for the platform's log shipper
    (whatever the worker's own log format is)."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None):
        self._log = structlog.wrap_logger(
            structlog.PrintLogger(stream or sys.stdout),
            processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
        )

    async def write(self, events: list[LifecycleEvent]) -> None:
        for event in events:
            self._log.info("keycard.audit", **event.model_dump(mode="json"))


class FanOut:
    """Several sinks as one destination, in order (the worker's local log: stdout and a file)."""

    def __init__(self, sinks: Sequence[AuditSink], name: str = DEFAULT_AUDIT_DESTINATION):
        self.name = name
        self.sinks = list(sinks)

    async def write(self, events: list[LifecycleEvent]) -> None:
        for sink in self.sinks:
            await sink.write(events)


# --- AWS destinations ----------------------------------------------------------------------------


def _chunks(records: list[Any], size_of: Callable[[Any], int], count: int, total: int) -> Iterator:
    """Split records into batches of at most `count` records and `total` bytes."""
    batch: list[Any] = []
    batch_bytes = 0
    for record in records:
        size = size_of(record)
        if batch and (len(batch) == count or batch_bytes + size > total):
            yield batch
            batch, batch_bytes = [], 0
        batch.append(record)
        batch_bytes += size
    if batch:
        yield batch


async def _put_batch_retrying_failures(
    name: str, records: list[Any], put: Callable[[list[Any]], list[str | None]]
) -> None:
    """Call a batch API; resend only the records it reports as failed, a few times, then give up
    (the activity fails and Temporal retries it later)."""
    pending = records
    for attempt in range(PARTIAL_RETRY_ATTEMPTS):
        errors = await asyncio.to_thread(put, pending)
        failed = [(record, error) for record, error in zip(pending, errors, strict=True) if error]
        if not failed:
            return
        log.warning(
            "audit.partial_failure",
            destination=name,
            failed=len(failed),
            of=len(pending),
            error=failed[0][1],
            attempt=attempt + 1,
        )
        pending = [record for record, _ in failed]
        if attempt + 1 < PARTIAL_RETRY_ATTEMPTS:
            await asyncio.sleep(PARTIAL_RETRY_BASE_DELAY * 2**attempt)
    raise DeliveryFailed(name, f"{len(pending)} record(s) still refused: {failed[0][1]}")


class FirehoseSink:
    """Amazon Data Firehose: PutRecordBatch, one JSON line per record (so an S3 destination of the
    stream holds JSONL), at most 500 records and 4 MiB per call."""

    MAX_RECORDS = 500
    MAX_BYTES = 4 * 1024 * 1024

    def __init__(self, client: Any, delivery_stream: str, name: str = "kinesis_firehose"):
        self._client = client
        self.delivery_stream = delivery_stream
        self.name = name

    async def write(self, events: list[LifecycleEvent]) -> None:
        records = [{"Data": (_line(event) + "\n").encode()} for event in events]
        for batch in _chunks(records, lambda r: len(r["Data"]), self.MAX_RECORDS, self.MAX_BYTES):
            await _put_batch_retrying_failures(self.name, batch, self._put)

    def _put(self, records: list[dict]) -> list[str | None]:
        response = self._client.put_record_batch(
            DeliveryStreamName=self.delivery_stream, Records=records
        )
        return [item.get("ErrorCode") for item in response["RequestResponses"]]


class KinesisSink:
    """A Kinesis data stream: PutRecords, at most 500 records and 5 MiB per call. The partition key
    is the request, so a request's events land on one shard; each id ends in its sequence number."""

    MAX_RECORDS = 500
    MAX_BYTES = 5 * 1024 * 1024

    def __init__(self, client: Any, stream: str, name: str = "kinesis"):
        self._client = client
        self.stream = stream
        self.name = name

    async def write(self, events: list[LifecycleEvent]) -> None:
        records = [
            {"Data": _line(event).encode(), "PartitionKey": event.request_id} for event in events
        ]

        def size(record: dict) -> int:
            return len(record["Data"]) + len(record["PartitionKey"].encode())

        for batch in _chunks(records, size, self.MAX_RECORDS, self.MAX_BYTES):
            await _put_batch_retrying_failures(self.name, batch, self._put)

    def _put(self, records: list[dict]) -> list[str | None]:
        response = self._client.put_records(StreamName=self.stream, Records=records)
        return [item.get("ErrorCode") for item in response["Records"]]


def s3_key(prefix: str, events: list[LifecycleEvent]) -> str:
    """`<prefix>YYYY/MM/DD/<request>/<first seq>-<last seq>.jsonl`, dated by the first event.

    The same batch always gets the same key, so a redelivery overwrites the object it wrote.
    """
    first, last = events[0], events[-1]
    day = first.time.strftime("%Y/%m/%d")
    request = first.workflow_id.replace("/", "_")
    return f"{prefix}{day}/{request}/{_seq(first):06d}-{_seq(last):06d}.jsonl"


def _seq(event: LifecycleEvent) -> int:
    return int(event.id.rsplit("/", 1)[1])


class S3Sink:
    """One JSONL object per delivered batch under a date prefix, for Athena or a data lake."""

    def __init__(self, client: Any, bucket: str, prefix: str = "keycard/audit/", name: str = "s3"):
        self._client = client
        self.bucket = bucket
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.name = name

    async def write(self, events: list[LifecycleEvent]) -> None:
        if not events:
            return
        body = "".join(_line(event) + "\n" for event in events).encode()
        await asyncio.to_thread(
            self._client.put_object,
            Bucket=self.bucket,
            Key=s3_key(self.prefix, events),
            Body=body,
            ContentType="application/x-ndjson",
        )


# --- HTTP ----------------------------------------------------------------------------------------


class HttpSink:
    """POST JSON to a URL (Datadog's logs intake, Splunk HEC, any SIEM webhook): a JSON array per
    batch, or one object per request. Any non-2xx answer is retried; headers are never logged."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        batch: bool = True,
        max_batch: int = 100,
        timeout: float = 10.0,
        name: str = "http",
    ):
        self.url = url
        self.name = name
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        self._batch = batch
        self._max_batch = max_batch
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def write(self, events: list[LifecycleEvent]) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, headers=self._headers)
        if self._batch:
            bodies = [
                "[" + ",".join(_line(e) for e in events[i : i + self._max_batch]) + "]"
                for i in range(0, len(events), self._max_batch)
            ]
        else:
            bodies = [_line(event) for event in events]
        for body in bodies:
            await self._post(body)

    async def _post(self, body: str) -> None:
        assert self._client is not None
        try:
            response = await self._client.post(self.url, content=body.encode())
        except httpx.HTTPError as err:
            raise DeliveryFailed(self.name, f"{type(err).__name__}: {err}") from None
        if not response.is_success:
            # Redacted whole, then cut: a cut could hide a secret from the patterns.
            excerpt = scrub_text(response.text)[:200]
            raise DeliveryFailed(self.name, f"HTTP {response.status_code}: {excerpt}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


# --- the activity --------------------------------------------------------------------------------


class AuditBacklog:
    """What this worker knows is waiting for each destination: the events of each request whose
    last delivery to it failed here (its retry is due), and since when the oldest has waited.
    A request's entry goes when a delivery of it succeeds, or when no attempt of it has come
    here for `forget_after` (its retries went to another worker, which counts them then).
    Read by the metrics endpoint (`keycard_audit_backlog_events`)."""

    def __init__(
        self,
        forget_after: timedelta = 3 * names.DELIVERY_RETRY.maximum_interval,  # type: ignore[operator]
        clock: Callable[[], float] = time.monotonic,
    ):
        self._forget_after = forget_after.total_seconds()
        self._clock = clock
        # (destination, request id) -> (events waiting, the oldest one's time, when last seen)
        self._failing: dict[tuple[str, str], tuple[int, datetime, float]] = {}

    def failed(self, destination: str, events: Sequence[LifecycleEvent]) -> None:
        if events:
            key = (destination, events[0].request_id)
            self._failing[key] = (len(events), events[0].time, self._clock())

    def delivered(self, destination: str, events: Sequence[LifecycleEvent]) -> None:
        if events:
            self._failing.pop((destination, events[0].request_id), None)

    def waiting(self, now: datetime) -> dict[str, tuple[int, float]]:
        """destination -> (events waiting, seconds the oldest has waited)."""
        horizon = self._clock() - self._forget_after
        self._failing = {k: v for k, v in self._failing.items() if v[2] >= horizon}
        totals: dict[str, tuple[int, float]] = {}
        for (destination, _), (events, oldest, _) in self._failing.items():
            count, age = totals.get(destination, (0, 0.0))
            totals[destination] = (count + events, max(age, (now - oldest).total_seconds()))
        return totals


class AuditActivities:
    """`audit.deliver`: write one request's events to one destination.

    `sinks` maps destination names to sinks; a plain list of sinks serves as the `default`
    destination (what requests use when keycard.yaml has no `audit` section). `backlog` hears of
    every failure and success (the metrics endpoint reads it).
    """

    def __init__(
        self,
        sinks: Mapping[str, AuditSink] | Sequence[AuditSink],
        backlog: AuditBacklog | None = None,
    ):
        if isinstance(sinks, Mapping):
            self.sinks = dict(sinks)
        else:
            self.sinks = {DEFAULT_AUDIT_DESTINATION: FanOut(sinks)}
        self.backlog = backlog or AuditBacklog()

    @activity.defn(name=names.DELIVER_AUDIT)
    async def deliver(self, batch: AuditBatch) -> None:
        sink = self.sinks.get(batch.destination)
        if sink is None:
            self.backlog.failed(batch.destination, batch.events)
            # Retried, not dropped: another worker may have it, or the config is being fixed.
            raise ApplicationError(
                f"audit destination {batch.destination!r} is not configured on this worker "
                f"(it has: {', '.join(self.sinks) or 'none'}); its events wait until it is",
                type="UnknownAuditDestination",
            )
        try:
            await sink.write(batch.events)
        except BaseException as err:  # a cancelled write (the round's lane timeout) counts too
            self.backlog.failed(batch.destination, batch.events)
            if not isinstance(err, Exception):
                raise
            log.warning(
                "audit.delivery_failed",
                destination=batch.destination,
                events=len(batch.events),
                first=batch.events[0].id if batch.events else None,
                attempt=activity.info().attempt,
                error=scrub_text(str(err))[:500],
            )
            raise
        self.backlog.delivered(batch.destination, batch.events)


def build_audit_sinks(
    audit: AuditConfig,
    settings: Settings,
    aws: AwsSettings | None = None,
    session_factory: Callable[..., Any] = boto3.session.Session,
) -> dict[str, AuditSink]:
    """The worker's sinks by destination name, from keycard.yaml (and the process settings for the
    local default). Secrets are read from the environment here, once, at start."""
    if audit.destinations is None:
        local: list[AuditSink] = []
        if settings.audit_stdout:
            local.append(StdoutSink())
        if settings.audit_jsonl:
            local.append(JsonlSink(settings.audit_jsonl))
        return {DEFAULT_AUDIT_DESTINATION: FanOut(local)}
    return {
        d.key: _sink(d, settings, aws or AwsSettings(), session_factory) for d in audit.destinations
    }


def _sink(
    destination: AuditDestination,
    settings: Settings,
    aws: AwsSettings,
    session_factory: Callable[..., Any],
) -> AuditSink:
    name = destination.key
    match destination:
        case JsonlDestination(path=path):
            return JsonlSink(path or settings.audit_jsonl or settings.state_dir / "audit.jsonl")
        case StdoutDestination():
            return StdoutSink()
        case HttpDestination():
            return HttpSink(
                destination.url,
                {header: ref.resolve() for header, ref in destination.headers.items()},
                batch=destination.batch,
                max_batch=destination.max_batch,
                timeout=destination.timeout.total_seconds(),
                name=name,
            )
        case FirehoseDestination() | KinesisDestination() | S3Destination():
            session = session_factory(region_name=destination.region or aws.region)
            service = {"kinesis_firehose": "firehose", "kinesis": "kinesis", "s3": "s3"}
            client = session.client(
                service[destination.type],
                endpoint_url=destination.endpoint_url,
                config=AWS_CLIENT_CONFIG,
            )
            if isinstance(destination, FirehoseDestination):
                return FirehoseSink(client, destination.delivery_stream, name=name)
            if isinstance(destination, KinesisDestination):
                return KinesisSink(client, destination.stream, name=name)
            return S3Sink(client, destination.bucket, destination.prefix, name=name)
    raise ValueError(f"unknown audit destination type {destination.type}")
