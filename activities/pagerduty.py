"""PagerDuty for hooks, through the `pagerduty` library's REST API v2 client.

Built by worker.py from PAGERDUTY_API_KEY (and PAGERDUTY_API_URL for the EU service region or a
proxy; the client accepts only https URLs). Calls are synchronous: hooks run in worker threads.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping

import pagerduty
import structlog

from keycard.sdk.events import Person

log = structlog.get_logger(__name__)

# A hook has seconds, not minutes: fail fast and let the request go to people.
REQUEST_TIMEOUT_SECONDS = 5
NETWORK_ATTEMPTS = 1
RATE_LIMIT_RETRIES = 2


def rest_client(
    api_key: str, base_url: str | None = None, verify: ssl.SSLContext | bool = True
) -> pagerduty.RestApiV2Client:
    """A REST API v2 client tuned for hooks: short timeout, few retries, never a retry-forever."""
    client = pagerduty.RestApiV2Client(api_key, base_url=base_url, verify=verify)
    client.timeout = REQUEST_TIMEOUT_SECONDS
    client.max_network_attempts = NETWORK_ATTEMPTS
    # By default the library retries 429 without limit; a hook would hang until its time limit.
    client.retry = {429: RATE_LIMIT_RETRIES}
    client.sleep_timer = 0.2  # one quick retry of a network blip, then fail (closed)
    return client


def settings_problem(environ: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with the PagerDuty settings (the client would refuse them at start-up), or
    None. Without PAGERDUTY_API_KEY, PagerDuty is simply off."""
    env = os.environ if environ is None else environ
    url = env.get("PAGERDUTY_API_URL") or ""
    if env.get("PAGERDUTY_API_KEY") and url and not url.startswith("https://"):
        return (
            f"PAGERDUTY_API_URL must be an https:// URL (the PagerDuty client refuses others), "
            f"not {url!r}; unset it for PagerDuty's own service"
        )
    return None


class PagerDutyDirectory:
    """Who is on call and what is burning, as hooks ask it (keycard.sdk.context.PagerDutyApi)."""

    def __init__(self, client: pagerduty.RestApiV2Client):
        self._client = client

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, verify: ssl.SSLContext | bool = True
    ) -> PagerDutyDirectory | None:
        env = os.environ if environ is None else environ
        api_key = env.get("PAGERDUTY_API_KEY")
        if not api_key:
            return None
        problem = settings_problem(env)
        if problem:
            raise ValueError(problem)
        return cls(rest_client(api_key, env.get("PAGERDUTY_API_URL") or None, verify))

    def user_id(self, email: str) -> str | None:
        """PagerDuty's id for the user with this email, or None if PagerDuty has no such user."""
        for user in self._client.iter_all("users", params={"query": email}):
            if str(user.get("email", "")).lower() == email.lower():
                return user["id"]
        return None

    def is_on_call(self, email: str, schedules: list[str], escalation_policies: list[str]) -> bool:
        user_id = self.user_id(email)
        if user_id is None:
            log.info("pagerduty.unknown_user", email=email)
            return False
        params = self._filters(schedules, escalation_policies) | {"user_ids": [user_id]}
        return any(True for _ in self._client.iter_all("oncalls", params=params))

    def users_on_call(self, schedules: list[str], escalation_policies: list[str]) -> list[Person]:
        params = self._filters(schedules, escalation_policies) | {"include": ["users"]}
        people: dict[str, Person] = {}
        for oncall in self._client.iter_all("oncalls", params=params):
            user = oncall.get("user") or {}
            email = str(user.get("email") or "").lower()
            if email and email not in people:
                people[email] = Person(email=email, name=user.get("name") or user.get("summary"))
        return list(people.values())

    def has_incident(self, services: list[str], statuses: list[str]) -> bool:
        params: dict[str, object] = {"statuses": list(statuses), "limit": 1}
        if services:
            params["service_ids"] = list(services)
        incidents = self._client.rget("incidents", params=params)
        return bool(incidents)

    @staticmethod
    def _filters(schedules: list[str], escalation_policies: list[str]) -> dict[str, object]:
        params: dict[str, object] = {}
        if schedules:
            params["schedule_ids"] = list(schedules)
        if escalation_policies:
            params["escalation_policy_ids"] = list(escalation_policies)
        return params
