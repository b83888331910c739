"""Human durations ("30m", "1h30m", "2d") as timedeltas, in config files and on the command line."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_PATTERN = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
DURATION_PATTERN = r"^(?=\d)(\d+d)?(\d+h)?(\d+m)?(\d+s)?$"
# No grant, flow or wait in Keycard is longer; past it a number is a typo (or an attack), and
# Python's timedelta would overflow a little further on.
LONGEST = timedelta(days=366)


def parse_duration(text: str) -> timedelta:
    """Parse "90m", "1h30m" or "2d" into a timedelta; raise ValueError saying what is accepted."""
    cleaned = text.strip().lower().replace(" ", "")
    match = _PATTERN.match(cleaned)
    if not cleaned or not match or not any(match.groups()):
        raise ValueError(
            f"{text!r} is not a duration: use a number with a unit, such as 30m, 1h, 1h30m or 2d"
        )
    days, hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = days * 86400 + hours * 3600 + minutes * 60 + seconds  # exact, and never overflows
    if total <= 0:
        raise ValueError(f"{text!r} is not a duration: it must be longer than zero")
    return _bounded(timedelta(seconds=min(total, _LONGEST_SECONDS + 1)), text)


_LONGEST_SECONDS = int(LONGEST.total_seconds())


def _bounded(value: timedelta, text: object) -> timedelta:
    if value > LONGEST:
        raise ValueError(
            f"{text!r} is too long: a duration is at most {format_duration(LONGEST)}, "
            "such as 30m, 1h or 2d"
        )
    return value


def format_duration(value: timedelta) -> str:
    """The shortest exact spelling: 1h30m, 45s, 2d."""
    remaining = int(value.total_seconds())
    if remaining <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def _coerce(value: object) -> object:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        # A bare number in JSON/YAML is read as seconds, the unit Temporal itself uses.
        if value != value or abs(value) > _LONGEST_SECONDS:  # NaN, or past what we accept
            raise ValueError(
                f"{value!r} seconds is not a duration Keycard accepts: at most "
                f"{format_duration(LONGEST)}, such as 30m, 1h or 2d"
            )
        value = timedelta(seconds=value)
    if isinstance(value, timedelta):
        # A timedelta from Python code gets the checks a written duration gets: it crosses into
        # workflows as text ("1h30m"), which has neither signs nor fractions.
        if value <= timedelta(0):
            raise ValueError(
                f"{value.total_seconds():g} seconds is not a duration: it must be longer than zero"
            )
        if value.microseconds:
            raise ValueError(
                f"{value.total_seconds():g} seconds is not a duration Keycard accepts: use whole "
                "seconds, such as 30s, 30m or 1h"
            )
        return _bounded(value, format_duration(value))
    return value


Duration = Annotated[
    timedelta,
    BeforeValidator(_coerce),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["30m", "1h", "1h30m", "2d"]}
    ),
]
