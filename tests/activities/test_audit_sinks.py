"""Each audit destination against a real counterpart: moto for Firehose, Kinesis and S3, a local
HTTP server for `http`, a temporary file for `jsonl`, the captured stdout for `stdout`."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import AsyncIterator, Iterator

import boto3
import pytest
from aiohttp import web
from moto.server import ThreadedMotoServer
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

import activities.audit as audit
from activities.audit import (
    AuditActivities,
    DeliveryFailed,
    FanOut,
    JsonlSink,
    StdoutSink,
    build_audit_sinks,
    s3_key,
)
from keycard.config import parse_config
from keycard.models import AuditBatch, LifecycleEvent
from keycard.settings import Settings
from tests.audit_events import make_events
from tests.harness import CONFIG

REGION = "us-east-1"
Session = functools.partial(
    boto3.session.Session, aws_access_key_id="testing", aws_secret_access_key="testing"
)


def sinks_from(yaml: str, settings: Settings | None = None):
    config = parse_config(CONFIG + yaml)
    return build_audit_sinks(config.audit, settings or Settings(), config.aws, Session)


def as_lines(events: list[LifecycleEvent]) -> list[str]:
    return [event.model_dump_json() for event in events]


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def aws_client(service: str, endpoint: str):
    return Session(region_name=REGION).client(service, endpoint_url=endpoint)


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    """The sinks' short in-activity backoff between partial retries, made instant for tests."""
    monkeypatch.setattr(audit, "PARTIAL_RETRY_BASE_DELAY", 0)


def fail_records(client, operation: str, failing: list[set[int]]) -> list[int]:
    """Make the n-th call report the records at the given indexes as failed (moto never does).

    Returns the number of records each call carried.
    """
    sizes: list[int] = []
    service = client.meta.service_model.endpoint_prefix
    key, code = {
        "PutRecordBatch": ("RequestResponses", "ServiceUnavailableException"),
        "PutRecords": ("Records", "ProvisionedThroughputExceededException"),
    }[operation]

    def before(params, **_):
        sizes.append(len(params["Records"]))

    def after(parsed, **_):
        call = len(sizes) - 1
        for index in failing[call] if call < len(failing) else set():
            parsed[key][index] = {"ErrorCode": code, "ErrorMessage": "slow down"}

    client.meta.events.register(f"provide-client-params.{service}.{operation}", before)
    client.meta.events.register(f"after-call.{service}.{operation}", after)
    return sizes


# --- kinesis_firehose --------------------------------------------------------------------------


def firehose_into_bucket(endpoint: str, name: str) -> None:
    aws_client("s3", endpoint).create_bucket(Bucket=name)
    aws_client("firehose", endpoint).create_delivery_stream(
        DeliveryStreamName=name,
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::123456789012:role/firehose",
            "BucketARN": f"arn:aws:s3:::{name}",
        },
    )


def bucket_lines(endpoint: str, bucket: str) -> list[str]:
    s3 = aws_client("s3", endpoint)
    lines: list[str] = []
    for item in sorted(
        s3.list_objects_v2(Bucket=bucket).get("Contents", []), key=lambda o: o["Key"]
    ):
        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode()
        lines.extend(body.splitlines())
    return lines


async def test_firehose_batches_json_lines_into_the_stream(moto_endpoint):
    firehose_into_bucket(moto_endpoint, "audit-firehose")
    sink = sinks_from(
        f"""
audit:
  destinations:
    - {{type: kinesis_firehose, delivery_stream: audit-firehose, region: {REGION},
        endpoint_url: "{moto_endpoint}"}}
"""
    )["kinesis_firehose"]
    sizes = fail_records(sink._client, "PutRecordBatch", [])
    events = make_events(3)

    await sink.write(events)

    assert sizes == [3]  # one PutRecordBatch for the whole batch
    assert bucket_lines(moto_endpoint, "audit-firehose") == as_lines(events)


async def test_firehose_resends_only_the_records_it_refused(moto_endpoint):
    firehose_into_bucket(moto_endpoint, "audit-firehose-partial")
    sink = audit.FirehoseSink(aws_client("firehose", moto_endpoint), "audit-firehose-partial")
    sizes = fail_records(sink._client, "PutRecordBatch", [{1}])
    events = make_events(3)

    await sink.write(events)

    assert sizes == [3, 1]
    delivered = [
        json.loads(line)["id"] for line in bucket_lines(moto_endpoint, "audit-firehose-partial")
    ]
    # moto stored the "refused" record too; the resend duplicates it under the same id.
    assert sorted(set(delivered)) == [e.id for e in events]


async def test_firehose_that_keeps_refusing_fails_the_delivery_for_a_later_retry(moto_endpoint):
    firehose_into_bucket(moto_endpoint, "audit-firehose-down")
    sink = audit.FirehoseSink(aws_client("firehose", moto_endpoint), "audit-firehose-down")
    sizes = fail_records(sink._client, "PutRecordBatch", [{0, 2}, {1}, {0}, {0}])

    with pytest.raises(DeliveryFailed, match=r"1 record.* still refused: ServiceUnavailable"):
        await sink.write(make_events(3))
    assert sizes == [3, 2, 1, 1]


