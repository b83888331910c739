"""Names shared by workflows, activities and clients: task queue, ids, search attributes, timeouts.

Activities call workflows (and workflows call activities) by these names, so neither side has to
import the other, and a rename is one edit.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from temporalio.common import RetryPolicy, SearchAttributeKey, SearchAttributePair

if TYPE_CHECKING:
    from keycard.config import SessionsPolicy

DEFAULT_TASK_QUEUE = "keycard"


def task_queue() -> str:
    return os.environ.get("KEYCARD_TASK_QUEUE", DEFAULT_TASK_QUEUE)


# --- workflow types, handler names and ids -----------------------------------------------------

ACCESS_REQUEST_WORKFLOW = "AccessRequestWorkflow"
REQUEST_SUBMITTED = "submitted"
REQUEST_STATUS = "status"
REQUEST_REFUSED = "refused"  # signal: a front door reports a decision its validator turned down
REFUSAL_AUDITED = "audited"  # second detail of an update's refusal the workflow recorded itself
GRANT_WORKFLOW = "GrantWorkflow"
GRANT_ACQUIRE = "acquire"  # update, before lease signals: kept for requests that took leases so
GRANT_RELEASE = "release"  # update, likewise
# Lease signals between a request and its GrantWorkflow (see keycard.models: LeaseRequest ...).
LEASE_TAKE = "lease.take"  # request -> grant
LEASE_RETURN = "lease.return"  # request -> grant
LEASE_GRANTED = "lease.granted"  # grant -> request
LEASE_FAILED = "lease.failed"  # grant -> request
LEASE_RETURNED = "lease.returned"  # grant -> request (a ReleaseResult)
# workflow.patched ids, named once so a typo cannot fork a workflow's history.
PATCH_LEASE_SIGNALS = "lease-signals"
PATCH_UPDATES_LAST = "updates-last"  # see workflows/runner.py
PATCH_LOCAL_CALLS = "local-calls"  # resolve, leases.take and exists as local activities
# Requests deliver in rounds (activities/delivery.py), write a memo only for an event no round
# carries, and write search attributes only when they change. A request or grant with this marker
# has every patch above too, without their markers (each marker also costs a search attribute
# write): so a new workflow records one marker, not five.
PATCH_V6 = "keycard-v6"
# Requests only (implies PATCH_V6): a decision that arrives as a signal is recorded `via: signal`,
# whatever door its actor names; and the `refused` signal is recorded as the signal's report
# (actor `signal:refused`, the person it names under `attempted_by`), never as that person's act.
PATCH_V7 = "keycard-v7"
REFUSED_SIGNAL_ACTOR = "signal:refused"
# Requests and grants (implies PATCH_V7): a lease says whether its flow ends AWS sessions, and a
# grant that removes access with such a lease has the permission set's SessionPolicyWorkflow deny
# the sessions issued before the removal (workflows/sessions.py).
PATCH_V8 = "keycard-v8"
# Grants only (implies PATCH_V8): the access is made by `leases.grant`, which tells the waiting
# requests `lease.granted` itself as soon as the cloud confirms, instead of the grant's next
# workflow task doing it: one workflow task less between an approval and ACTIVE. A failed grant
# is then removed as well (an attempt may have made the access and told a request before failing).
PATCH_V9 = "keycard-v9"
# Requests only (implies PATCH_V8): once its approvers are known (Slack user groups looked up,
# get_approvers heard), a request whose approval steps can never be met, because the requester
# may not approve their own request, is refused at once, saying why, instead of waiting to expire.
PATCH_V10 = "keycard-v10"
# Requests naming several targets only (so every earlier history replays unchanged): one lease per
# target, each granted, renewed and returned by its grant key; partial failure is per target.
PATCH_V11 = "keycard-v11"
# Grants only (implies PATCH_V9): a removal ends sessions if the leases it removes asked to (as
# they stood when it began), and a lease taken while it ran keeps its own wish for when its
# access ends; before, a removal that was still ending sessions forgot that wish.
PATCH_V12 = "keycard-v12"
# Requests only (implies PATCH_V10): each lifecycle event carries the hash of the request's
# previous event and its own (keycard/audit_chain.py), a chain `keycard audit verify` checks.
PATCH_V13 = "keycard-v13"
# Requests only, of flows with `activity` (a setting no earlier request has): once its access has
# ended and CloudTrail has had the flow's `activity.delay`, the request reads what was done with
# each grant (`aws.activity`), records `access.activity`, and only then closes.
PATCH_V14 = "keycard-v14"
# The config record only: its work runs through a cancel request from Temporal (a delivery in
# flight is not cancelled), where before such a request while it delivered ended the record.
PATCH_V15 = "keycard-v15"
READ_ACTIVITY = "aws.activity"
ACTIVITY_TIMEOUT = timedelta(minutes=10)
ACTIVITY_HEARTBEAT = timedelta(minutes=1)
# Throttling and outages are retried for a while; then the request records why it could not read,
# and closes: a summary for auditors never holds a request open for good.
ACTIVITY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=2),
    maximum_attempts=8,
)
# Ending sessions: one SessionPolicyWorkflow per permission set, the single writer of its inline
# policy (keycard/session_policy.py), shared by every grant of that permission set.
SESSION_POLICY_WORKFLOW = "SessionPolicyWorkflow"
SESSIONS_END = "sessions.end"  # grant -> session policy (EndSessions)
SESSIONS_ENDED = "sessions.ended"  # session policy -> grant (SessionsAnswer)

# The drift sweep (workflows/drift.py): a Temporal Schedule starts one DriftSweepWorkflow every
# `drift.every`; an assignment Keycard granted and no lease holds is removed through its
# GrantWorkflow (`grant.reconcile`), the assignment's single writer.
DRIFT_SWEEP_WORKFLOW = "DriftSweepWorkflow"
DRIFT_SCHEDULE_ID = "keycard-drift-sweep"
GRANT_RECONCILE = "grant.reconcile"  # sweep -> grant (Reconcile)
DRIFT_ACTOR = "drift-sweep"

# What each worker loaded (workflows/config.py): one ConfigWorkflow per task queue, which every
# worker signals at start with its config's digests; a config unlike the last is audited as
# `config.loaded`.
CONFIG_WORKFLOW = "ConfigWorkflow"
CONFIG_LOADED = "config.loaded"  # worker -> config (ConfigLoaded)
CONFIG_CURRENT = "config.current"  # query: the last ConfigLoaded
CONFIG_ACTOR = "config-load"


CONFIG_WORKFLOW_PREFIX = "keycard-config-"


def config_workflow_id(task_queue: str) -> str:
    return f"{CONFIG_WORKFLOW_PREFIX}{task_queue}"


_ID_ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"  # no l/o/0/1: read aloud, typed from Slack


def new_request_id() -> str:
    return "req-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def request_id_from(seed: bytes) -> str:
    """A request id derived from `seed` (an idempotency key and its caller): same seed, same id.

    16 letters of a 32-letter alphabet keep 80 bits of a SHA-256: different seeds do not collide
    in practice.
    """
    number = int.from_bytes(hashlib.sha256(seed).digest()[:10], "big")
    letters = []
    for _ in range(16):
        number, index = divmod(number, len(_ID_ALPHABET))
        letters.append(_ID_ALPHABET[index])
    return "req-" + "".join(letters)


def grant_workflow_id(grant_key: str) -> str:
    return f"grant:{grant_key}"


def session_policy_workflow_id(
    instance_arn: str, permission_set_arn: str, policy: SessionsPolicy | None = None
) -> str:
    """`sessions:<instance id>:<permission set id>`: one writer per permission set's inline policy;
    `sessions:<instance id>:policy:<path><name>` for a customer-managed policy, which several
    permission sets may reference: one writer per policy, whichever permission set it serves."""
    instance = instance_arn.rsplit("/", 1)[-1]
    if policy is not None:
        return f"sessions:{instance}:policy:{policy.path}{policy.name}"
    permission_set = permission_set_arn.rsplit("/", 1)[-1]
    return f"sessions:{instance}:{permission_set}"


# --- activity names (implementations live in activities/) --------------------------------------

TAKE_LEASE = "leases.take"
GRANT_AND_TELL = "leases.grant"  # the strategy's grant, then `lease.granted` to each request
ACQUIRE_LEASE = "leases.acquire"  # before lease signals (waited on the grant: held a slot)
RELEASE_LEASE = "leases.release"  # likewise
DELIVER_AUDIT = "audit.deliver"
# Every lifecycle event is also written into the workflow's history (as a memo update under this
# key) the moment it happens, so `keycard audit export` can rebuild the trail from Temporal alone.
AUDIT_MEMO_KEY = "keycard.audit.event"
# At most this many events per delivery activity; sinks split further to fit their APIs.
AUDIT_BATCH_MAX = 100
SEND_NOTIFICATION = "notify.send"
# One activity per round takes a request's new events to every audit destination and to chat at
# once (activities/delivery.py). A destination that fails in a round falls behind and catches up
# alone, through audit.deliver / notify.send with their retries, then rejoins the rounds.
DELIVER_ROUND = "delivery.round"
NOTIFY_LANE = "notify"  # the chat lane's name beside the audit destinations'
RESOLVE_SLACK_APPROVERS = "slack.resolve_approvers"
REQUEST_END_SESSIONS = "sessions.request_end"  # signal-with-start the SessionPolicyWorkflow
END_SESSIONS = "aws_sso.end_sessions"  # write the deny entries and provision
PRUNE_SESSIONS = "aws_sso.prune_sessions"  # remove the entries nothing can match any more
GROUP_SESSION_SCOPES = "aws_sso_group.session_scopes"  # the permission sets a group is assigned
INSPECT_DRIFT = "drift.inspect"  # list each target's assignments and the grants behind them
RECONCILE_GRANT = "drift.reconcile"  # signal-with-start a GrantWorkflow to remove an orphan
DRIFT_TIMEOUT = timedelta(minutes=10)
DRIFT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=3,
)

# --- search attributes: the Temporal UI's request list filters on these -------------------------

SA_REQUESTER = SearchAttributeKey.for_keyword("KeycardRequester")
SA_FLOW = SearchAttributeKey.for_keyword("KeycardFlow")
SA_TARGET = SearchAttributeKey.for_keyword("KeycardTarget")
SA_STATE = SearchAttributeKey.for_keyword("KeycardState")
# Who may read a request through the API without being an admin (policy.may_read): the people
# who may decide on it (kept current as routing changes it), and the service that asked for it.
SA_APPROVERS = SearchAttributeKey.for_keyword_list("KeycardApprovers")
SA_SUBMITTED_BY = SearchAttributeKey.for_keyword("KeycardSubmittedBy")
SEARCH_ATTRIBUTES = (SA_REQUESTER, SA_FLOW, SA_TARGET, SA_STATE, SA_APPROVERS, SA_SUBMITTED_BY)


def request_search_attributes(
    *,
    requester: str,
    flow: str,
    target: str,
    state: str,
    approvers: Sequence[str] | None = None,
    submitted_by: str | None = None,
) -> list[SearchAttributePair[Any]]:
    """A request's search attributes, built here only: set by the client when it starts the
    request, kept current by the workflow (which leaves out what it never changes: None)."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(SA_REQUESTER, requester),
        SearchAttributePair(SA_FLOW, flow),
        SearchAttributePair(SA_TARGET, target),
        SearchAttributePair(SA_STATE, state),
    ]
    if approvers is not None:
        pairs.append(SearchAttributePair(SA_APPROVERS, sorted(approvers)))
    if submitted_by is not None:
        pairs.append(SearchAttributePair(SA_SUBMITTED_BY, submitted_by))
    return pairs


