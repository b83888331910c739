"""Auto-approve the on-call engineer; everyone else waits for a peer."""

from keycard.sdk import Decision, hook
from keycard.sdk.integrations import pagerduty


@hook
def on_request(event):
    if pagerduty.is_on_call(event.requester):
        return Decision.approve(f"{event.requester.email} is on call in PagerDuty")
    return None  # not on call: one of the flow's approvers decides
