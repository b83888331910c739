"""Slack, for hooks: is someone in a user group (the `@sre-oncall` handle)."""

from __future__ import annotations

from keycard.sdk.context import IntegrationNotConfigured, current
from keycard.sdk.integrations._people import User, email_of, slack_id_of


def is_user_in_group(user: User, handle: str) -> bool:
    """Whether `user` belongs to the Slack user group with this handle (with or without @)."""
    api = current().slack
    if api is None:
        raise IntegrationNotConfigured(
            "Slack is not configured: set SLACK_BOT_TOKEN for the Keycard worker"
        )
    return api.is_user_in_group(email_of(user), slack_id_of(user), handle.strip().lstrip("@"))