async def test_firehose_splits_batches_at_the_api_limit(moto_endpoint, monkeypatch):
    firehose_into_bucket(moto_endpoint, "audit-firehose-split")
    sink = audit.FirehoseSink(aws_client("firehose", moto_endpoint), "audit-firehose-split")
    monkeypatch.setattr(sink, "MAX_RECORDS", 2)
    sizes = fail_records(sink._client, "PutRecordBatch", [])
    events = make_events(5)

    await sink.write(events)

    assert sizes == [2, 2, 1]
    # Firehose decides how records become objects; every line arrives exactly as sent.
    assert sorted(bucket_lines(moto_endpoint, "audit-firehose-split")) == sorted(as_lines(events))


# --- kinesis -----------------------------------------------------------------------------------


def stream_records(endpoint: str, stream: str) -> list[dict]:
    kinesis = aws_client("kinesis", endpoint)
    shard = kinesis.describe_stream(StreamName=stream)["StreamDescription"]["Shards"][0]
    iterator = kinesis.get_shard_iterator(
        StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    return kinesis.get_records(ShardIterator=iterator)["Records"]


async def test_kinesis_puts_records_partitioned_by_request(moto_endpoint):
    aws_client("kinesis", moto_endpoint).create_stream(StreamName="audit-stream", ShardCount=1)
    sink = sinks_from(
        f"""
audit:
  destinations:
    - {{type: kinesis, name: siem-stream, stream: audit-stream, region: {REGION},
        endpoint_url: "{moto_endpoint}"}}
"""
    )["siem-stream"]
    sizes = fail_records(sink._client, "PutRecords", [{0}])
    events = make_events(3)

    await sink.write(events)

    assert sizes == [3, 1]  # the refused record alone is sent again
    records = stream_records(moto_endpoint, "audit-stream")
    assert {r["PartitionKey"] for r in records} == {"req-audit1"}
    assert sorted({json.loads(r["Data"])["id"] for r in records}) == [e.id for e in events]
    assert all(r["Data"].decode() in as_lines(events) for r in records)


# --- s3 ----------------------------------------------------------------------------------------


async def test_s3_writes_one_jsonl_object_per_batch_under_a_date_prefix(moto_endpoint):
    aws_client("s3", moto_endpoint).create_bucket(Bucket="audit-lake")
    sink = sinks_from(
        f"""
audit:
  destinations:
    - {{type: s3, bucket: audit-lake, prefix: keycard, region: {REGION},
        endpoint_url: "{moto_endpoint}"}}
"""
    )["s3"]
    events = make_events(4)  # from 23:59:50 to 00:01:10: dated by the batch's first event

    await sink.write(events[:2])
    await sink.write(events[2:])
    await sink.write(events[2:])  # redelivered: same key, overwritten, not duplicated

    s3 = aws_client("s3", moto_endpoint)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="audit-lake")["Contents"]]
    assert sorted(keys) == [
        "keycard/2026/03/14/req-audit1/000001-000002.jsonl",
        "keycard/2026/03/15/req-audit1/000003-000004.jsonl",
    ]
    assert bucket_lines(moto_endpoint, "audit-lake") == as_lines(events)
    assert s3_key("p/", events[:1]) == "p/2026/03/14/req-audit1/000001-000001.jsonl"


# --- http --------------------------------------------------------------------------------------


class Intake:
    """A log intake / SIEM webhook that records what it gets and can be switched off."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], object]] = []
        self.status = 202

    async def handle(self, request: web.Request) -> web.Response:
        if self.status >= 300:
            return web.Response(status=self.status, text="intake unavailable")
        self.requests.append((dict(request.headers), await request.json()))
        return web.Response(status=self.status)


@pytest.fixture
async def intake() -> AsyncIterator[tuple[Intake, str]]:
    receiver = Intake()
    app = web.Application()
    app.router.add_post("/api/v2/logs", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield receiver, f"http://127.0.0.1:{port}/api/v2/logs?ddsource=keycard"
    await runner.cleanup()


async def test_http_posts_json_arrays_with_headers_from_the_environment(intake, monkeypatch):
    receiver, url = intake
    monkeypatch.setenv("TEST_DD_API_KEY", "dd-secret-0123456789")
    sink = sinks_from(
        f"""
audit:
  destinations:
    - type: http
      name: datadog
      url: "{url}"
      headers: {{DD-API-KEY: "${{TEST_DD_API_KEY}}"}}
      max_batch: 2
