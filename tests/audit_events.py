"""Lifecycle events for audit tests that do not need a workflow to make them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keycard.models import Actor, LifecycleEvent, Requester, RequestState, TargetRef

START = datetime(2026, 3, 14, 23, 59, 30, tzinfo=UTC)


def make_events(count: int = 3, request_id: str = "req-audit1") -> list[LifecycleEvent]:
    types = ["request.created", "request.approved", "access.granted", "access.ended"]
    return [
        LifecycleEvent(
            id=f"{request_id}/{seq}",
            type=types[(seq - 1) % len(types)],  # type: ignore[arg-type]
            time=START + timedelta(seconds=20 * seq),
            request_id=request_id,
            workflow_id=request_id,
            run_id="run-1",
            actor=Actor(email="bob@example.com"),
            requester=Requester(email="alice@example.com"),
            flow="prod-power-user",
            target=TargetRef(
                name="prod",
                label="Production",
                strategy="aws_sso",
                settings={"account_id": "111111111111", "permission_set": "PowerUserAccess"},
            ),
            duration=timedelta(hours=1),
            reason="incident 4312",
            state=RequestState.PENDING,
            detail={"seq": seq},
        )
        for seq in range(1, count + 1)
    ]
