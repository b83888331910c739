"""The request's activity calls, typed: each names its activity, input and result, and carries the
timeouts and retries of keycard/temporal.py, so the workflow's code says what it asks for.

The commands they write are the ones the inline calls wrote before (same activity, input, options
and summary), so every recorded history replays unchanged.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.hooks import (
        ApprovalHookInput,
        ApprovalHookResult,
        ObserveInput,
        ObserveResult,
        RequestHooksInput,
        RequestHooksResult,
    )
    from keycard.models import (
        AccessActivity,
        AcquireLeaseInput,
        ActivityQuery,
        AuditBatch,
        DeliveryRound,
        DeliveryRoundResult,
        LeaseResult,
        Notification,
        NotificationResult,
        ReleaseLeaseInput,
        ReleaseResult,
        SlackApproversInput,
        SlackApproversResult,
    )


async def evaluate_request_hooks(input: RequestHooksInput) -> RequestHooksResult:
    """on_request, the auto_approve rules and get_approvers, in one activity."""
    result: RequestHooksResult = await workflow.execute_activity(
        names.EVALUATE_REQUEST_HOOKS,
        input,
        result_type=RequestHooksResult,
        start_to_close_timeout=names.HOOKS_ACTIVITY_TIMEOUT,
        retry_policy=names.HOOKS_RETRY,
    )
    return result


async def check_approval_hook(input: ApprovalHookInput) -> ApprovalHookResult:
    """The flow's on_approve hook, asked about one approval."""
    result: ApprovalHookResult = await workflow.execute_activity(
        names.CHECK_APPROVAL_HOOK,
        input,
        result_type=ApprovalHookResult,
        start_to_close_timeout=names.HOOKS_ACTIVITY_TIMEOUT,
        retry_policy=names.HOOKS_RETRY,
    )
    return result


async def run_observer_hooks(input: ObserveInput) -> ObserveResult:
    """The after_* hooks that observe one event."""
    result: ObserveResult = await workflow.execute_activity(
        names.RUN_OBSERVER_HOOKS,
        input,
        result_type=ObserveResult,
        start_to_close_timeout=names.HOOKS_ACTIVITY_TIMEOUT,
        retry_policy=names.HOOKS_RETRY,
    )
    return result


async def resolve_slack_approvers(input: SlackApproversInput) -> SlackApproversResult:
    """The members of Slack user groups, as they are now."""
    result: SlackApproversResult = await workflow.execute_activity(
        names.RESOLVE_SLACK_APPROVERS,
        input,
        result_type=SlackApproversResult,
        start_to_close_timeout=names.RESOLVE_TIMEOUT,
        retry_policy=names.RESOLVE_RETRY,
    )
    return result


async def acquire_lease(input: AcquireLeaseInput) -> LeaseResult:
    """Before lease signals (requests started before them): take or move a lease through the
    grant's `acquire` update, which an activity waits on."""
    result: LeaseResult = await workflow.execute_activity(
        names.ACQUIRE_LEASE,
        input,
        result_type=LeaseResult,
        start_to_close_timeout=names.LEASE_TIMEOUT,
        heartbeat_timeout=names.LEASE_HEARTBEAT,
        retry_policy=names.LEASE_RETRY,
    )
    return result


async def release_lease(input: ReleaseLeaseInput) -> ReleaseResult:
    """Before lease signals: give a lease back through the grant's `release` update."""
    result: ReleaseResult = await workflow.execute_activity(
        names.RELEASE_LEASE,
        input,
        result_type=ReleaseResult,
        start_to_close_timeout=names.LEASE_TIMEOUT,
        heartbeat_timeout=names.LEASE_HEARTBEAT,
        retry_policy=names.LEASE_RETRY,
    )
    return result


async def deliver_audit(batch: AuditBatch) -> None:
    """Events to one audit destination."""
    await workflow.execute_activity(
        names.DELIVER_AUDIT,
        batch,
        start_to_close_timeout=names.DELIVERY_TIMEOUT,
        retry_policy=names.DELIVERY_RETRY,
        summary=f"audit → {batch.destination}",
    )


async def send_notification(notification: Notification) -> NotificationResult:
    """One event told to people (Slack, or the console notifier)."""
    result: NotificationResult = await workflow.execute_activity(
        names.SEND_NOTIFICATION,
        notification,
        result_type=NotificationResult,
        start_to_close_timeout=names.DELIVERY_TIMEOUT,
        retry_policy=names.DELIVERY_RETRY,
    )
    return result


async def deliver_round(round: DeliveryRound) -> DeliveryRoundResult:
    """New events to every lane that keeps up, in one activity (PATCH_V6)."""
    result: DeliveryRoundResult = await workflow.execute_activity(
        names.DELIVER_ROUND,
        round,
        result_type=DeliveryRoundResult,
        start_to_close_timeout=names.ROUND_TIMEOUT,
        retry_policy=names.DELIVERY_RETRY,
        summary=f"deliver {len(round.events)} event(s)",
    )
    return result


async def read_activity(query: ActivityQuery) -> AccessActivity:
    """What was done with one ended grant (the flow's `activity`; PATCH_V14)."""
    result: AccessActivity = await workflow.execute_activity(
        names.READ_ACTIVITY,
        query,
        result_type=AccessActivity,
        start_to_close_timeout=names.ACTIVITY_TIMEOUT,
        heartbeat_timeout=names.ACTIVITY_HEARTBEAT,
        retry_policy=names.ACTIVITY_RETRY,
        summary=f"activity of {query.target}",
    )
    return result
