"""A worker for tests/workflows/test_update_order.py to SIGKILL.

It runs the real workflows with a fake cloud. Its `leases.take` only writes down the lease it was
asked for, so that the request waits for `lease.granted` when the worker dies; the test then hands
the lease to the grant itself, on a worker that lives.

    python -m tests.workflows.doomed_worker ADDRESS TASK_QUEUE TAKES_FILE
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from temporalio import activity
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from activities.audit import AuditActivities
from activities.notify import ConsoleNotifier
from keycard import temporal as names
from keycard.models import TakeLeaseInput
from tests.fakes import FakeCloud
from tests.harness import MemorySink
from worker import WORKFLOWS, keycard_worker


class WrittenDownTakes:
    def __init__(self, path: Path) -> None:
        self.path = path

    @activity.defn(name=names.TAKE_LEASE)
    async def take_lease(self, input: TakeLeaseInput) -> None:
        partial = self.path.with_suffix(".partial")
        partial.write_text(input.model_dump_json(), encoding="utf-8")
        partial.rename(self.path)


async def main(address: str, task_queue: str, takes: Path) -> None:
    client = await Client.connect(address, data_converter=pydantic_data_converter)
    async with keycard_worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=[
            *FakeCloud().activities("aws_sso"),
            WrittenDownTakes(takes).take_lease,
            AuditActivities([MemorySink()]).deliver,
            ConsoleNotifier().send,
        ],
    ):
        print("polling", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
