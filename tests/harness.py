"""Run the real workflows on an in-process worker against a chosen Temporal test server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from temporalio import activity
from temporalio.client import Client, WorkflowHandle

from activities.audit import AuditActivities, AuditBacklog, AuditSink
from activities.leases import LeaseActivities
from activities.notify import ConsoleNotifier
from keycard import temporal as names
from keycard.config import KeycardConfig, parse_config
from keycard.models import (
    Actor,
    EndSessionsInput,
    LifecycleEvent,
    Requester,
    RequestState,
    RequestView,
)
from starter.client import KeycardClient
from tests.fakes import FakeCloud
from tests.polling import eventually
from worker import WORKFLOWS, keycard_worker

CONFIG = """
approver_groups:
  sre-leads: [bob@example.com, carol@example.com]
flows:
  - name: prod-power-user
    label: Prod PowerUser
    strategy: aws_sso
    targets:
      - {name: prod, label: Production, account_id: "111111111111", permission_set: PowerUserAccess}
    durations: [1h, 2h, 30m, 1m]
    max_duration: 4h
    fields:
      - {name: incident, type: string}
    approvers: {groups: [sre-leads]}
    approval_timeout: 1h
    allow_extension: true
  - name: prod-admin
    strategy: aws_sso
    targets:
      - {name: prod, account_id: "111111111111", permission_set: AdministratorAccess}
    durations: [1h]
    reason_required: false
    approvers: {users: [bob@example.com, carol@example.com, dave@example.com]}
    approvals_required: 2
    allow_early_revoke: false
"""

ALICE = Requester(email="alice@example.com")
BOB = Actor(email="bob@example.com")
CAROL = Actor(email="carol@example.com")
DAVE = Actor(email="dave@example.com")


class MemorySink:
    name = "memory"

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self._written = asyncio.Condition()

    async def write(self, events: list[LifecycleEvent]) -> None:
        self.events.extend(events)
        async with self._written:
            self._written.notify_all()

    def types(self, request_id: str) -> list[str]:
        return [e.type for e in self.events if e.request_id == request_id]

    def of(self, request_id: str, type: str) -> list[LifecycleEvent]:
        return [e for e in self.events if e.request_id == request_id and e.type == type]

    async def wait_for_any(self, type: str, timeout: float = 20) -> LifecycleEvent:
        """The first `type` event of any request (for a request whose id is not known yet)."""
        async with asyncio.timeout(timeout), self._written:
            await self._written.wait_for(lambda: any(e.type == type for e in self.events))
        return next(e for e in self.events if e.type == type)

    async def wait_for(
        self, request_id: str, type: str, timeout: float = 20, nth: int = 1
    ) -> LifecycleEvent:
        """The `nth` `type` event of the request, once the audit has received it."""
        async with asyncio.timeout(timeout), self._written:
            await self._written.wait_for(lambda: len(self.of(request_id, type)) >= nth)
        return self.of(request_id, type)[nth - 1]


class HeldSink(MemorySink):
    """A MemorySink that holds its first write until `released` is set: an event still on its
    way to its destination (`writing` is set once it is)."""

    def __init__(self) -> None:
        super().__init__()
        self.writing, self.released = asyncio.Event(), asyncio.Event()

    async def write(self, events: list[LifecycleEvent]) -> None:
        self.writing.set()
        await self.released.wait()
        await super().write(events)


@dataclass
class Stack:
    keycard: KeycardClient
    cloud: FakeCloud
    audit: MemorySink
    task_queue: str
    client: Client
    extra: dict = field(default_factory=dict)


def _recording_writers(leases: LeaseActivities, cloud: FakeCloud):
    """sessions.request_end, noting the writer it starts the moment it asks: teardown terminates
    every writer, also one signalled but not yet written (left running, its timers would stall
    the time-skipping clock for every later test)."""

    @activity.defn(name=names.REQUEST_END_SESSIONS)
    async def request_end_sessions(input: EndSessionsInput) -> None:
        cloud.writers.add(
            names.session_policy_workflow_id(
                input.instance_arn, input.permission_set_arn, input.policy
            )
        )
        await leases.request_end_sessions(input)

    return request_end_sessions


@asynccontextmanager
async def running_stack(
    client: Client,
    config: KeycardConfig | None = None,
    cloud: FakeCloud | None = None,
    extra_activities: list | None = None,
    hook_activities: list | None = None,
    audit_sinks: Mapping[str, AuditSink] | None = None,
    task_queue: str | None = None,
    backlog: AuditBacklog | None = None,
    strategies: list | None = None,
):
    """A worker with the real workflows and lease activities and a fake cloud, on its own queue.

    `extra_activities` replace the console notifier; `hook_activities` are added (HookActivities'
    methods, for flows with hooks or auto_approve rules). Audit events go to `stack.audit` (the
    `default` destination), or, given `audit_sinks`, to those sinks by destination name (the
    config's `audit` section names the destinations). `task_queue` shares another's queue.
    `strategies`: the activities of strategies other than the fake cloud's aws_sso."""
    config = config or parse_config(CONFIG)
    cloud = cloud or FakeCloud()
    audit = MemorySink()
    task_queue = task_queue or f"test-{uuid.uuid4()}"
    leases = LeaseActivities(client, task_queue)
    activities = [
        *cloud.activities("aws_sso"),
        *cloud.session_activities(),
        leases.take_lease,
        leases.acquire_lease,
        leases.release_lease,
        _recording_writers(leases, cloud),
        AuditActivities(audit_sinks if audit_sinks is not None else [audit], backlog).deliver,
        *(extra_activities or [ConsoleNotifier().send]),
        *(hook_activities or []),
        *(strategies or []),
    ]
    async with keycard_worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities,
    ):
        try:
            yield Stack(KeycardClient(client, config, task_queue), cloud, audit, task_queue, client)
        finally:
            await cloud.stop_writers(client)


async def ask(stack: Stack | KeycardClient, **overrides) -> RequestView:
    """alice asks for prod PowerUser for 1h ("incident 4312"); any argument may be overridden.
    Through a stack's client, or a client of its own (a test whose worker is elsewhere)."""
    args = dict(
        flow="prod-power-user",
        target="prod",
        duration="1h",
        reason="incident 4312",
        requester=ALICE,
        request_id=unique_id(),
    )
    args.update(overrides)
    keycard = stack.keycard if isinstance(stack, Stack) else stack
    return await keycard.request(**args)


async def state_is(stack: Stack, request_id: str, state: RequestState) -> RequestView:
    """The request once it is in `state`."""

    async def check():
        view = await stack.keycard.get(request_id)
        return view if view.state is state else None

    return await eventually(check)


def unique_id() -> str:
    return f"req-test-{uuid.uuid4().hex[:10]}"


async def cancel_heard(handle: WorkflowHandle) -> bool:
    """Whether the workflow has completed a workflow task since the cancel request came."""
    events = list((await handle.fetch_history()).events)
    requested = [
        i
        for i, event in enumerate(events)
        if event.HasField("workflow_execution_cancel_requested_event_attributes")
    ]
    return bool(requested) and any(
        event.HasField("workflow_task_completed_event_attributes")
        for event in events[requested[0] :]
    )


__all__ = ["activity", "running_stack"]