"""
    )["datadog"]
    events = make_events(3)

    await sink.write(events)
    await sink.aclose()

    assert [body for _, body in receiver.requests] == [
        [json.loads(line) for line in as_lines(events[:2])],
        [json.loads(as_lines(events)[2])],
    ]
    headers = receiver.requests[0][0]
    assert headers["DD-API-KEY"] == "dd-secret-0123456789"
    assert headers["Content-Type"] == "application/json"


async def test_http_can_post_one_object_per_event(intake):
    receiver, url = intake
    sink = audit.HttpSink(url, batch=False)
    events = make_events(2)

    await sink.write(events)
    await sink.aclose()

    assert [body for _, body in receiver.requests] == [json.loads(x) for x in as_lines(events)]


async def test_http_refusal_fails_the_delivery_without_leaking_headers(intake):
    receiver, url = intake
    receiver.status = 503
    sink = audit.HttpSink(url, {"Authorization": "Bearer hunter2-hunter2"})

    with pytest.raises(DeliveryFailed) as failure:
        await sink.write(make_events(1))
    await sink.aclose()

    assert "HTTP 503: intake unavailable" in failure.value.message
    assert "hunter2" not in failure.value.message
    assert failure.value.non_retryable is False


async def test_http_unreachable_fails_the_delivery():
    sink = audit.HttpSink("http://127.0.0.1:9/never", timeout=2)
    with pytest.raises(DeliveryFailed, match="ConnectError"):
        await sink.write(make_events(1))
    await sink.aclose()


def test_http_header_secrets_must_be_environment_references():
    from keycard.config import ConfigError

    with pytest.raises(ConfigError, match=r"secrets are never written in keycard\.yaml"):
        parse_config(
            CONFIG
            + """
audit:
  destinations:
    - {type: http, url: "https://intake.example.com", headers: {DD-API-KEY: abc123}}
"""
        )


# --- jsonl and stdout --------------------------------------------------------------------------


async def test_jsonl_appends_one_line_per_event_and_redelivery_keeps_ids(tmp_path):
    path = tmp_path / "audit" / "audit.jsonl"
    sink = sinks_from(f"\naudit:\n  destinations:\n    - {{type: jsonl, path: '{path}'}}\n")[
        "jsonl"
    ]
    events = make_events(3)

    await sink.write(events[:2])
    await sink.write(events[1:])  # the second batch redelivers event 2

    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [
        "req-audit1/1",
        "req-audit1/2",
        "req-audit1/2",
        "req-audit1/3",
    ]
    assert lines[1] == lines[2]
    assert [LifecycleEvent.model_validate_json(line) for line in lines[:2]] == events[:2]


async def test_stdout_writes_structlog_json(capsys):
    sink = StdoutSink()
    events = make_events(2)

    await sink.write(events)

    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["event"] for r in records] == ["keycard.audit", "keycard.audit"]
    assert [r["id"] for r in records] == ["req-audit1/1", "req-audit1/2"]
    assert records[0]["target"]["settings"]["account_id"] == "111111111111"
    assert records[0]["level"] == "info"


# --- wiring ------------------------------------------------------------------------------------


def test_without_an_audit_section_the_worker_log_is_the_default_destination(tmp_path):
    settings = Settings(audit_jsonl=tmp_path / "audit.jsonl", audit_stdout=False)
    sinks = build_audit_sinks(parse_config(CONFIG).audit, settings)
    assert list(sinks) == ["default"]
    default = sinks["default"]
    assert isinstance(default, FanOut)
    assert [type(s) for s in default.sinks] == [JsonlSink]
    assert parse_config(CONFIG).audit.destination_names == ["default"]


def test_destinations_are_named_by_type_unless_named(tmp_path):
    config = parse_config(
        CONFIG
        + """
audit:
  destinations:
    - {type: stdout}
    - {type: jsonl}
    - {type: jsonl, name: archive, path: /var/log/keycard/audit.jsonl}
"""
    )
    assert config.audit.destination_names == ["stdout", "jsonl", "archive"]
    sinks = build_audit_sinks(config.audit, Settings(state_dir=tmp_path))
    assert sinks["jsonl"].path == tmp_path / "audit.jsonl"  # type: ignore[attr-defined]
    assert str(sinks["archive"].path) == "/var/log/keycard/audit.jsonl"  # type: ignore[attr-defined]


def test_destination_names_must_be_unique():
    from keycard.config import ConfigError

    with pytest.raises(ConfigError, match=r"names must be unique .* repeated: jsonl"):
        parse_config(CONFIG + "\naudit:\n  destinations: [{type: jsonl}, {type: jsonl}]\n")


async def test_deliver_routes_a_batch_to_its_destination_only(tmp_path):
    a, b = JsonlSink(tmp_path / "a.jsonl"), JsonlSink(tmp_path / "b.jsonl")
    activities = AuditActivities({"a": a, "b": b})
    events = make_events(2)

    await ActivityEnvironment().run(activities.deliver, AuditBatch(destination="b", events=events))

    assert not a.path.exists()
    assert b.path.read_text().splitlines() == as_lines(events)


async def test_deliver_to_an_unknown_destination_is_retried_not_dropped():
    activities = AuditActivities({"a": StdoutSink()})
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(
            activities.deliver, AuditBatch(destination="gone", events=make_events(1))
        )
    assert failure.value.type == "UnknownAuditDestination"
    assert not failure.value.non_retryable
    assert "'gone' is not configured on this worker (it has: a)" in failure.value.message
