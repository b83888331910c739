"""Durations: what people type, what they are told when it is wrong, and no overflow."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import TypeAdapter, ValidationError

from keycard.durations import LONGEST, Duration, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "value"),
    [("30m", timedelta(minutes=30)), ("1h30m", timedelta(minutes=90)), ("366d", LONGEST)],
)
def test_durations_people_type(text: str, value: timedelta):
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("999999999999h", "at most 366d"),
        ("99999999999999999999999d", "at most 366d"),
        ("367d", "at most 366d"),
        ("0s", "longer than zero"),
        ("", "such as 30m"),
        ("soon", "such as 30m"),
    ],
)
def test_bad_durations_are_refused_with_a_sentence(text: str, says: str):
    with pytest.raises(ValueError, match=says):
        parse_duration(text)


@pytest.mark.parametrize("seconds", [1e30, float("nan"), float("inf"), 10**20])
def test_a_number_of_seconds_past_the_longest_is_refused(seconds: float):
    with pytest.raises(ValidationError, match="at most 366d"):
        TypeAdapter(Duration).validate_python(seconds)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        (timedelta(seconds=-5), "-5 seconds is not a duration: it must be longer than zero"),
        (timedelta(0), "0 seconds is not a duration: it must be longer than zero"),
        (-3, "-3 seconds is not a duration: it must be longer than zero"),
        (timedelta(seconds=1.5), "1.5 seconds .* use whole seconds"),
        (90.5, "90.5 seconds .* use whole seconds"),
        (timedelta(days=400), "at most 366d"),
    ],
)
def test_a_duration_from_code_gets_the_checks_a_written_one_gets(value, says: str):
    """A timedelta or number crosses into workflows as text ("1h30m"), which has neither a sign
    nor a fraction: refused here, where the caller can be told, not in the workflow."""
    with pytest.raises(ValidationError, match=says):
        TypeAdapter(Duration).validate_python(value)
    assert TypeAdapter(Duration).validate_python(timedelta(seconds=90)) == timedelta(seconds=90)
