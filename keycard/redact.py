"""Keep secrets out of the audit trail: tokens and keys in free text become `[redacted]`.

Audit events travel far (files, Firehose, S3, a SIEM), so anything that looks like a credential is
removed before an event exists — a hook's error message quoting a URL with an API key, a reason
with a pasted token. Overlong text is cut short too, so an event always fits where it is recorded
(the workflow's history keeps each event in a memo, which Temporal caps in size). Pure and
deterministic: workflows call it.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar, cast

T = TypeVar("T")

REDACTED = "[redacted]"
MAX_TEXT = 2000  # characters of one string in an event; longer ones end in TRUNCATED
TRUNCATED = "…[truncated]"

# Keys whose values are secrets whatever they look like.
SECRET_KEY = re.compile(
    r"(?i)(token|secret|passw(or)?d|api[_-]?key|authorization|credential|private[_-]?key|cookie)"
)

# (pattern, replacement): credentials in well-known shapes, wherever they appear in text.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(
            r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|$)", re.S
        ),
        REDACTED,
    ),
    (re.compile(r"\bxox[a-z]-[A-Za-z0-9-]{8,}"), REDACTED),  # Slack bot/user tokens
    (re.compile(r"\bxapp-[A-Za-z0-9-]{8,}"), REDACTED),  # Slack app-level tokens
    (re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),  # AWS access key ids
    (re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}\b"), REDACTED),  # GitHub tokens
    (re.compile(r"\bkc_[A-Za-z0-9_-]{16,}"), REDACTED),  # Keycard API tokens
    (re.compile(r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+"), REDACTED),  # JWTs
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    (re.compile(r"(?i)\btoken\s+token=[^\s,;]+"), f"Token token={REDACTED}"),  # PagerDuty
    (re.compile(r"(?i)(://)[^/\s:@]+:[^/\s@]+@"), rf"\1{REDACTED}@"),  # user:password@host
    (
        re.compile(
            r"(?i)\b([a-z0-9_-]*(?:token|secret|passw(?:or)?d|api[_-]?key|signature)[a-z0-9_-]*)"
            # key=value, key: value, and JSON's "key": "value" (a cut-off value too)
            r"(\"?\s*[=:]\s*)(\"[^\"]*\"?|'[^']*'?|[^\s&,;\"']+)"
        ),
        rf"\1\2{REDACTED}",
    ),
]


def scrub_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - len(TRUNCATED)] + TRUNCATED
    return text


def scrub(value: T) -> T:
    """The value with every secret-looking string redacted and every long one shortened,
    recursively through dicts and lists; of the same type."""
    return cast(T, _scrub(value))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and SECRET_KEY.search(key) and isinstance(item, str) and item
            else _scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(_scrub(item) for item in value)
    return value
