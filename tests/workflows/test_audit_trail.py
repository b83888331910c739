"""The audit trail a request leaves: exact event sequences, refusals, delivery through outages,
stable ids on redelivery, and the same events rebuilt from Temporal history."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta

import pytest
from aiohttp import web
from temporalio.client import WorkflowExecutionStatus

from activities.audit import build_audit_sinks
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import (
    Actor,
    ApproveInput,
    CancelInput,
    DenyInput,
    ExtendInput,
    LifecycleEvent,
    RefusedInput,
    RequestState,
    RequestView,
    Role,
)
from keycard.policy import DecisionRefused
from keycard.provenance import flow_digest
from keycard.settings import Settings
from starter.audit_trail import history_events
from starter.protocol import Ask
from tests.harness import (
    ALICE,
    BOB,
    CAROL,
    CONFIG,
    DAVE,
    MemorySink,
    ask,
    running_stack,
    state_is,
    unique_id,
)
from tests.polling import eventually

ALICE_ACTOR = Actor(email="alice@example.com")


def with_destinations(*names_: str) -> str:
    """The test config with audit destinations of these names (the tests supply the sinks)."""
    lines = "".join(f"    - {{type: stdout, name: {n}}}\n" for n in names_)
    return CONFIG + "\naudit:\n  destinations:\n" + lines


class SwitchableSink(MemorySink):
    """A destination that is down until switched on: it refuses every write meanwhile."""

    def __init__(self, up: bool = True) -> None:
        super().__init__()
        self.up = up
        self.refused = 0

    async def write(self, events: list[LifecycleEvent]) -> None:
        if not self.up:
            self.refused += 1
            raise ConnectionError("destination is down")
        await super().write(events)


class LostAckSink(MemorySink):
    """Stores every batch, but the first answer for each batch is lost, so it is delivered again."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    async def write(self, events: list[LifecycleEvent]) -> None:
        await super().write(events)
        first = events[0].id
        if first not in self._seen:
            self._seen.add(first)
            raise TimeoutError("the answer never arrived")


request = ask


def summary(events: list[LifecycleEvent]) -> list[tuple]:
    """(type, actor, state) per event. `request.pending` (the cue to ask approvers) is checked on
    its own: a signal sent with the start may land before or after it."""
    return [
        (e.type, e.actor.display if e.actor else None, e.state.value)
        for e in events
        if e.type != "request.pending"
    ]


# --- the sequence -----------------------------------------------------------------------------


async def test_a_lifecycle_through_expiry_leaves_exactly_these_events(time_env):
    async with running_stack(time_env.client) as stack:
        input = stack.keycard.prepare(
            Ask(
                flow="prod-power-user",
                target="prod",
                duration="1h",
                reason="incident 4312",
                fields={"incident": "4312"},
                requester=ALICE,
            ),
            request_id=unique_id(),
        )
        handle = await stack.client.start_workflow(
            names.ACCESS_REQUEST_WORKFLOW,
            input,
            id=input.request_id,
            task_queue=stack.task_queue,
            result_type=RequestView,
        )
        await handle.signal("approve", ApproveInput(actor=DAVE))  # not an approver: refused
        await handle.signal("approve", ApproveInput(actor=BOB, comment="go ahead"))

        async def active():
            view = await handle.query(names.REQUEST_STATUS, result_type=RequestView)
            return view.state is RequestState.ACTIVE

        await eventually(active)
        await handle.signal(
            "extend", ExtendInput(actor=ALICE_ACTOR, duration=timedelta(minutes=30))
        )
        final = await handle.result()

    events = [e for e in stack.audit.events if e.request_id == input.request_id]
    assert summary(events) == [
        ("request.created", "alice@example.com", "PENDING"),
        ("decision.refused", "dave@example.com", "PENDING"),
        ("request.approved", "bob@example.com", "GRANTING"),
        ("access.granted", None, "ACTIVE"),
        ("access.extended", "alice@example.com", "ACTIVE"),
        ("access.expiring", None, "ACTIVE"),
        ("access.ended", None, "ENDED"),
        ("access.sessions_ended", None, "ENDED"),
    ]
    # Ids count up without gaps. `request.pending` is there unless the signalled approval landed
    # before the AWS check finished (then nobody needed asking).
    assert [e.id for e in events] == [f"{input.request_id}/{n}" for n in range(1, len(events) + 1)]
    assert [e.state.value for e in events if e.type == "request.pending"] in (["PENDING"], [])
    assert {e.run_id for e in events} == {handle.result_run_id}
    assert [e.time for e in events] == sorted(e.time for e in events)

    created, refused, approved, granted, extended, _expiring, ended, sessions = [
        e for e in events if e.type != "request.pending"
    ]
    flow = parse_config(CONFIG).flow("prod-power-user")  # a config from text: no file, no commit
    assert created.detail == {
        "approvers": ["bob@example.com", "carol@example.com"],
        "approvals_required": 1,
        "approval_timeout": "1h",
        "policy": {"digest": flow_digest(flow), "commit": None, "path": None, "dirty": False},
    }
    assert created.fields == {"incident": "4312"}
    assert created.target.model_dump() == {
        "name": "prod",
        "label": "Production",
        "strategy": "aws_sso",
        "settings": {"account_id": "111111111111", "permission_set": "PowerUserAccess"},
    }
    assert (created.flow, created.duration, created.reason) == (
        "prod-power-user",
        timedelta(hours=1),
        "incident 4312",
    )
    assert refused.detail == {
        "decision": "approve",
        "code": "NotAnApprover",
        "reason": "dave@example.com is not an approver of flow prod-power-user",
    }
    assert approved.detail == {"comment": "go ahead", "approvals": 1, "approvals_required": 1}
    # Decisions that came as signals say so, whatever door their actor named.
    assert [refused.actor.via, approved.actor.via, extended.actor.via] == ["signal"] * 3
    assert final.approvals[0].actor.via == "signal" and final.decided_by.via == "signal"
    assert granted.detail["standing"] is False
    assert extended.detail["by"] == "30m"
    assert datetime.fromisoformat(extended.detail["expires_at"]) == final.expires_at
    assert ended.detail == {"removed": True, "standing": False, "other_leases": 0}
    assert sessions.detail.keys() == {
        "permission_set_arn",
        "account_id",
        "denied_before",
        "seconds",
    }
    assert datetime.fromisoformat(sessions.detail["denied_before"]) > granted.time
    # Expiry is exact: an hour and the half-hour extension after the grant.
    assert (
        timedelta(hours=1, minutes=30) <= ended.time - granted.time < timedelta(hours=1, minutes=31)
    )

    # The history holds the same events, whatever happened to the destinations.
    assert await history_events(time_env.client, handle.id, handle.result_run_id) == events