# --- timeouts and retry policies, in one place -------------------------------------------------

RESOLVE_TIMEOUT = timedelta(seconds=30)
RESOLVE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
# Granting waits for AWS to report the assignment provisioned; the activity heartbeats meanwhile.
GRANT_TIMEOUT = timedelta(minutes=10)
GRANT_HEARTBEAT = timedelta(seconds=30)
GRANT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=8,
)
# A revoke round is a bounded number of attempts; the grant workflow starts another round after a
# capped pause, forever, and reports each failed round so people are alerted.
REVOKE_ROUND_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
)
REVOKE_ROUND_PAUSE_MIN = timedelta(seconds=5)
REVOKE_ROUND_PAUSE_MAX = timedelta(minutes=5)
# Lease calls go to the grant workflow; they are cheap but may wait for a grant or revoke.
LEASE_TIMEOUT = timedelta(minutes=15)
LEASE_HEARTBEAT = timedelta(seconds=30)
LEASE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
)
# leases.take only hands a signal to Temporal; it retries a Temporal outage for a bounded time.
TAKE_LEASE_TIMEOUT = timedelta(seconds=30)
# leases.grant gives each request's `lease.granted` signal this long; one not sent by then is sent
# by the grant itself, so telling never holds the activity once the access exists.
TELL_TIMEOUT = timedelta(seconds=10)
TAKE_LEASE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
)
# A request waits this long for its grant to say "granted" or "failed" (the grant's own AWS calls
# are bounded well within it); past it the request fails and returns the lease.
GRANT_WAIT = timedelta(minutes=30)
# How long a release waits for the assignment to be gone before it reports back "still trying"
# (before lease signals); and how long a returning request waits for any answer before it asks
# again (a grant that vanished answers by the signal failing).
RELEASE_WAIT = timedelta(minutes=2)
# A lease that passed its end without being returned (its request was terminated, or is stuck)
# is dropped this long after its end: access never outlives its approved time by more.
LEASE_END_GRACE = timedelta(seconds=30)
# Before lease signals, leases were renewed by activity and dropped only this long after expiry.
ORPHAN_LEASE_GRACE = timedelta(minutes=10)
GRANT_IDLE_TIMEOUT = timedelta(minutes=1)
# Ending sessions: an inline-policy write plus provisioning, which AWS finishes in seconds to a
# minute; the activity heartbeats while it waits. A grant waits SESSIONS_WAIT for the policy's
# word before it reports the sessions not ended.
SESSIONS_TIMEOUT = timedelta(minutes=10)
SESSIONS_HEARTBEAT = timedelta(seconds=30)
# Retried through throttling and outages for up to SESSIONS_WAIT in all, then the grant hears the
# error; a write AWS refuses for good (too large, not allowed, unreadable) fails at once.
SESSIONS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    maximum_interval=timedelta(minutes=1),
    non_retryable_error_types=["PolicyTooLarge", "AccessDenied", "InvalidPolicy"],
)
SESSIONS_WAIT = timedelta(minutes=15)
# AWS stamps a session's aws:TokenIssueTime by its own clock; the deny reaches this far past the
# removal the worker saw, and the grant makes the access again no sooner, so a worker clock this
# far behind AWS's still denies every session of the ended grant and none of the next.
SESSIONS_CLOCK_MARGIN = timedelta(seconds=2)
# A pruning write waits this long past an entry's expiry, for sessions issued at its last second.
SESSIONS_PRUNE_GRACE = timedelta(minutes=1)

