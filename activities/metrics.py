"""Counting what activities do, for the metrics endpoint (starter/telemetry.py).

A worker interceptor, so every strategy's activities are counted alike, whoever wrote them.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from keycard import temporal as names

REVOKE_SUFFIX = ".revoke"  # `<strategy>.revoke`: every strategy's removal of access


class ActivityMetrics(Interceptor):
    """keycard_revoke_retries{strategy}: attempts to remove access that failed (Temporal retries
    each, and the grant starts another round after the last: removal never gives up)."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountFailures(next)


class _CountFailures(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception:
            kind = activity.info().activity_type
            if kind.endswith(REVOKE_SUFFIX):
                activity.metric_meter().create_counter(
                    names.METRIC_REVOKE_RETRIES, "failed attempts to remove access, retried"
                ).add(1, {"strategy": kind.removesuffix(REVOKE_SUFFIX)})
            raise
