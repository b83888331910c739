"""`list` rows carry each request's expiry and decider, asked of the request itself; a page never
waits longer than ROW_TIMEOUT for them, however many rows' workers are busy or gone."""

from __future__ import annotations

import time
import uuid

from keycard.models import Requester, RequestState
from starter import client as client_module
from starter.client import KeycardClient
from tests.fakes import FakeCloud
from tests.harness import BOB, ask, running_stack, state_is
from tests.polling import eventually


async def test_a_page_waits_for_row_details_at_most_once(dev_env):
    requester = Requester(email=f"erin-{uuid.uuid4().hex[:8]}@example.com")
    count = client_module.ROW_CALLS + 3  # more rows than ask at once
    cloud = FakeCloud()
    cloud.users.add(requester.email)
    async with running_stack(dev_env.client, cloud=cloud) as stack:
        ids = []
        for _ in range(count):
            view = await ask(stack, requester=requester)
            await stack.keycard.approve(view.id, BOB)
            ids.append(view.id)
        for request_id in ids:
            await state_is(stack, request_id, RequestState.ACTIVE)
        keycard = KeycardClient(dev_env.client, stack.keycard.config, stack.task_queue)

        async def all_listed():
            page = await keycard.list(requester=requester.email, details=False)
            return len(page.requests) == count

        await eventually(all_listed)
        live = await keycard.list(requester=requester.email)
        assert all(row.expires_at and row.decided_by == "bob@example.com" for row in live.requests)

    # The worker is gone; the requests still run, and no one answers their queries.
    started = time.monotonic()
    page = await keycard.list(requester=requester.email)
    took = time.monotonic() - started
    assert [row.state for row in page.requests] == [RequestState.ACTIVE] * count
    assert all(row.expires_at is None for row in page.requests)  # left out, not waited for
    assert took < client_module.ROW_TIMEOUT.total_seconds() + 2, took
    for request_id in ids:
        await dev_env.client.get_workflow_handle(request_id).terminate("test over")
