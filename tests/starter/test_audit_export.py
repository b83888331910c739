"""`keycard audit export` rebuilds, from Temporal alone, exactly the events that were streamed."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from activities.audit import JsonlSink
from keycard.config import parse_config
from keycard.models import Actor, LifecycleEvent
from keycard.policy import DecisionRefused
from main import app
from starter.audit_trail import export_events, parse_time, visibility_query
from tests.harness import ALICE, BOB, CONFIG, running_stack, unique_id

ALICE_ACTOR = Actor(email="alice@example.com")


async def visible(client, ids: set[str]) -> None:
    """Wait until visibility lists every one of these requests as closed."""
    query = " OR ".join(f"WorkflowId = '{i}'" for i in ids)
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        closed = {e.id async for e in client.list_workflows(query) if e.close_time}
        if closed == ids:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not visible in time: {ids - closed}")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
async def streamed(dev_env, tmp_path_factory):
    """Four requests with different endings, streamed to a JSONL file; returns (ids, events, t0)."""
    path = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    config = parse_config(CONFIG + "\naudit:\n  destinations: [{type: jsonl}]\n")
    started = datetime.now(UTC) - timedelta(seconds=1)
    async with running_stack(
        dev_env.client, config=config, audit_sinks={"jsonl": JsonlSink(path)}
    ) as stack:

        async def ask(flow: str = "prod-power-user") -> str:
            view = await stack.keycard.request(
                flow=flow, target="prod", reason="incident 4312", requester=ALICE,
                request_id=unique_id(),
            )  # fmt: skip
            return view.id

        revoked, denied, cancelled, admin = (
            await ask(),
            await ask(),
            await ask(),
            await ask("prod-admin"),
        )
        await stack.keycard.approve(revoked, BOB, "ok")
        with pytest.raises(DecisionRefused):
            # Refused either way: not active yet, or (once granted, which can be this quick)
            # past the flow's 4h maximum.
            await stack.keycard.extend(revoked, ALICE_ACTOR, "9h")
        await stack.keycard.deny(denied, BOB, "no")
        with pytest.raises(DecisionRefused):
            await stack.keycard.approve(cancelled, ALICE_ACTOR)  # self-approval
        await stack.keycard.cancel(cancelled, ALICE_ACTOR)
        await stack.keycard.deny(admin, BOB)
        views = [await stack.keycard.get(revoked)]
        while views[-1].state.value != "ACTIVE":
            await asyncio.sleep(0.05)
            views.append(await stack.keycard.get(revoked))
        await stack.keycard.revoke(revoked, ALICE_ACTOR)
        ids = {revoked, denied, cancelled, admin}
        for request_id in ids:
            await dev_env.client.get_workflow_handle(request_id).result()
    await visible(dev_env.client, ids)
    events = [LifecycleEvent.model_validate_json(line) for line in path.read_text().splitlines()]
    return (
        {"revoked": revoked, "denied": denied, "cancelled": cancelled, "admin": admin},
        events,
        started,
    )


def ours(events: list[LifecycleEvent], *request_ids: str) -> list[LifecycleEvent]:
    return [e for e in events if e.request_id in request_ids]


def in_time_order(events: list[LifecycleEvent]) -> list[LifecycleEvent]:
    return sorted(events, key=lambda e: (e.time, e.workflow_id, int(e.id.rsplit("/", 1)[1])))


async def test_the_export_equals_the_stream(dev_env, streamed):
    requests, events, started = streamed
    exported = await export_events(dev_env.client, since=started)

    assert ours(exported, *requests.values()) == in_time_order(events)
    types = {rid: [e.type for e in ours(events, rid)] for name, rid in requests.items()}
    assert types[requests["revoked"]] == [
        "request.created",
        "request.pending",
        "request.approved",
        "decision.refused",
        "access.granted",
        "access.revoked",
        "access.sessions_ended",
    ] or types[requests["revoked"]] == [
        "request.created",
        "request.pending",
        "request.approved",
        "access.granted",
        "decision.refused",
        "access.revoked",
        "access.sessions_ended",
    ]
    assert types[requests["cancelled"]] == [
        "request.created",
        "request.pending",
        "decision.refused",
        "request.cancelled",
    ]


async def test_the_export_filters_by_flow_and_time(dev_env, streamed):
    requests, events, started = streamed
    power_user = await export_events(dev_env.client, since=started, flow="prod-power-user")
    assert requests["admin"] not in {e.request_id for e in power_user}
    assert ours(power_user, requests["denied"]) == ours(events, requests["denied"])

    denial = next(e for e in events if e.type == "request.denied" and e.flow == "prod-admin")
    before = await export_events(dev_env.client, since=started, until=denial.time)
    # Everything of that request but its denial (created, pending, ...) came before it.
    assert ours(before, requests["admin"]) == ours(events, requests["admin"])[:-1]
    after = await export_events(dev_env.client, since=denial.time)
    assert ours(after, requests["admin"]) == [denial]


async def test_the_cli_writes_the_export_as_json_lines(dev_env, streamed, monkeypatch):
    requests, events, started = streamed
    address = dev_env.client.service_client.config.target_host
    monkeypatch.setenv("TEMPORAL_ADDRESS", address)
    args = ["audit", "export", "--since", started.isoformat(), "--flow", "prod-power-user"]

    result = await asyncio.to_thread(CliRunner().invoke, app, args)

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    mine = [line for line in lines if line["request_id"] in requests.values()]
    streamed_lines = [json.loads(e.model_dump_json()) for e in in_time_order(events)]
    assert mine == [line for line in streamed_lines if line["flow"] == "prod-power-user"]
    assert "event(s) from" in result.stderr


def test_the_visibility_query_covers_requests_alive_in_the_window():
    """... and the runs of the other workflows that write events: the config record's
    (workflows/config.py), whose events say which flows changed, kept for a flow's trail when
    they name it; drift sweeps'; and grants', which write the events others made for them."""
    since, until = parse_time("2026-01-01"), parse_time("2026-02-01T12:00+02:00")
    assert visibility_query(since, until, "prod-admin") == (
        "((WorkflowType = 'AccessRequestWorkflow' AND KeycardFlow = 'prod-admin') "
        "OR WorkflowType = 'ConfigWorkflow' OR WorkflowType = 'DriftSweepWorkflow' "
        "OR WorkflowType = 'GrantWorkflow') AND StartTime < '2026-02-01T10:00:00.000000Z' "
        "AND (CloseTime >= '2026-01-01T00:00:00.000000Z' OR ExecutionStatus = 'Running')"
    )


# --- `keycard audit verify`: the chain and the history show tampering -----------------------------


async def _export(dev_env, started, monkeypatch, tmp_path) -> list[str]:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    args = ["audit", "export", "--since", started.isoformat()]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


async def _verify(lines: list[str], tmp_path, *options: str):
    trail = tmp_path / f"trail-{len(list(tmp_path.iterdir()))}.jsonl"
    trail.write_text("".join(line + "\n" for line in lines))
    return await asyncio.to_thread(
        CliRunner().invoke, app, ["audit", "verify", str(trail), *options]
    )


def _swap(lines: list[str], first: str, second: str) -> list[str]:
    ids = [json.loads(line)["id"] for line in lines]
    i, j = ids.index(first), ids.index(second)
    swapped = list(lines)
    swapped[i], swapped[j] = lines[j], lines[i]
    return swapped


def _without(lines: list[str], event_id: str) -> list[str]:
    return [line for line in lines if json.loads(line)["id"] != event_id]


async def test_a_clean_export_verifies_against_its_chain_and_history(
    dev_env, streamed, monkeypatch, tmp_path
):
    requests, events, started = streamed
    lines = await _export(dev_env, started, monkeypatch, tmp_path)
    mine = [line for line in lines if json.loads(line)["request_id"] in requests.values()]
    assert all(json.loads(line)["hash"] for line in mine)  # every event of ours is chained
    first = json.loads(next(line for line in mine if json.loads(line)["id"].endswith("/1")))
    assert first["prev_hash"] is None

    result = await _verify(lines, tmp_path)
    assert result.exit_code == 0, result.output
    assert "compared with Temporal's history" in result.output
    assert "OK: nothing missing, altered or reordered." in result.output
    # The sink's own file (the stream) verifies too, with an event delivered twice (at least
    # once: a worker that died before it could report the write).
    streamed_lines = [e.model_dump_json() for e in events]
    assert (await _verify(streamed_lines, tmp_path)).exit_code == 0
    twice = streamed_lines[:3] + streamed_lines[2:]
    result = await _verify(twice, tmp_path)
    assert result.exit_code == 0, result.output
    assert "1 redelivered cop(ies) set aside" in result.output


async def test_an_altered_a_removed_and_a_reordered_event_are_named(
    dev_env, streamed, monkeypatch, tmp_path
):
    requests, _, started = streamed
    revoked = requests["revoked"]
    lines = await _export(dev_env, started, monkeypatch, tmp_path)

    altered = []
    for line in lines:
        event = json.loads(line)
        if event["id"] == f"{revoked}/3":
            event["reason"] = "routine"  # someone tidies the trail
            line = json.dumps(event)
        altered.append(line)
    result = await _verify(altered, tmp_path, "--offline")
    assert result.exit_code == 1
    assert f"{revoked}: altered: {revoked}/3: its content does not match its hash" in result.output

    result = await _verify(_without(lines, f"{revoked}/3"), tmp_path, "--offline")
    assert result.exit_code == 1
    assert f"{revoked}: missing: {revoked}/3: between {revoked}/2 and {revoked}/4" in result.output

    result = await _verify(_swap(lines, f"{revoked}/3", f"{revoked}/4"), tmp_path, "--offline")
    assert result.exit_code == 1
    assert f"{revoked}: reordered: {revoked}/4" in result.output

    # The last event of a request leaves no gap in its chain; the history shows it is gone.
    denied = requests["denied"]
    last = max(
        (json.loads(line)["id"] for line in lines if json.loads(line)["request_id"] == denied),
        key=lambda event_id: int(event_id.rsplit("/", 1)[1]),
    )
    cut = _without(lines, last)
    assert (await _verify(cut, tmp_path, "--offline")).exit_code == 0
    result = await _verify(cut, tmp_path)
    assert result.exit_code == 1
    assert f"{denied}: missing: {last}: history has it; the trail does not" in result.output


async def test_what_is_not_a_trail_is_refused_plainly(tmp_path):
    (tmp_path / "notes.txt").write_text("hello\n")
    result = CliRunner().invoke(app, ["audit", "verify", str(tmp_path / "notes.txt"), "--offline"])
    assert result.exit_code == 1
    assert "line 1: not a JSON event" in result.output
