"""AWS IAM Identity Center, for hooks: is someone in a group (by the group's display name)."""

from __future__ import annotations

from keycard.sdk.context import IntegrationNotConfigured, current
from keycard.sdk.integrations._people import User, email_of


def is_user_in_group(user: User, group_name: str) -> bool:
    """Whether the Identity Center user with this email belongs to the group `group_name`."""
    api = current().aws_sso
    if api is None:
        raise IntegrationNotConfigured("AWS Identity Center is not configured for the worker")
    return api.is_user_in_group(email_of(user), group_name)
