"""Short calls from workflow code as local activities, failing the way activities do; and
counting for the metrics endpoint."""

from __future__ import annotations

from typing import Any

from temporalio import workflow
from temporalio.exceptions import ActivityError, CancelledError, FailureError


async def local_call(activity: str, arg: Any, **options: Any) -> Any:
    """`workflow.execute_local_activity`, for a call short enough to run inside the workflow task
    that asks for it (a lookup, a signal handed to Temporal): no round trip through the task
    queue, one marker in history instead of three events and a workflow task.

    A local activity's failure reaches the workflow unwrapped (the ApplicationError itself, or a
    TimeoutError); it is raised here as an ActivityError caused by it, as an activity's would be,
    so that callers handle both the same way."""
    try:
        return await workflow.execute_local_activity(activity, arg, **options)
    except (ActivityError, CancelledError):
        raise
    except FailureError as err:
        wrapped = ActivityError(
            "local activity failed",
            scheduled_event_id=0,
            started_event_id=0,
            identity="",
            activity_type=activity,
            activity_id="",
            retry_state=None,
        )
        raise wrapped from err


def count(metric: str, description: str, **attributes: str) -> None:
    """Add one to a counter of the worker's metrics (a no-op unless KEYCARD_METRICS_ADDRESS is
    set). The SDK counts nothing while a workflow replays, so each thing is counted once; no
    command is written, so histories are unchanged."""
    workflow.metric_meter().create_counter(metric, description).add(1, attributes)
