"""The grant path under the conditions that broke it: a removal in flight, a burst bigger than the
worker's slots, slow grants, and Temporal's own cancel button (dev server)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus

from activities.audit import AuditActivities
from activities.leases import LeaseActivities
from activities.notify import ConsoleNotifier
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import (
    Actor,
    GrantView,
    Requester,
    RequestState,
    RequestView,
    ResolvedAssignment,
)
from starter.client import KeycardClient
from tests.fakes import KNOWN_USERS, FakeCloud
from tests.harness import BOB, CAROL, CONFIG, MemorySink, ask, running_stack, state_is
from tests.polling import eventually
from worker import WORKFLOWS, keycard_worker

ALICE_ACTOR = Actor(email="alice@example.com")


class TimedCloud(FakeCloud):
    """A fake cloud that records when each grant and revoke started and finished, and can hold a
    revoke in flight until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.timeline: list[tuple[str, str, datetime]] = []  # (operation, phase, wall clock)
        self.revoke_gate: asyncio.Event | None = None
        self.grant_delay = 0.0

    def activities(self, strategy: str = "aws_sso") -> list:
        resolve, exists, grant, revoke = super().activities(strategy)
        cloud = self

        @activity.defn(name=f"{strategy}.grant")
        async def timed_grant(input: ResolvedAssignment) -> None:
            cloud.timeline.append(("grant", "start", datetime.now(UTC)))
            await asyncio.sleep(cloud.grant_delay)
            await grant(input)
            cloud.timeline.append(("grant", "end", datetime.now(UTC)))

        @activity.defn(name=f"{strategy}.revoke")
        async def timed_revoke(input: ResolvedAssignment) -> None:
            cloud.timeline.append(("revoke", "start", datetime.now(UTC)))
            if cloud.revoke_gate is not None:
                await cloud.revoke_gate.wait()
            await revoke(input)
            cloud.timeline.append(("revoke", "end", datetime.now(UTC)))

        return [resolve, exists, timed_grant, timed_revoke]

    def existed_at(self, moment: datetime) -> bool:
        """Whether the assignment surely existed at `moment`: the last operation to start before
        it was a grant, and that grant had finished by then (a revoke in flight does not count;
        the grant workflow runs one operation at a time)."""
        started = [
            (index, op)
            for index, (op, phase, at) in enumerate(self.timeline)
            if phase == "start" and at <= moment
        ]
        if not started or started[-1][1] != "grant":
            return False
        index = started[-1][0]
        ends = [at for op, phase, at in self.timeline[index:] if (op, phase) == ("grant", "end")]
        return bool(ends) and ends[0] <= moment


async def grant_status(stack, email: str = "alice@example.com") -> GrantView:
    principal = f"u-{email.split('@')[0]}-{stack.cloud.salt}"
    grant_id = f"grant:aws_sso:111111111111:ps-PowerUserAccess:{principal}"
    handle = stack.client.get_workflow_handle(grant_id)
    return await handle.query(names.REQUEST_STATUS, result_type=GrantView)


async def test_a_lease_taken_during_a_removal_is_granted_only_after_it(dev_env):
    """Defect 1: 'granted' was said while the last lease's removal was still in flight, and that
    removal then took the new request's access away."""
    cloud = TimedCloud()
    async with running_stack(dev_env.client, cloud=cloud) as stack:
        first = await ask(stack)
        await stack.keycard.approve(first.id, BOB)
        await state_is(stack, first.id, RequestState.ACTIVE)

        cloud.revoke_gate = asyncio.Event()
        await stack.keycard.revoke(first.id, BOB)
        await eventually(async_true(lambda: ("revoke", "start") in phases(cloud)))
        second = await ask(stack)
        await stack.keycard.approve(second.id, CAROL)

        async def second_is_waiting():
            status = await grant_status(stack)
            return second.id in status.waiting or second.id in status.leases

        await eventually(second_is_waiting)
        cloud.revoke_gate.set()

        await state_is(stack, second.id, RequestState.ACTIVE)
        granted = await stack.audit.wait_for(second.id, "access.granted")
        assert cloud.existed_at(granted.time), cloud.timeline
        assert cloud.has("alice@example.com")

        revoked = await stack.audit.wait_for(first.id, "access.revoked")
        assert revoked.detail["removed"] is True
        assert revoked.detail["other_leases"] == 0


async def test_a_burst_larger_than_the_worker_slots_all_reaches_active(dev_env):
    """Defect 3: each lease activity held a slot while it waited on its grant; with every slot
    taken, the grants' own AWS activities never ran."""
    people = [f"user{n}@example.com" for n in range(12)]
    cloud = FakeCloud(users=set(KNOWN_USERS) | set(people))
    audit = MemorySink()
    task_queue = f"test-{uuid.uuid4()}"
    config = parse_config(CONFIG)
    async with keycard_worker(
        dev_env.client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            *cloud.activities("aws_sso"),
            *cloud.session_activities(),
            LeaseActivities(dev_env.client, task_queue).take_lease,
            LeaseActivities(dev_env.client, task_queue).request_end_sessions,
            AuditActivities([audit]).deliver,
            ConsoleNotifier().send,
        ],
        max_concurrent_activities=4,  # far fewer slots than requests
    ):
        keycard = KeycardClient(dev_env.client, config, task_queue)
        views = []
        for email in people:
            view = await keycard.request(
                flow="prod-power-user",
                target="prod",
                duration="1h",
                reason="burst",
                requester=Requester(email=email),
                request_id=f"req-burst-{uuid.uuid4().hex[:10]}",
            )
            views.append(view)
        await asyncio.gather(*(keycard.approve(view.id, BOB) for view in views))

        async def all_active():
            states = await asyncio.gather(*(keycard.get(view.id) for view in views))
            return all(state.state is RequestState.ACTIVE for state in states)

        await eventually(all_active, timeout=60)
        assert all(cloud.has(email) for email in people)
        await asyncio.gather(*(keycard.revoke(view.id, BOB) for view in views))

        async def all_ended():
            states = await asyncio.gather(*(keycard.get(view.id) for view in views))
            return all(state.state is RequestState.ENDED for state in states)

        await eventually(all_ended, timeout=60)
        assert not any(cloud.has(email) for email in people)


