"""`activity: cloudtrail`: once a grant has ended and CloudTrail has had the flow's delay, the
request reads what was done with it and records `access.activity` (on the time-skipping server,
with the real activity reading a fake LookupEvents through boto3)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from activities.aws_activity import ActivityReader
from activities.notify import ConsoleNotifier
from keycard.config import ApiSettings, parse_config
from keycard.models import RequestState, RequestView
from starter.api.auth import config_entry
from starter.cli.terminal import describe
from starter.run.http import create_app
from tests.fake_cloudtrail import FakeCloudTrail, FakeDirectory, running_fake_cloudtrail
from tests.harness import BOB, CONFIG, ask, running_stack, state_is
from tests.starter.conftest import IDENTITIES, TOKENS, auth
from tests.starter.test_console import sign_in
from tests.workflows.test_timers import outcome

ACTIVITY_CONFIG = CONFIG.replace(
    "    allow_extension: true", "    allow_extension: true\n    activity: {delay: 15m}"
)


def reader(trail: FakeCloudTrail) -> list:
    session = boto3.Session(
        region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing"
    )

    def cloudtrail(region: str, credentials: Any) -> Any:
        return session.client("cloudtrail", region_name=region, endpoint_url=trail.url)

    reader = ActivityReader(FakeDirectory(), FakeDirectory(), None, cloudtrail, "us-east-1")
    return [*reader.activities(), ConsoleNotifier().send]  # extra activities replace the notifier


@pytest.fixture
async def trail():
    async with running_fake_cloudtrail() as fake:
        yield fake


def _alice(trail: FakeCloudTrail, view: RequestView, minutes: float, name: str, **options):
    assert view.granted_at is not None
    trail.call(
        view.granted_at + timedelta(minutes=minutes),
        name,
        user="alice@example.com",
        account="111111111111",
        permission_set="PowerUserAccess",
        **options,
    )


async def test_the_grants_activity_is_read_after_cloudtrails_delay(time_env, trail):
    tokens = [config_entry(TOKENS["alice"], *IDENTITIES["alice"], name="alice")]
    config = parse_config(ACTIVITY_CONFIG).model_copy(update={"api": ApiSettings(tokens=tokens)})
    async with running_stack(time_env.client, config, extra_activities=reader(trail)) as stack:
        view = await ask(stack, duration="1h")
        await stack.keycard.approve(view.id, BOB)
        active = await state_is(stack, view.id, RequestState.ACTIVE)
        _alice(trail, active, 1, "DescribeInstances")
        _alice(trail, active, 2, "StopInstances", read_only=False)
        _alice(trail, active, 62, "StartInstances", read_only=False, error="AccessDenied")

        await time_env.sleep(timedelta(minutes=61))
        ended = await stack.keycard.get(view.id)
        assert ended.state is RequestState.ENDED and ended.activity == []  # not read yet
        handle = time_env.client.get_workflow_handle(view.id)
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        assert trail.lookups == []

        final = await outcome(time_env, view.id)
        [summary] = final.activity
        assert (summary.calls, summary.writes, summary.after_end) == (2, 1, 1)
        assert summary.services == {"ec2.amazonaws.com": 2}
        assert (summary.since, summary.until) == (final.granted_at, final.ended_at)
        event = await stack.audit.wait_for(view.id, "access.activity")
        assert event.time >= final.ended_at + timedelta(minutes=15)
        assert event.detail["calls"] == 2 and event.detail["summary"] == summary.line
        assert stack.audit.types(view.id)[-3:] == [
            "access.ended", "access.sessions_ended", "access.activity"
        ]  # fmt: skip

        # Shown where people look: `keycard status`, the API, the console's request page.
        line = "2 call(s) (1 write(s), 0 error(s)) to ec2"
        assert f"  activity:  {line}" in describe(final)
        app = create_app(stack.keycard)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://keycard.test"
        ) as http:
            body = (await http.get(f"/v1/requests/{view.id}", headers=auth("alice"))).json()
            assert body["activity"][0]["calls"] == 2 and body["activity"][0]["after_end"] == 1
            await sign_in(http, "alice")
            page = (await http.get(f"/requests/{view.id}")).text
            assert line in page and "first: DescribeInstances (ec2.amazonaws.com)" in page


async def test_a_trail_it_may_not_read_is_recorded_and_the_request_closes(time_env, trail):
    trail.denied = True
    config = parse_config(ACTIVITY_CONFIG)
    async with running_stack(time_env.client, config, extra_activities=reader(trail)) as stack:
        view = await ask(stack, duration="1h")
        await stack.keycard.approve(view.id, BOB)
        await state_is(stack, view.id, RequestState.ACTIVE)
        final = await outcome(time_env, view.id)
        [summary] = final.activity
        assert summary.unavailable and "cloudtrail:LookupEvents" in summary.unavailable
        assert summary.line.startswith("not read: ")
        assert len(trail.lookups) == 1  # refused for good: not retried


async def test_a_cancel_through_temporal_while_it_waits_skips_the_read(time_env, trail):
    config = parse_config(ACTIVITY_CONFIG)
    async with running_stack(time_env.client, config, extra_activities=reader(trail)) as stack:
        view = await ask(stack, duration="1h")
        await stack.keycard.approve(view.id, BOB)
        await state_is(stack, view.id, RequestState.ACTIVE)
        await stack.keycard.revoke(view.id, BOB, "done")
        await state_is(stack, view.id, RequestState.ENDED)
        await time_env.client.get_workflow_handle(view.id).cancel()
        final = await outcome(time_env, view.id)
        [summary] = final.activity
        assert summary.unavailable and summary.unavailable.startswith("cancelled through Temporal")
        assert trail.lookups == []


async def test_a_request_that_never_held_access_reads_nothing(time_env, trail):
    config = parse_config(ACTIVITY_CONFIG)
    async with running_stack(time_env.client, config, extra_activities=reader(trail)) as stack:
        view = await ask(stack, duration="1h")
        await stack.keycard.deny(view.id, BOB, "no")
        final = await outcome(time_env, view.id)
        assert final.state is RequestState.DENIED and final.activity == []
        assert "access.activity" not in stack.audit.types(view.id)
        history = await time_env.client.get_workflow_handle(view.id).fetch_history()
        assert "keycard-v14" not in history.to_json()  # only requests that read ask the patch