# Audit and notification delivery run beside the lifecycle and retry until they succeed, so an
# outage delays only the delivery, never a grant or a revocation.
DELIVERY_TIMEOUT = timedelta(seconds=60)
# In a round, one destination gets this long for all its events; past it, it falls behind and
# catches up alone. The round itself gets the time of a lone delivery, ample beyond that: a worker
# busy enough to run late should not have a round time out and be sent twice.
ROUND_LANE_TIMEOUT = timedelta(seconds=10)
ROUND_TIMEOUT = DELIVERY_TIMEOUT
DELIVERY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
)

# --- metrics (Prometheus through the Temporal runtime, KEYCARD_METRICS_ADDRESS) ---------------
# Counters are counted where they happen (workflow code counts nothing while it replays; the
# activity counts in activities/metrics.py), gauges by each worker every METRICS_INTERVAL. Exported with `_total` on counters: docs/deployment.md.
METRIC_EVENTS = "keycard_events"  # {type, flow}: every audit event, as it is made
METRIC_REVOKE_RETRIES = "keycard_revoke_retries"  # {strategy}: failed attempts to remove access
METRIC_HOOK_FAILURES = "keycard_hook_failures"  # {flow, hook}
METRIC_ACTIVE_GRANTS = "keycard_active_grants"  # requests ACTIVE now (visibility)
METRIC_PENDING_REQUESTS = "keycard_pending_requests"  # requests PENDING now (visibility)
METRIC_AUDIT_BACKLOG = "keycard_audit_backlog_events"  # {destination}: refused, being retried
METRIC_AUDIT_OLDEST = "keycard_audit_oldest_undelivered_seconds"  # {destination}
METRICS_INTERVAL = timedelta(seconds=15)

# --- hooks (users' Python, run in activities) --------------------------------------------------

EVALUATE_REQUEST_HOOKS = "hooks.evaluate_request"
CHECK_APPROVAL_HOOK = "hooks.check_approval"
RUN_OBSERVER_HOOKS = "hooks.observe"
# One hook call; a hook that takes longer has failed (closed) and the request goes to people.
HOOK_CALL_TIMEOUT = timedelta(seconds=10)
# An activity runs at most a few hooks in turn; past this the workflow treats them all as failed.
HOOKS_ACTIVITY_TIMEOUT = timedelta(seconds=45)
HOOKS_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=2,
)