async def test_each_approval_and_every_refused_update_is_audited(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack, flow="prod-admin", reason="")
        with pytest.raises(DecisionRefused):
            await stack.keycard.approve(view.id, ALICE_ACTOR, "lgtm")
        await stack.keycard.approve(view.id, BOB)
        with pytest.raises(DecisionRefused):
            await stack.keycard.approve(view.id, BOB)
        await stack.keycard.approve(view.id, CAROL)
        await state_is(stack, view.id, RequestState.ACTIVE)
        with pytest.raises(DecisionRefused):
            await stack.keycard.revoke(view.id, ALICE_ACTOR, "done")
        await stack.keycard.revoke(view.id, DAVE, "done")
        await dev_env.client.get_workflow_handle(view.id).result()

    events = [e for e in stack.audit.events if e.request_id == view.id]
    reported = "rule:signal:refused"  # a front door's report of a refusal comes as a signal
    assert summary(events) == [
        ("request.created", "alice@example.com", "PENDING"),
        ("decision.refused", reported, "PENDING"),
        ("request.approved", "bob@example.com", "PENDING"),
        ("decision.refused", reported, "PENDING"),
        ("request.approved", "carol@example.com", "GRANTING"),
        ("access.granted", None, "ACTIVE"),
        ("decision.refused", reported, "ACTIVE"),
        ("access.revoked", "dave@example.com", "ENDED"),
        ("access.sessions_ended", None, "ENDED"),
    ]
    refusals = [e.detail for e in events if e.type == "decision.refused"]
    # ... naming whom it was about, which is all anyone who can signal could claim.
    assert [r["attempted_by"] for r in refusals] == [
        {"email": "alice@example.com", "role": "user", "via": "cli"},
        {"email": "bob@example.com", "role": "user", "via": "cli"},
        {"email": "alice@example.com", "role": "user", "via": "cli"},
    ]
    assert [(r["decision"], r["code"]) for r in refusals] == [
        ("approve", "SelfApproval"),
        ("approve", "AlreadyApproved"),
        ("revoke", "EarlyRevokeNotAllowed"),
    ]
    assert refusals[0]["comment"] == "lgtm"
    assert refusals[2]["reason"].startswith("flow prod-admin does not let requesters end access")
    approvals = [e.detail for e in events if e.type == "request.approved"]
    assert [(a["approvals"], a["approvals_required"]) for a in approvals] == [(1, 2), (2, 2)]
    assert events[-2].detail["comment"] == "done"


