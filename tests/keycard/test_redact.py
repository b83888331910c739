"""Credentials in free text never reach the audit trail; ordinary words about them do."""

from __future__ import annotations

import pytest

from keycard.models import LifecycleEvent
from keycard.redact import MAX_TEXT, REDACTED, TRUNCATED, scrub
from tests.audit_events import make_events


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("slack says xoxb-1234567890-0987654321-AbCdEf", "slack says "),
        ("key AKIAIOSFODNN7EXAMPLE leaked", "key "),
        ("GET https://api.example.com/v1?api_key=abc123&page=2", "?api_key="),
        ("Authorization: Bearer abcdefghijklmnop", "Authorization: Bearer "),
        ("pagerduty: Token token=y_NbAkKc66ryYTWUXYEu", "Token token="),
        ("postgres://keycard:hunter2@db.internal/keycard", "postgres://"),
        ('client_secret="s3cr3t value"', "client_secret="),
        ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", "jwt "),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----", ""),
        ("my token kc_Zx9f3Q2pLmN8vT4rS6uW1yA0bC5dE7gH is broken", "my token "),
        ('403 {"dd-api-key": "abc123def", "errors": []}', '{"dd-api-key": '),
        ('{"dd-api-key": "abc123d', '{"dd-api-key": '),  # cut off mid-value
    ],
)
def test_credentials_are_redacted(text, kept):
    scrubbed = scrub(text)
    assert REDACTED in scrubbed
    assert kept + REDACTED in scrubbed or (not kept and scrubbed == REDACTED)
    for secret in ("xoxb-1234", "AKIAIOSF", "abc123", "abcdefghijklmnop", "y_NbAk", "hunter2",
                   "s3cr3t", "c2lnbmF0dXJl", "MIIE", "kc_Zx9f", "abc123d"):  # fmt: skip
        assert secret not in scrubbed


def test_ordinary_text_is_left_alone():
    text = "incident 4312: rotate tokens, then check the password policy and the API key list"
    assert scrub(text) == text


def test_values_under_secret_keys_are_redacted_recursively():
    value = {"error": "boom", "nested": [{"api_key": "abc", "n": 3}], "token": ""}
    assert scrub(value) == {"error": "boom", "nested": [{"api_key": REDACTED, "n": 3}], "token": ""}


def test_events_are_scrubbed_when_made():
    [event] = make_events(1)
    made = LifecycleEvent.model_validate(
        event.model_dump() | {"reason": "xoxb-1234567890-abcdef", "detail": {"password": "pw"}}
    )
    assert made.reason == REDACTED
    assert made.detail == {"password": REDACTED}


def test_long_text_is_cut_short_so_an_event_fits_in_its_history_memo():
    [event] = make_events(1)
    long = LifecycleEvent.model_validate(
        event.model_dump() | {"detail": {"error": "x" * 100_000, "lines": ["y" * 5000]}}
    )
    assert len(long.detail["error"]) == MAX_TEXT and long.detail["error"].endswith(TRUNCATED)
    assert len(long.detail["lines"][0]) == MAX_TEXT
    assert len(long.model_dump_json()) < 8 * 1024
