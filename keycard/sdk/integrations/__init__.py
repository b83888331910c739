"""Outside systems hooks may ask: `from keycard.sdk.integrations import pagerduty, slack, aws_sso`."""

from keycard.sdk.integrations import aws_sso, pagerduty, slack

__all__ = ["aws_sso", "pagerduty", "slack"]
