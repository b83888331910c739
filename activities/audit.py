"""Audit delivery: write each lifecycle event, as one JSON object, to the configured destinations."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Protocol

import structlog
from temporalio import activity

from keycard import temporal as names
from keycard.models import AuditBatch, LifecycleEvent

log = structlog.get_logger("keycard.audit")


class AuditSink(Protocol):
    name: str

    async def write(self, events: list[LifecycleEvent]) -> None: ...


class JsonlSink:
    """Appends one JSON line per event; the file is the evidence trail in `keycard dev`."""

    name = "jsonl"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    async def write(self, events: list[LifecycleEvent]) -> None:
        lines = "".join(event.model_dump_json() + "\n" for event in events)
        await asyncio.to_thread(self._append, lines)

    def _append(self, lines: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as file:
            file.write(lines)
            file.flush()


class StdoutSink:
    """Each event as a structlog JSON record on the worker's log stream."""

    name = "stdout"

    async def write(self, events: list[LifecycleEvent]) -> None:
        for event in events:
            log.info("audit", **json.loads(event.model_dump_json()))


class AuditActivities:
    def __init__(self, sinks: list[AuditSink]):
        self._sinks = sinks

    @activity.defn(name=names.DELIVER_AUDIT)
    async def deliver(self, batch: AuditBatch) -> None:
        for sink in self._sinks:
            await sink.write(batch.events)
