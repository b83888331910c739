"""With KEYCARD_PAYLOAD_KEY set, a whole request runs with its payloads encrypted in Temporal: the
history holds no reason or field in clear, and the worker, the audit export, the replayer and the
codec server (for the Temporal UI and CLI) all read it with the key and refuse without it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from temporalio.client import Client, WorkflowHistory

from keycard.codec import PayloadKeyError, PayloadKeys, data_converter, new_key
from keycard.models import Actor, RequestView
from starter.api.app import ApiOptions
from starter.audit_trail import export_events, history_events
from starter.run.http import create_app
from tests.harness import ALICE, BOB, running_stack, unique_id
from tests.starter.conftest import api_config, auth, new_account_id
from tests.starter.test_audit_export import visible
from worker import keycard_replayer
from workflows.access_request import AccessRequestWorkflow

SECRET_REASON = "db-7 is down, see INC-93177"
SECRET_FIELD = "INC-93177-field"
KEY = new_key("k1")
UI = "http://localhost:8233"


@pytest.fixture(scope="module")
async def encrypted(dev_env):
    """One request asked, approved and revoked with every payload encrypted; returns its id,
    the encrypting client and the history as Temporal stores it."""
    client = Client(
        dev_env.client.service_client,
        namespace=dev_env.client.namespace,
        data_converter=data_converter(PayloadKeys.parse(KEY)),
    )
    started = datetime.now(UTC) - timedelta(seconds=1)
    async with running_stack(client, config=api_config(new_account_id())) as stack:
        view = await stack.keycard.request(
            flow="prod-power-user", target="prod", reason=SECRET_REASON, requester=ALICE,
            fields={"incident": SECRET_FIELD}, request_id=unique_id(),
        )  # fmt: skip
        await stack.keycard.approve(view.id, BOB, "ok")
        assert (await stack.keycard.wait(view.id)).state.value == "ACTIVE"
        await stack.keycard.revoke(view.id, Actor(email="alice@example.com"))
        await client.get_workflow_handle(view.id).result()
        app = create_app(stack.keycard, options=ApiOptions(codec_cors_origins=(UI,)))
        await visible(dev_env.client, {view.id})
        history = await dev_env.client.get_workflow_handle(view.id).fetch_history()
        yield view.id, client, history, app, started


async def test_the_stored_history_holds_no_reason_or_field_in_clear(encrypted):
    request_id, client, history, _, _ = encrypted

    stored = history.to_json()
    assert SECRET_REASON not in stored and SECRET_FIELD not in stored
    assert "binary/encrypted" in stored or "YmluYXJ5L2VuY3J5cHRlZA" in stored
    # read with the key, the request is whole
    assert (await client.get_workflow_handle(request_id).describe()).static_summary
    view = await client.get_workflow_handle(request_id).query("status", result_type=RequestView)
    assert view.reason == SECRET_REASON and view.fields == {"incident": SECRET_FIELD}


async def test_the_audit_export_reads_the_trail_with_the_key(encrypted):
    request_id, client, _, _, started = encrypted

    events = [e for e in await export_events(client, since=started) if e.request_id == request_id]

    assert [e.type for e in events][:1] == ["request.created"]
    assert "request.approved" in [e.type for e in events]
    assert events[0].reason == SECRET_REASON
    plain = Client(client.service_client, namespace=client.namespace)  # no key
    with pytest.raises(PayloadKeyError, match="encrypted: set KEYCARD_PAYLOAD_KEY"):
        await history_events(plain, request_id, None)


async def test_the_replayer_replays_it_with_the_key_and_names_the_key_without(
    encrypted, monkeypatch, caplog
):
    _, _, history, _, _ = encrypted
    replayable = WorkflowHistory.from_json(history.workflow_id, history.to_json())

    monkeypatch.setenv("KEYCARD_PAYLOAD_KEY", KEY)
    result = await keycard_replayer(workflows=[AccessRequestWorkflow]).replay_workflow(
        replayable, raise_on_replay_failure=False
    )
    assert result.replay_failure is None, result.replay_failure

    monkeypatch.setenv("KEYCARD_PAYLOAD_KEY", new_key("k2"))
    result = await keycard_replayer(workflows=[AccessRequestWorkflow]).replay_workflow(
        replayable, raise_on_replay_failure=False
    )
    assert result.replay_failure is not None
    said = " ".join(str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    assert "encrypted with key 'k1', which KEYCARD_PAYLOAD_KEY does not hold (it holds k2)" in said


async def test_the_codec_server_decodes_for_an_admin_only(encrypted):
    _, _, history, app, _ = encrypted
    started = history.events[0].workflow_execution_started_event_attributes
    body = {"payloads": MessageToDict(started.input)["payloads"]}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keycard.test"
    ) as http:
        decoded = await http.post("/codec/decode", json=body, headers=auth("admin"))
        as_user = await http.post("/codec/decode", json=body, headers=auth("alice"))
        anonymous = await http.post("/codec/decode", json=body)
        garbage = await http.post("/codec/decode", content=b"{not json", headers=auth("admin"))
        round_trip = await http.post("/codec/encode", json=decoded.json(), headers=auth("admin"))

    assert decoded.status_code == 200, decoded.text
    assert SECRET_REASON in _data(decoded.json())
    assert as_user.status_code == 403 and "admin" in as_user.json()["detail"]
    assert anonymous.status_code == 401
    assert garbage.status_code == 400 and "JSON Payloads" in garbage.json()["detail"]
    assert round_trip.status_code == 200 and SECRET_REASON not in _data(round_trip.json())


async def test_only_the_codec_routes_answer_the_temporal_uis_origin(encrypted):
    app = encrypted[3]
    preflight = {"Origin": UI, "Access-Control-Request-Method": "POST"}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keycard.test"
    ) as http:
        codec = await http.options("/codec/decode", headers=preflight)
        api = await http.options("/v1/requests", headers=preflight)
        stranger = await http.options("/codec/decode", headers={**preflight, "Origin": "https://x"})

    assert codec.headers.get("access-control-allow-origin") == UI
    assert "access-control-allow-origin" not in api.headers
    assert "access-control-allow-origin" not in stranger.headers


def _data(answer: dict) -> str:
    """Every payload's data, as text."""
    return " ".join(
        base64.b64decode(p.get("data", "")).decode(errors="replace") for p in answer["payloads"]
    )
