"""ConfigWorkflow: the record of which config each task queue's workers ran, for auditors.

Every worker signals it at start (`config.loaded`, with the digests of the keycard.yaml it loaded
and the commit it came from; worker.py). When a load's digest differs from the last one seen, the
workflow audits a `config.loaded` event saying which flows were added, removed or changed; a worker
restarting on the same config adds nothing. Its events are chained like a request's
(keycard/audit_chain.py) and live in its own history, so `keycard audit export` and the period
report rebuild them as they do a request's. It runs for as long as the task queue does,
continuing as new when Temporal suggests it; a record someone terminated is started again by the
next worker with its count, last hash and last config, so the chain and the event ids go on.
"""

from __future__ import annotations

import asyncio
from collections import deque

from temporalio import workflow

from workflows.request import calls
from workflows.waiting import run_through_cancel, wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.audit_chain import event_hash
    from keycard.models import (
        Actor,
        AuditBatch,
        ConfigHistoryInput,
        ConfigLoaded,
        LifecycleEvent,
        Requester,
        RequestState,
        TargetRef,
    )
    from keycard.provenance import ConfigDifference, config_difference

CONFIG_FILE = "keycard.yaml"


@workflow.defn(name=names.CONFIG_WORKFLOW)
class ConfigWorkflow:
    """One per task queue (`keycard-config-<task queue>`), signalled with start by each worker."""

    def __init__(self) -> None:
        self._loads: deque[ConfigLoaded] = deque()
        self._last: ConfigLoaded | None = None

    @workflow.signal(name=names.CONFIG_LOADED)
    def loaded(self, load: ConfigLoaded) -> None:
        self._loads.append(load)

    @workflow.query(name=names.CONFIG_CURRENT)
    def current(self) -> ConfigLoaded | None:
        return self._last

    @workflow.run
    async def run(self, input: ConfigHistoryInput) -> None:
        # The record ends only by termination: a cancel request from Temporal interrupts neither
        # a wait nor a delivery (PATCH_V15; before, one that came while an event was being
        # delivered cancelled the delivery and ended the record).
        if workflow.patched(names.PATCH_V15):
            await run_through_cancel(self._record(input))
        else:
            await self._record(input)

    async def _record(self, input: ConfigHistoryInput) -> None:
        self._last = input.last
        self._loads.extend(input.pending)
        events, last_hash, loads = input.events, input.last_hash, 0
        while loads < input.continue_after and not workflow.info().is_continue_as_new_suggested():
            await wait_until(
                lambda: bool(self._loads) or workflow.info().is_continue_as_new_suggested()
            )
            if not self._loads:
                break
            load = self._loads.popleft()
            loads += 1
            before = self._last.policy if self._last is not None else None
            difference = config_difference(before, load.policy)
            self._last = load
            if difference is None:
                continue
            events += 1
            event = _event(events, load, difference, last_hash)
            last_hash = event.hash
            await asyncio.gather(
                *(
                    calls.deliver_audit(AuditBatch(destination=destination, events=[event]))
                    for destination in load.audit_destinations
                )
            )
        # Loads heard and not yet handled go along: a signal is never dropped.
        workflow.continue_as_new(
            input.model_copy(
                update={
                    "last": self._last,
                    "events": events,
                    "last_hash": last_hash,
                    "pending": list(self._loads),
                }
            )
        )


def _event(
    number: int, load: ConfigLoaded, difference: ConfigDifference, prev_hash: str | None
) -> LifecycleEvent:
    info = workflow.info()
    policy = load.policy
    where = policy.path or CONFIG_FILE
    at = f" at commit {policy.commit[:12]}" if policy.commit else ""
    dirty = " with uncommitted changes" if policy.dirty else ""
    event = LifecycleEvent(
        id=f"{info.workflow_id}/{number}",
        type="config.loaded",
        time=workflow.now(),
        request_id=info.workflow_id,
        workflow_id=info.workflow_id,
        run_id=info.run_id,
        actor=Actor(rule=names.CONFIG_ACTOR, via="worker", name=load.worker),
        requester=Requester(email=names.CONFIG_ACTOR, name=load.worker),
        flow="*",
        target=TargetRef(name=CONFIG_FILE, label=where, strategy="keycard"),
        duration=load.longest_access,
        reason=f"worker {load.worker} loaded {where}{at}{dirty}: {difference.summary}",
        state=RequestState.ACTIVE,
        detail={
            "worker": load.worker,
            "digest": policy.digest,
            "commit": policy.commit,
            "path": policy.path,
            "dirty": policy.dirty,
            "flows": dict(sorted(policy.flows.items())),
            **difference.model_dump(mode="json"),
        },
        prev_hash=prev_hash,
    )
    event.hash = event_hash(event.model_dump(mode="json"))
    return event
