"""PagerDuty, for hooks: who is on call, and is something on fire.

Schedules, escalation policies and services are PagerDuty ids (the `PABC123` in their URLs).
The worker reads PAGERDUTY_API_KEY (and PAGERDUTY_API_URL for a non-US service region).
"""

from __future__ import annotations

from keycard.sdk.context import IntegrationNotConfigured, PagerDutyApi, current
from keycard.sdk.events import Person
from keycard.sdk.integrations._people import User, as_list, email_of

OPEN_STATUSES = ("triggered", "acknowledged")


def _api() -> PagerDutyApi:
    api = current().pagerduty
    if api is None:
        raise IntegrationNotConfigured(
            "PagerDuty is not configured: set PAGERDUTY_API_KEY for the Keycard worker"
        )
    return api


def is_on_call(
    user: User,
    schedules: str | list[str] | None = None,
    escalation_policies: str | list[str] | None = None,
) -> bool:
    """Whether `user` is on call right now: in any of these schedules or escalation policies,
    or anywhere when neither is given. Someone PagerDuty does not know is not on call."""
    return _api().is_on_call(email_of(user), as_list(schedules), as_list(escalation_policies))


def users_on_call(
    schedules: str | list[str] | None = None,
    escalation_policies: str | list[str] | None = None,
) -> list[Person]:
    """Everyone on call right now in these schedules or escalation policies (or anywhere)."""
    return _api().users_on_call(as_list(schedules), as_list(escalation_policies))


def has_incident(
    service: str | list[str] | None = None, statuses: tuple[str, ...] | list[str] = OPEN_STATUSES
) -> bool:
    """Whether there is an open (triggered or acknowledged) incident, on these services or any."""
    return _api().has_incident(as_list(service), list(statuses))
