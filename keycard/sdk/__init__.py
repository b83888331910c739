"""The SDK users' hook files import: decide requests in Python, reviewed like any code.

    from keycard.sdk import Decision, hook
    from keycard.sdk.integrations import pagerduty

    @hook
    def on_request(event):
        if pagerduty.is_on_call(event.requester):
            return Decision.approve(f"{event.requester.email} is on call")

Hooks run in the worker's hooks activity, never in workflow code. A hook that raises or times out
fails closed: nothing is approved automatically and the request waits for people.

Strategies of your own (`strategy: custom` with `module:`) subclass `Strategy`: see
keycard/sdk/strategy.py.
"""

from keycard.sdk.annotations import DECISION_HOOKS, HOOKS, OBSERVER_HOOKS, REDUCERS, hook, reducer
from keycard.sdk.context import IntegrationNotConfigured
from keycard.sdk.decision import Decision
from keycard.sdk.events import Actor, Approval, Flow, HookEvent, Person, Target
from keycard.sdk.strategy import Grant, Refused, Resolved, Strategy

__all__ = [
    "DECISION_HOOKS",
    "HOOKS",
    "OBSERVER_HOOKS",
    "REDUCERS",
    "Actor",
    "Approval",
    "Decision",
    "Flow",
    "Grant",
    "HookEvent",
    "IntegrationNotConfigured",
    "Person",
    "Refused",
    "Resolved",
    "Strategy",
    "Target",
    "hook",
    "reducer",
]
