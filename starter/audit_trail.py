"""The audit trail rebuilt from Temporal history alone (`keycard audit export`, the console).

Each AccessRequestWorkflow writes every lifecycle event into its own history the moment it happens,
before and regardless of delivery to any destination: in the input of the delivery round it starts
in the same workflow task, or, when no round can take it then, as a memo update under
`AUDIT_MEMO_KEY` (every event, for requests started before rounds). The other workflows that write
events (the config record, drift sweeps, and grants, which deliver the events others made for them)
have them in the input of their `audit.deliver` activities. This walks those workflows through
Temporal visibility, reads the events back from their histories, and writes them as JSON lines
identical to the streamed ones (same ids): evidence that does not depend on a sink having been up.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import typer
from temporalio.service import RPCError, RPCStatusCode

from keycard import temporal as names
from keycard.codec import require_keys_for
from keycard.models import AuditBatch, DeliveryRound, LifecycleEvent

if TYPE_CHECKING:
    from temporalio.api.common.v1 import Payload
    from temporalio.api.history.v1 import HistoryEvent
    from temporalio.client import Client, WorkflowExecution

HISTORY_READERS = 8  # histories fetched at once


# Workflows that write audit events besides requests: the config record (config.loaded), drift
# sweeps (drift.found), and grants, which write the events others made for them to deliver (a
# request's access.ended for a lease the grant dropped; a sweep's drift.removed).
WRITERS = (names.CONFIG_WORKFLOW, names.DRIFT_SWEEP_WORKFLOW, names.GRANT_WORKFLOW)


def visibility_query(
    since: datetime,
    until: datetime,
    flow: str | None = None,
    *,
    requests: bool = True,
    writers: Sequence[str] = WRITERS,
) -> str:
    """Requests (of `flow`, if given) and runs of the `writers` alive at some point in
    [since, until): started before the end, and still open or closed after the start."""
    types = [f"WorkflowType = '{writer}'" for writer in writers]
    if requests:
        request = f"WorkflowType = '{names.ACCESS_REQUEST_WORKFLOW}'"
        if flow:
            request = f"({request} AND {names.SA_FLOW.name} = {_quote(flow)})"
        types.insert(0, request)
    clauses = [
        f"({' OR '.join(types)})",
        f"StartTime < '{_rfc3339(until)}'",
        f"(CloseTime >= '{_rfc3339(since)}' OR ExecutionStatus = 'Running')",
    ]
    return " AND ".join(clauses)


async def export_events(
    client: Client, *, since: datetime, until: datetime | None = None, flow: str | None = None
) -> list[LifecycleEvent]:
    """Every event with since <= time < until, oldest first (a request's own in sequence)."""
    since, until = utc(since), utc(until or datetime.now(UTC))
    found: dict[str, LifecycleEvent] = {}
    for event in await _events_of_runs(client, visibility_query(since, until, flow)):
        if since <= event.time < until and (not flow or concerns(event, flow)):
            found[event.id] = event
    return sorted(found.values(), key=lambda e: (e.time, e.workflow_id, sequence(e)))


def concerns(event: LifecycleEvent, flow: str) -> bool:
    """Whether an event belongs in a trail of one flow's: its own, or a config change to it."""
    if event.type == "config.loaded":
        return any(flow in event.detail.get(key, ()) for key in ("added", "removed", "changed"))
    return event.flow == flow


async def history_events(
    client: Client, workflow_id: str, run_id: str | None, *, every_run: bool = False
) -> list[LifecycleEvent]:
    """The lifecycle events one run of a request (or of the config record) recorded in its
    history, in order; `every_run`: that run's and those of the runs it continued (the config
    record continues as new)."""
    events: dict[str, LifecycleEvent] = {}
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        earlier = ""
        async for history_event in handle.fetch_history_events():
            if history_event.HasField("workflow_execution_started_event_attributes"):
                started = history_event.workflow_execution_started_event_attributes
                earlier = started.continued_execution_run_id
            for event in await _recorded_events(client, history_event):
                events.setdefault(event.id, event)  # a round's retry or a memo may repeat one
        if not earlier or not every_run:
            return sorted(events.values(), key=sequence)
        run_id = earlier


async def recorded_events(
    client: Client, request_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    """Each request's events as its history recorded them (as JSON, in order); a request Temporal
    does not know is left out."""
    readers = asyncio.Semaphore(HISTORY_READERS)

    async def read(request_id: str) -> tuple[str, list[LifecycleEvent] | None]:
        async with readers:
            try:
                if request_id.startswith(names.CONFIG_WORKFLOW_PREFIX):
                    return request_id, await _record_events(client, request_id)
                return request_id, await history_events(client, request_id, None, every_run=True)
            except RPCError as err:
                if err.status is RPCStatusCode.NOT_FOUND:
                    return request_id, None
                raise

    found = await asyncio.gather(*(read(request_id) for request_id in request_ids))
    return {
        request_id: [json.loads(event.model_dump_json()) for event in events]
        for request_id, events in found
        if events is not None
    }


async def written_by_grants(
    client: Client, since: datetime, until: datetime
) -> dict[str, list[dict[str, Any]]]:
    """The events grants alive in [since, until] wrote for others (a request's access.ended for a
    lease it dropped, a sweep's drift.removed), by request id, as JSON: where `keycard audit
    verify` finds the events a request's own history does not have."""
    query = visibility_query(utc(since), utc(until), requests=False, writers=[names.GRANT_WORKFLOW])
    found = {event.id: event for event in await _events_of_runs(client, query)}
    written: dict[str, list[dict[str, Any]]] = {}
    for event in found.values():
        written.setdefault(event.request_id, []).append(json.loads(event.model_dump_json()))
    return written


async def _events_of_runs(client: Client, query: str) -> list[LifecycleEvent]:
    """The events recorded in the history of each run the visibility query finds."""
    executions = [execution async for execution in client.list_workflows(query)]
    readers = asyncio.Semaphore(HISTORY_READERS)

    async def read(execution: WorkflowExecution) -> list[LifecycleEvent]:
        async with readers:
            return await history_events(client, execution.id, execution.run_id)

    return [event for events in await asyncio.gather(*map(read, executions)) for event in events]


async def _record_events(client: Client, workflow_id: str) -> list[LifecycleEvent] | None:
    """The config record's events from every run it has had: those it continued as new, and
    those a worker started after one was terminated (which go on with its ids and chain)."""
    runs = [
        execution.run_id
        async for execution in client.list_workflows(f"WorkflowId = {_quote(workflow_id)}")
    ]
    if not runs:
        return None
    events: dict[str, LifecycleEvent] = {}
    for run_id in runs:
        for event in await history_events(client, workflow_id, run_id):
            events.setdefault(event.id, event)
    return sorted(events.values(), key=sequence)


async def _recorded_events(client: Client, history_event: HistoryEvent) -> list[LifecycleEvent]:
    async def decode(payloads: Sequence[Payload], types: list[type]) -> list[Any]:
        require_keys_for(payloads, client.data_converter)
        return await client.data_converter.decode(payloads, types)

    if history_event.HasField("workflow_properties_modified_event_attributes"):
        memo = history_event.workflow_properties_modified_event_attributes.upserted_memo.fields
        payload = memo.get(names.AUDIT_MEMO_KEY)
        return [] if payload is None else await decode([payload], [LifecycleEvent])
    if history_event.HasField("activity_task_scheduled_event_attributes"):
        scheduled = history_event.activity_task_scheduled_event_attributes
        if scheduled.activity_type.name == names.DELIVER_ROUND:
            [round] = await decode(scheduled.input.payloads, [DeliveryRound])
            return round.events
        if scheduled.activity_type.name == names.DELIVER_AUDIT:
            # A destination catching up alone; and the config record's only way to deliver.
            [batch] = await decode(scheduled.input.payloads, [AuditBatch])
            return batch.events
    return []


def parse_time(text: str) -> datetime:
    """`2026-01-01`, `2026-01-01T09:30`, or with an offset; without one, UTC."""
    try:
        return utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not a date or time: use 2026-01-01 or 2026-01-01T09:30:00Z"
        ) from None


def utc(moment: datetime) -> datetime:
    """`moment` in UTC; without a zone, taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sequence(event: LifecycleEvent) -> int:
    """An event's place in its request's trail: the number its id ends with (0 for events made
    outside the request, whose ids end in a name)."""
    tail = event.id.rsplit("/", 1)[-1]
    return int(tail) if tail.isdigit() else 0
