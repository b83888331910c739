"""What `keycard doctor` finds: each finding OK, WARN or FAIL with one sentence saying what was
found and what to do; and the wording its checks share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    level: Level
    check: str
    message: str


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)

    def add(self, level: Level, check: str, message: str) -> None:
        self.findings.append(Finding(level, check, message))

    def ok(self, check: str, message: str) -> None:
        self.add(Level.OK, check, message)

    def warn(self, check: str, message: str) -> None:
        self.add(Level.WARN, check, message)

    def fail(self, check: str, message: str) -> None:
        self.add(Level.FAIL, check, message)

    @property
    def failed(self) -> bool:
        return any(f.level is Level.FAIL for f in self.findings)

    def of(self, level: Level) -> list[Finding]:
        return [f for f in self.findings if f.level is level]


POLICY_HINT = "the minimal policy is in deploy/iam-policy.json (or `keycard doctor --iam-policy`)"


CONNECT_TIMEOUT = 10.0


STRATEGY_CHECK_TIMEOUT = 20.0  # a strategy's own check (Okta: one call per target)


# AWS never lets a permission set's session be shorter than this.
AWS_MIN_SESSION = timedelta(hours=1)


def connect_problem(err: BaseException) -> str:
    """The useful part of a connection error, which arrives as a long transport-level dump."""
    text = str(err)
    for needle, meaning in (
        ("ConnectionRefused", "connection refused"),
        ("dns error", "the host name does not resolve"),
        ("failed to lookup address", "the host name does not resolve"),
        ("nauthenticated", "the server rejected the credentials"),
        ("certificate", "the TLS handshake failed"),
        ("InvalidContentType", "the TLS handshake failed (plain-text server, or TLS expected?)"),
    ):
        if needle in text:
            return meaning
    if isinstance(err, TimeoutError):
        return f"no answer within {CONNECT_TIMEOUT:g}s"
    return short(err)


def short(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
