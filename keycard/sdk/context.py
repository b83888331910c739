"""The outside systems a running hook may ask, set by the hooks activity for the duration of a call.

The SDK's integration modules only read this context, so importing `keycard.sdk` stays pure (no
HTTP client is built or imported); the worker builds the real clients and tests inject fakes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from keycard.sdk.events import Person


class IntegrationNotConfigured(RuntimeError):
    """A hook asked an outside system the worker has no credentials for."""


class PagerDutyApi(Protocol):
    def is_on_call(
        self, email: str, schedules: list[str], escalation_policies: list[str]
    ) -> bool: ...

    def users_on_call(
        self, schedules: list[str], escalation_policies: list[str]
    ) -> list[Person]: ...

    def has_incident(self, services: list[str], statuses: list[str]) -> bool: ...


class SlackApi(Protocol):
    def is_user_in_group(self, email: str, slack_user_id: str | None, handle: str) -> bool: ...


class IdentityCenterApi(Protocol):
    def is_user_in_group(self, email: str, group_name: str) -> bool: ...


@dataclass(frozen=True)
class Integrations:
    pagerduty: PagerDutyApi | None = None
    slack: SlackApi | None = None
    aws_sso: IdentityCenterApi | None = None


_NONE = Integrations()
_current: ContextVar[Integrations | None] = ContextVar("keycard_integrations", default=None)


@contextmanager
def using(integrations: Integrations) -> Iterator[None]:
    token = _current.set(integrations)
    try:
        yield
    finally:
        _current.reset(token)


def current() -> Integrations:
    return _current.get() or _NONE
