"""keycard.yaml's sections besides the flows: `aws`, `api` (the HTTP API's tokens), `audit` (where
lifecycle events go) and `drift` (the sweep for access no lease holds)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Literal, Self

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from keycard.durations import Duration
from keycard.schema import (
    Email,
    EnvRef,
    Name,
    _email,
    _Strict,
)


class AwsSettings(_Strict):
    """Where Identity Center lives. Credentials and endpoint come from the usual AWS settings."""

    region: str | None = Field(default=None, description="default: AWS_REGION / AWS profile")
    sso_instance_arn: str | None = Field(default=None, description="default: the only instance")
    identity_store_id: str | None = Field(default=None, description="default: the instance's")


# --- the HTTP API ------------------------------------------------------------------------------

TOKEN_HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")


class ApiToken(_Strict):
    """One bearer token of the HTTP API. Only its hash is written here; `keycard token create`
    prints a new token once, with the line to paste."""

    hash: str = Field(description="sha256:<64 hex digits> of the token, never the token itself")
    email: str = Field(description="who the token acts as")
    role: Literal["user", "admin", "service"] = Field(
        default="user",
        description="user; admin (approver of last resort); service (requests for a named user)",
    )
    name: str = Field(default="", description="what the token is for, e.g. ci-deploy")

    @field_validator("hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("kc_"):
            raise ValueError(
                "this is a token, not its hash: never write tokens in keycard.yaml; "
                "paste the hash line `keycard token create` printed"
            )
        if not TOKEN_HASH_PATTERN.match(value):
            raise ValueError("must be sha256: followed by 64 lower-case hex digits")
        return value

    @field_validator("email")
    @classmethod
    def _valid_email(cls, value: str) -> str:
        return _email(value)


class ApiSettings(_Strict):
    """The HTTP API's bearer tokens (hashes only), and who is an admin when signed in to the web
    console with single sign-on (a token carries its own role)."""

    tokens: list[ApiToken] = Field(default_factory=list)
    admins: list[Email] = Field(
        default_factory=list, description="people who are admins when they sign in with SSO"
    )

    @field_validator("tokens")
    @classmethod
    def _distinct(cls, value: list[ApiToken]) -> list[ApiToken]:
        hashes = [t.hash for t in value]
        if len(set(hashes)) != len(hashes):
            raise ValueError("the same token hash is listed twice")
        return value


# --- audit: where lifecycle events are delivered --------------------------------------------

DEFAULT_AUDIT_DESTINATION = "default"


class _AuditDestinationBase(_Strict):
    name: Name | None = Field(
        default=None, description="identifies the destination in requests (default: its type)"
    )

    @property
    def key(self) -> str:
        return self.name or self.type  # type: ignore[attr-defined]


class JsonlDestination(_AuditDestinationBase):
    """One JSON object per line, appended to a local file."""

    type: Literal["jsonl"]
    path: str | None = Field(
        default=None, description="default: $KEYCARD_AUDIT_JSONL or <state dir>/audit.jsonl"
    )


class StdoutDestination(_AuditDestinationBase):
    """One structlog JSON line per event on the worker's standard output."""

    type: Literal["stdout"]


class _AwsDestination(_AuditDestinationBase):
    region: str | None = Field(default=None, description="default: aws.region, then AWS_REGION")
    endpoint_url: str | None = Field(
        default=None, description="for a local stand-in such as moto; default: AWS_ENDPOINT_URL"
    )


class FirehoseDestination(_AwsDestination):
    """Amazon Data Firehose (PutRecordBatch); each record is one JSON line."""

    type: Literal["kinesis_firehose"]
    delivery_stream: str = Field(min_length=1)


class KinesisDestination(_AwsDestination):
    """A Kinesis data stream (PutRecords), partitioned by request so a request's events share a shard."""

    type: Literal["kinesis"]
    stream: str = Field(min_length=1)


class S3Destination(_AwsDestination):
    """JSONL objects under `<prefix>YYYY/MM/DD/`, one per delivered batch, with keys that a
    redelivery overwrites rather than duplicates."""

    type: Literal["s3"]
    bucket: str = Field(min_length=1)
    prefix: str = "keycard/audit/"


class HttpDestination(_AuditDestinationBase):
    """POST JSON to a URL: a log intake (Datadog, Splunk HEC, ...) or any SIEM webhook."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://", description="query parameters may carry e.g. ddsource")
    headers: dict[str, EnvRef] = Field(
        default_factory=dict, description="header values are environment references: ${API_KEY}"
    )
    batch: bool = Field(default=True, description="POST a JSON array per batch; false: one object")
    max_batch: int = Field(default=100, ge=1, le=1000)
    timeout: Duration = Field(default=timedelta(seconds=10))


AuditDestination = Annotated[
    JsonlDestination
    | StdoutDestination
    | FirehoseDestination
    | KinesisDestination
    | S3Destination
    | HttpDestination,
    Field(discriminator="type"),
]


AUDIT_TYPES = {"jsonl", "stdout", "kinesis_firehose", "kinesis", "s3", "http"}


class AuditConfig(_Strict):
    """Where the audit trail goes. Left out, events go to the worker's own log (`default`): the
    stdout stream, or .keycard/audit.jsonl under `keycard dev`. Each destination is delivered on
    its own, so one that is down delays only itself."""

    destinations: list[AuditDestination] | None = None

    @model_validator(mode="after")
    def _unique(self) -> Self:
        keys = [d.key for d in self.destinations or []]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(
                f"audit destination names must be unique (give each a `name`); repeated: "
                f"{', '.join(dupes)}"
            )
        return self

    @property
    def destination_names(self) -> list[str]:
        """What a new request snapshots: it is delivered to exactly these, whatever changes later."""
        if self.destinations is None:
            return [DEFAULT_AUDIT_DESTINATION]
        return [d.key for d in self.destinations]


class DriftSettings(_Strict):
    """The drift sweep: AWS compared with the grants Keycard holds, on a Temporal Schedule."""

    every: Duration | None = Field(
        default=timedelta(minutes=15),
        description="how often the sweep runs (at least 1m); null: never (the schedule is removed)",
    )

    @field_validator("every")
    @classmethod
    def _not_too_often(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value < timedelta(minutes=1):
            raise ValueError("must be at least 1m: each sweep lists every target's assignments")
        return value