async def test_a_forged_refusal_report_is_recorded_as_the_signals_not_the_persons(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await ask(stack)
        admin = Actor(email="erin@example.com", role=Role.ADMIN, via="api")
        await stack.client.get_workflow_handle(view.id).signal(
            names.REQUEST_REFUSED,
            RefusedInput(actor=admin, decision="revoke", code="Forbidden", reason="made up"),
        )
        event = await stack.audit.wait_for(view.id, "decision.refused")

    assert event.actor == Actor(rule="signal:refused", via="signal")
    assert event.detail["attempted_by"] == {
        "email": "erin@example.com",
        "role": "admin",
        "via": "api",
    }


async def test_denied_cancelled_and_unanswered_requests_say_who_or_why(time_env):
    async with running_stack(time_env.client) as stack:
        handles = {}
        for outcome in ("deny", "cancel", "expire"):
            input = stack.keycard.prepare(Ask(flow="prod-power-user", target="prod", reason="x", requester=ALICE), request_id=unique_id())  # fmt: skip
            handles[outcome] = await stack.client.start_workflow(
                names.ACCESS_REQUEST_WORKFLOW,
                input,
                id=input.request_id,
                task_queue=stack.task_queue,
                result_type=RequestView,
            )
        await handles["deny"].signal("deny", DenyInput(actor=CAROL, comment="not now"))
        await handles["cancel"].signal("cancel", CancelInput(actor=ALICE_ACTOR))
        for handle in handles.values():
            await handle.result()

    def trail(outcome: str) -> list[tuple]:
        return summary([e for e in stack.audit.events if e.request_id == handles[outcome].id])

    assert trail("deny") == [
        ("request.created", "alice@example.com", "PENDING"),
        ("request.denied", "carol@example.com", "DENIED"),
    ]
    assert trail("cancel") == [
        ("request.created", "alice@example.com", "PENDING"),
        ("request.cancelled", "alice@example.com", "CANCELLED"),
    ]
    assert trail("expire") == [
        ("request.created", "alice@example.com", "PENDING"),
        ("request.expired", None, "EXPIRED"),
    ]
    expired = [e for e in stack.audit.events if e.request_id == handles["expire"].id][-1]
    assert expired.detail == {"approval_timeout": "1h"}


async def test_a_failed_grant_is_audited_with_the_cloud_reason(dev_env):
    async with running_stack(dev_env.client) as stack:
        stack.cloud.grant_error = "permission set PowerUserAccess does not exist"
        failed = await request(stack)
        await stack.keycard.approve(failed.id, BOB)
        await dev_env.client.get_workflow_handle(failed.id).result()

    events = [e for e in stack.audit.events if e.request_id == failed.id]
    assert summary(events)[-1] == ("access.grant_failed", None, "FAILED")
    assert events[-1].detail == {
        "error": "permission set PowerUserAccess does not exist",
        "stage": "grant",
    }


# --- delivery ------------------------------------------------------------------------------------


async def test_a_destination_that_is_down_delays_only_itself_and_loses_nothing(dev_env):
    steady, flaky = MemorySink(), SwitchableSink(up=False)
    config = parse_config(with_destinations("steady", "flaky"))
    async with running_stack(
        dev_env.client, config=config, audit_sinks={"steady": steady, "flaky": flaky}
    ) as stack:
        view = await request(stack)
        await stack.keycard.approve(view.id, BOB)
        await state_is(stack, view.id, RequestState.ACTIVE)
        assert stack.cloud.has("alice@example.com")  # granted while a destination is down
        await stack.keycard.revoke(view.id, ALICE_ACTOR, "done")
        await state_is(stack, view.id, RequestState.ENDED)
        assert not stack.cloud.has("alice@example.com")  # and revoked

        async def steady_has_all():
            return (
                len(steady.types(view.id)) == 6
            )  # created, pending, approved, granted, revoked, sessions_ended

        await eventually(steady_has_all)
        handle = dev_env.client.get_workflow_handle(view.id)
        assert (await handle.describe()).status is WorkflowExecutionStatus.RUNNING
        assert flaky.events == [] and flaky.refused >= 1

        flaky.up = True  # back: everything held for it arrives, in order
        await handle.result()

    assert [e.id for e in flaky.events] == [e.id for e in steady.events]
    assert flaky.events == steady.events
    # The others went on in rounds while flaky caught up alone (activities/delivery.py).
    scheduled = await scheduled_activities(dev_env.client, view.id)
    assert scheduled[names.DELIVER_ROUND] >= 2
    assert scheduled[names.DELIVER_AUDIT] >= 1
    assert steady.types(view.id) == [
        "request.created",
        "request.pending",
        "request.approved",
        "access.granted",
        "access.revoked",
        "access.sessions_ended",
    ]


async def test_a_healthy_request_delivers_in_rounds_and_its_history_keeps_every_event(dev_env):
    """One activity a round takes the new events to every destination and to chat; the round's
    input is the history's record of them, so a memo is written only for an event no round
    carried when it happened. Export still finds every event, once."""
    first, second = MemorySink(), MemorySink()
    config = parse_config(with_destinations("first", "second"))
    async with running_stack(
        dev_env.client, config=config, audit_sinks={"first": first, "second": second}
    ) as stack:
        view = await request(stack)
        await stack.keycard.deny(view.id, BOB, "no")
        handle = dev_env.client.get_workflow_handle(view.id)
        await handle.result()

    types = ["request.created", "request.pending", "request.denied"]
    assert first.types(view.id) == second.types(view.id) == types
    scheduled = await scheduled_activities(dev_env.client, view.id)
    assert scheduled[names.DELIVER_AUDIT] == scheduled[names.SEND_NOTIFICATION] == 0
    assert 1 <= scheduled[names.DELIVER_ROUND] <= len(types)  # not 3 activities per event
    memos = 0
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_properties_modified_event_attributes"):
            memos += 1
    assert memos < len(types)
    exported = await history_events(dev_env.client, view.id, None)
    assert exported == first.events


async def scheduled_activities(client, workflow_id: str) -> Counter:
    """How many times each activity type was scheduled in a workflow's history."""
    counts: Counter = Counter()
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.HasField("activity_task_scheduled_event_attributes"):
            counts[event.activity_task_scheduled_event_attributes.activity_type.name] += 1
    return counts


async def test_redelivered_events_keep_their_ids(dev_env):
    steady, lossy = MemorySink(), LostAckSink()
    config = parse_config(with_destinations("steady", "lossy"))
    async with running_stack(
        dev_env.client, config=config, audit_sinks={"steady": steady, "lossy": lossy}
    ) as stack:
        view = await request(stack)
        await stack.keycard.deny(view.id, BOB, "no")
        await dev_env.client.get_workflow_handle(view.id).result()

    received = [e.id for e in lossy.events]
    assert len(received) > len(steady.events)  # some events came twice...
    assert list(dict.fromkeys(received)) == [e.id for e in steady.events]  # ...under the same id
    by_id: dict[str, LifecycleEvent] = {}
    for event in lossy.events:
        assert by_id.setdefault(event.id, event) == event  # and identical


async def test_a_request_without_destinations_still_records_its_events(dev_env):
    config = parse_config(CONFIG + "\naudit:\n  destinations: []\n")
    async with running_stack(dev_env.client, config=config, audit_sinks={}) as stack:
        view = await request(stack)
        await stack.keycard.cancel(view.id, ALICE_ACTOR)
        handle = dev_env.client.get_workflow_handle(view.id)
        await handle.result()

    events = await history_events(dev_env.client, view.id, None)
    assert [e.type for e in events] == ["request.created", "request.pending", "request.cancelled"]


# --- secrets --------------------------------------------------------------------------------------


async def test_secrets_and_tokens_never_reach_the_audit_trail(dev_env, monkeypatch, tmp_path):
    header_secret = "intake-secret-8f1f0c7a9d"
    slack_token = "xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOp"
    monkeypatch.setenv("KEYCARD_TEST_INTAKE_TOKEN", header_secret)
    received: list[tuple[dict, object]] = []

    async def intake(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.json()))
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/intake", intake)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    config = parse_config(
        CONFIG
        + f"""
audit:
  destinations:
    - type: http
      url: http://127.0.0.1:{port}/intake
      headers: {{Authorization: "${{KEYCARD_TEST_INTAKE_TOKEN}}"}}
    - {{type: jsonl, path: "{tmp_path / "audit.jsonl"}"}}
"""
    )
    sinks = build_audit_sinks(config.audit, Settings(), config.aws)
    try:
        async with running_stack(dev_env.client, config=config, audit_sinks=sinks) as stack:
            stack.cloud.grant_error = (
                "AccessDenied calling https://sso.example.com/assign?api_key=abc123secret "
                "with Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
            )
            view = await request(stack, reason=f"paste from chat: {slack_token}")
            await stack.keycard.approve(view.id, BOB, f"token was {slack_token}")
            handle = dev_env.client.get_workflow_handle(view.id)
            await handle.result()
            history = json.dumps((await handle.fetch_history()).to_json_dict())
    finally:
        await sinks["http"].aclose()  # type: ignore[attr-defined]
        await runner.cleanup()

    assert received and all(h["Authorization"] == header_secret for h, _ in received)
    trail = json.dumps([body for _, body in received]) + (tmp_path / "audit.jsonl").read_text()
    exported = json.dumps([e.model_dump(mode="json") for e in await history_events(
        dev_env.client, view.id, None
    )])  # fmt: skip
    for text in (trail, exported):
        assert "api_key=[redacted]" in text and "Bearer [redacted]" in text
        for secret in (header_secret, slack_token, "abc123secret", "c2lnbmF0dXJl"):
            assert secret not in text
    assert header_secret not in history  # the worker reads it from its environment, nowhere else