async def test_the_lease_runs_from_the_grant_and_is_never_renewed_after_it(dev_env):
    """Defect 4: the lease's end was computed before granting, so every grant renewed it, and a
    renewal arriving after that end was refused as retryable, for ever."""
    cloud = TimedCloud()
    cloud.grant_delay = 2.5  # longer than the whole grant below
    config = parse_config(CONFIG.replace("durations: [1h, 2h, 30m, 1m]", "durations: [2s, 1h]"))
    async with running_stack(dev_env.client, config=config, cloud=cloud) as stack:
        view = await ask(stack, duration="2s")
        await stack.keycard.approve(view.id, BOB)
        handle = stack.client.get_workflow_handle(view.id, result_type=RequestView)
        final = await asyncio.wait_for(handle.result(), timeout=30)

        assert final.state is RequestState.ENDED
        assert final.expires_at - final.granted_at == timedelta(seconds=2)
        assert not cloud.has("alice@example.com")
        calls = [_called(event) async for event in handle.fetch_history_events()]
        assert [call for call in calls if call and call.startswith("leases.")] == [names.TAKE_LEASE]


async def test_cancelling_an_active_request_in_temporal_revokes_it(dev_env):
    """Defect 5: the Temporal UI's Request Cancellation closed the workflow with the access still
    in place, the request still saying ACTIVE, and nothing in the audit trail."""
    async with running_stack(dev_env.client) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        await state_is(stack, view.id, RequestState.ACTIVE)
        handle = stack.client.get_workflow_handle(view.id, result_type=RequestView)

        await handle.cancel(reason="incident over")
        final = await asyncio.wait_for(handle.result(), timeout=30)

        assert final.state is RequestState.ENDED
        assert "Temporal" in (final.end_reason or "") or "temporal" in (final.end_reason or "")
        assert not stack.cloud.has("alice@example.com")
        revoked = await stack.audit.wait_for(view.id, "access.revoked")
        assert revoked.actor is not None and revoked.actor.via == "temporal"
        assert revoked.detail["comment"] == "incident over"
        assert revoked.detail["removed"] is True
        description = await handle.describe()
        assert description.status == WorkflowExecutionStatus.COMPLETED
        assert description.typed_search_attributes.get(names.SA_STATE) == "ENDED"


async def test_cancelling_a_pending_request_in_temporal_cancels_it(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await ask(stack)
        handle = stack.client.get_workflow_handle(view.id, result_type=RequestView)
        await handle.cancel()
        final = await asyncio.wait_for(handle.result(), timeout=30)
        assert final.state is RequestState.CANCELLED
        cancelled = await stack.audit.wait_for(view.id, "request.cancelled")
        assert cancelled.actor is not None and cancelled.actor.via == "temporal"
        assert stack.cloud.calls == [("resolve", "alice@example.com")]


async def test_cancelling_a_grant_in_temporal_changes_nothing(dev_env):
    """The grant is the only writer of the assignment: it ends when its last lease does, so the
    Temporal UI's cancel button on it must neither close it nor strand the access."""
    async with running_stack(dev_env.client) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB)
        await state_is(stack, view.id, RequestState.ACTIVE)
        principal = f"u-alice-{stack.cloud.salt}"
        grant = stack.client.get_workflow_handle(
            f"grant:aws_sso:111111111111:ps-PowerUserAccess:{principal}"
        )
        await grant.cancel(reason="cleaning up the workflow list")

        async def cancel_handled():
            events = [e.event_type async for e in grant.fetch_history_events()]
            requested = events.index(EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCEL_REQUESTED)
            return EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in events[requested:]

        await eventually(cancel_handled)
        assert (await grant.describe()).status == WorkflowExecutionStatus.RUNNING
        assert stack.cloud.has("alice@example.com")

        await stack.keycard.revoke(view.id, BOB)
        revoked = await stack.audit.wait_for(view.id, "access.revoked")
        assert revoked.detail["removed"] is True
        assert not stack.cloud.has("alice@example.com")


def phases(cloud: TimedCloud) -> list[tuple[str, str]]:
    return [(op, phase) for op, phase, _ in cloud.timeline]


def async_true(check):
    async def predicate():
        return check()

    return predicate


def _called(event) -> str | None:
    """The activity an event records calling: scheduled, or run locally (a marker)."""
    if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
        return event.activity_task_scheduled_event_attributes.activity_type.name
    marker = event.marker_recorded_event_attributes
    if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and marker.marker_name == (
        "core_local_activity"
    ):
        return json.loads(marker.details["data"].payloads[0].data)["activity_type"]
    return None
