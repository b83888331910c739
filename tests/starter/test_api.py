"""The HTTP API against the real workflows on a Temporal dev server."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime, timedelta

import httpx
import pytest
import structlog
from openapi_spec_validator import validate
from temporalio.client import Client

from keycard import temporal as names
from starter.api.app import ApiOptions
from starter.client import KeycardClient
from starter.run.http import create_app
from tests.harness import running_stack
from tests.polling import eventually
from tests.starter.conftest import (
    TOKENS,
    Api,
    api_config,
    auth,
    free_port,
    new_account_id,
)


def problem(response: httpx.Response, status: int, code: str) -> str:
    """Assert an RFC 9457 problem with this status and code; return its sentence."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"urn:keycard:problem:{code}"
    assert body["title"]
    return body["detail"]


# --- the happy paths -------------------------------------------------------------------------------


async def test_request_approve_extend_revoke(api: Api):
    created = await api.http.post(
        "/v1/requests",
        json={
            "flow": "prod-power-user",
            "target": "prod",
            "duration": "1h",
            "reason": "incident 4312",
            "fields": {"incident": "4312"},
        },
        headers=auth("alice"),
    )
    assert created.status_code == 201
    view = created.json()
    request_id = view["id"]
    assert created.headers["location"] == f"/v1/requests/{request_id}"
    assert view["state"] == "PENDING"
    assert view["requester"]["email"] == "alice@example.com"
    assert view["duration"] == "1h"
    assert view["fields"] == {"incident": "4312"}
    assert view["approvers"] == ["bob@example.com", "carol@example.com"]
    assert (await api.get(request_id, who="bob"))["state"] == "PENDING"

    approved = await api.decide(request_id, "approve", "bob", comment="go ahead")
    assert approved.status_code == 200, approved.text
    assert approved.json()["approvals"][0]["actor"] == {
        "email": "bob@example.com",
        "rule": None,
        "role": "user",
        "via": "api",
        "slack_user_id": None,
        "name": None,
    }
    assert approved.json()["approvals"][0]["comment"] == "go ahead"

    active = await api.http.get(
        f"/v1/requests/{request_id}", params={"wait": "active"}, headers=auth("alice")
    )
    assert active.json()["state"] == "ACTIVE"
    assert api.has_access("alice@example.com")
    expires = datetime.fromisoformat(active.json()["expires_at"])

    extended = await api.decide(request_id, "extend", "alice", duration="30m")
    assert extended.status_code == 200, extended.text
    assert datetime.fromisoformat(extended.json()["expires_at"]) == expires + timedelta(minutes=30)

    revoked = await api.decide(request_id, "revoke", "alice", comment="done")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["state"] == "ENDED"
    assert revoked.json()["end_reason"] == "revoked early by alice@example.com"
    assert not api.has_access("alice@example.com")


async def test_deny_and_cancel(api: Api):
    first = await api.create()
    denied = await api.decide(first["id"], "deny", "carol", comment="not today")
    assert denied.status_code == 200
    assert denied.json()["state"] == "DENIED"
    assert denied.json()["decided_by"]["email"] == "carol@example.com"

    second = await api.create()
    cancelled = await api.http.post(
        f"/v1/requests/{second['id']}/cancel", headers=auth("alice")
    )  # no body at all: the comment is optional
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "CANCELLED"


async def test_two_distinct_approvals(api: Api):
    view = await api.create(flow="prod-admin")
    first = await api.decide(view["id"], "approve", "bob")
    assert first.json()["state"] == "PENDING"
    again = await api.decide(view["id"], "approve", "bob")
    assert problem(again, 409, "AlreadyApproved") == (
        "bob@example.com has already approved this request; it needs 2 different approvers"
    )
    second = await api.decide(view["id"], "approve", "carol")
    assert second.json()["state"] in ("GRANTING", "ACTIVE")


async def test_list_filters_and_pages(api: Api):
    ids = {(await api.create(who="dave"))["id"] for _ in range(3)}

    async def listed():
        response = await api.http.get(
            "/v1/requests",
            params={"requester": "dave@example.com", "state": "PENDING", "flow": "prod-power-user"},
            headers=auth("carol"),  # an approver of the flow
        )
        assert response.status_code == 200, response.text
        found = {row["id"] for row in response.json()["requests"]}
        return found if found == ids else None

    assert await eventually(listed) == ids

    seen, token = [], None
    for _ in range(3):
        params = {"requester": "dave@example.com", "limit": 2}
        if token:
            params["page_token"] = token
        page = (await api.http.get("/v1/requests", params=params, headers=auth("bob"))).json()
        seen += [row["id"] for row in page["requests"]]
        token = page["next_page_token"]
        if not token:
            break
    assert sorted(seen) == sorted(ids)
    row = page["requests"][0]
    assert row["requester"]["email"] == "dave@example.com"  # an object, as everywhere else
    assert row["flow"] == "prod-power-user"
    assert row["summary"] == "dave@example.com → Prod PowerUser (Production), 1h: incident 4312"


@pytest.mark.parametrize("fetch_all", [1000, 0], ids=["one-fetch", "counted-windows"])
async def test_the_list_is_newest_first_across_states_with_expiry_and_decider(
    api: Api, fetch_all: int, monkeypatch
):
    """Temporal's SQL visibility lists open requests before closed ones; the API does not,
    whether it fetches everything at once or counts back in windows of start time."""
    monkeypatch.setattr("starter.client._FETCH_ALL", fetch_all)
    first = await api.create(who="dave")
    await api.decide(first["id"], "approve", "bob")
    await api.stack.keycard.wait(first["id"])  # ACTIVE
    second = await api.create(who="dave")
    await api.decide(second["id"], "deny", "carol")  # closed, yet newer than the active one
    third = await api.create(who="dave")  # open, newest

    async def listed():
        response = await api.http.get(
            "/v1/requests", params={"requester": "dave@example.com"}, headers=auth("bob")
        )
        rows = response.json()["requests"]
        return (
            rows
            if [r["id"] for r in rows][:3] == [third["id"], second["id"], first["id"]]
            else None
        )

    rows = await eventually(listed)
    newest, denied, active = rows[:3]
    assert [r["state"] for r in (newest, denied, active)] == ["PENDING", "DENIED", "ACTIVE"]
    assert active["expires_at"] is not None and active["decided_by"] == "bob@example.com"
    assert denied["decided_by"] == "carol@example.com" and denied["expires_at"] is None
    assert newest["decided_by"] is None
    # Page by page, the same order.
    page_one = (
        await api.http.get(
            "/v1/requests",
            params={"requester": "dave@example.com", "limit": 1},
            headers=auth("bob"),
        )
    ).json()
    page_two = (
        await api.http.get(
            "/v1/requests",
            params={
                "requester": "dave@example.com",
                "limit": 1,
                "page_token": page_one["next_page_token"],
            },
            headers=auth("bob"),
        )
    ).json()
    assert [page_one["requests"][0]["id"], page_two["requests"][0]["id"]] == [
        third["id"],
        second["id"],
    ]
    await api.decide(first["id"], "revoke", "dave")  # leave nothing running


# --- who may read what ---------------------------------------------------------------------------


async def listed_ids(api: Api, who: str, **params) -> set[str]:
    response = await api.http.get("/v1/requests", params=params, headers=auth(who))
    assert response.status_code == 200, response.text
    return {row["id"] for row in response.json()["requests"]}


async def test_people_read_their_own_requests_and_those_they_may_decide_on(api: Api):
    """dave asks; bob and carol approve that flow; alice is neither. Admins read everything.
    A request someone may not read answers exactly as one that does not exist."""
    request_id = (await api.create(who="dave"))["id"]
    readers = {"dave", "bob", "carol", "admin"}

    async def everyone_lists_what_they_may() -> bool:
        found = {who: request_id in await listed_ids(api, who) for who in [*readers, "alice"]}
        return found == {**dict.fromkeys(readers, True), "alice": False}

    assert await eventually(everyone_lists_what_they_may)
    for who in readers:
        assert (await api.get(request_id, who=who))["id"] == request_id
    for path in (f"/v1/requests/{request_id}", f"/v1/requests/{request_id}?wait=active"):
        hidden = await api.http.get(path, headers=auth("alice"))
        unknown = await api.http.get("/v1/requests/req-2222222222", headers=auth("alice"))
        assert hidden.status_code == unknown.status_code == 404
        assert hidden.json()["detail"] == f"there is no request {request_id}"
        assert "reason" not in hidden.text and "dave" not in hidden.text
    # Filters narrow what a reader may see; they never widen it.
    assert request_id not in await listed_ids(api, "alice", requester="dave@example.com")


async def test_a_service_reads_the_requests_it_asked_for_and_no_others(api: Api):
    by_ci = (await api.create(who="ci", requester="alice@example.com"))["id"]
    by_alice = (await api.create(who="alice"))["id"]

    async def ci_lists_its_own() -> set[str] | None:
        found = await listed_ids(api, "ci")
        return found if by_ci in found else None

    found = await eventually(ci_lists_its_own)
    assert found is not None and by_alice not in found
    assert (await api.get(by_ci, who="ci"))["submitted_by"]["email"] == "ci@example.com"
    assert (await api.http.get(f"/v1/requests/{by_alice}", headers=auth("ci"))).status_code == 404
    assert (await api.get(by_ci, who="alice"))["id"] == by_ci  # and the person it is for


async def test_flows_the_caller_may_request(api: Api):
    async def names_for(who: str) -> list[str]:
        response = await api.http.get("/v1/flows", headers=auth(who))
        assert response.status_code == 200
        return [flow["name"] for flow in response.json()["flows"]]

    assert await names_for("alice") == ["prod-power-user", "prod-admin"]
    assert await names_for("carol") == ["prod-power-user", "prod-admin", "restricted"]
    assert await names_for("ci") == ["prod-power-user", "prod-admin", "restricted"]

    flows = (await api.http.get("/v1/flows", headers=auth("alice"))).json()["flows"]
    power = flows[0]
    assert power["durations"] == ["1h", "2h", "30m", "1m"]
    assert power["max_duration"] == "4h"
    assert power["targets"] == [
        {
            "name": "prod",
            "label": "Production",
            "settings": {"account_id": api.account_id, "permission_set": "PowerUserAccess"},
        }
    ]
    assert power["fields"][0]["name"] == "incident"
    assert power["approvers"] == ["bob@example.com", "carol@example.com"]


async def test_health_and_readiness(api: Api):
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    assert (await api.http.get("/readyz")).json() == {"status": "ready"}


async def test_not_ready_without_temporal(api: Api):
    nowhere = await Client.connect(f"127.0.0.1:{free_port()}", lazy=True)
    app = create_app(KeycardClient(nowhere, api_config()))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keycard.test"
    ) as http:
        assert (await http.get("/healthz")).status_code == 200
        detail = problem(await http.get("/readyz"), 503, "TemporalUnavailable")
        assert detail == "Temporal is not reachable"


async def test_calls_answer_even_when_no_worker_does(dev_env):
    """With the workers down, a call fails after its bound with a 504, instead of hanging."""
    config = api_config()
    idle = KeycardClient(dev_env.client, config, task_queue=f"nobody-listens-{new_account_id()}")
    options = ApiOptions(call_timeout=timedelta(seconds=0.5))
    app = create_app(idle, options=options)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://keycard.test"
    ) as http:
        body = {"flow": "prod-power-user", "target": "prod", "reason": "x"}
        created = await http.post("/v1/requests", json=body, headers=auth("alice"))
        assert problem(created, 504, "WorkersNotAnswering") == (
            "Keycard's workers did not answer within 0.5 s, so the outcome is not known: "
            "look the request up, or retry with the same Idempotency-Key"
        )


# --- who may do what ---------------------------------------------------------------------------------


async def test_a_request_made_over_the_api_is_audited_as_made_there(api: Api):
    view = await api.create()

    async def created():
        return [
            e.actor
            for e in api.stack.audit.events
            if e.request_id == view["id"] and e.type == "request.created"
        ]

    [actor] = await eventually(created)
    assert (actor.email, actor.via) == ("alice@example.com", "api")


async def test_admin_approves_as_last_resort(api: Api):
    view = await api.create()
    refused = await api.decide(view["id"], "approve", "dave")
    assert problem(refused, 404, "NotFound") == f"there is no request {view['id']}"
    unknown = await api.decide("req-nosuch", "approve", "dave")
    assert problem(unknown, 404, "NotFound") == "there is no request req-nosuch"
    approved = await api.decide(view["id"], "approve", "admin", comment="on-call lead is out")
    assert approved.status_code == 200, approved.text
    approval = approved.json()["approvals"][0]["actor"]
    assert (approval["email"], approval["role"], approval["via"]) == (
        "erin@example.com",
        "admin",
        "api",
    )

    async def approvals():
        return [
            e.actor
            for e in api.stack.audit.events
            if e.request_id == view["id"] and e.type == "request.approved"
        ]

    audited = await eventually(approvals)
    assert [(a.email, a.role.value) for a in audited] == [("erin@example.com", "admin")]


async def test_break_glass(api: Api):
    ordinary = await api.create()
    refused = await api.decide(
        ordinary["id"], "break-glass", "alice", justification="prod is down, INC-4312"
    )
    assert problem(refused, 403, "BreakGlassNotAllowed").startswith(
        "flow prod-power-user does not allow break-glass"
    )

    view = await api.create(who="carol", flow="restricted")
    other = await api.decide(view["id"], "break-glass", "bob", justification="prod is down")
    problem(other, 403, "BreakGlassNotRequester")
    terse = await api.decide(view["id"], "break-glass", "carol", justification="x")
    problem(terse, 422, "JustificationRequired")
    broken = await api.decide(
        view["id"], "break-glass", "carol", justification="prod is down, INC-4312"
    )
    assert broken.status_code == 200, broken.text
    assert broken.json()["break_glass"] is True
    assert broken.json()["state"] in ("GRANTING", "ACTIVE")


async def test_a_break_glass_use_is_reviewed_by_an_approver(api: Api):
    view = await api.create(who="carol", flow="restricted")
    await api.decide(view["id"], "break-glass", "carol", justification="prod is down, INC-4312")

    own = await api.decide(view["id"], "review", "carol")
    assert problem(own, 403, "SelfReview").startswith("carol@example.com used break-glass")
    bare = await api.decide(view["id"], "review", "bob", finding="unjustified")
    problem(bare, 422, "ReviewNeedsComment")
    reviewed = await api.decide(
        view["id"], "review", "bob", finding="unjustified", comment="a restart would have done"
    )
    assert reviewed.status_code == 200, reviewed.text
    review = reviewed.json()["review"]
    assert (review["finding"], review["by"]["email"], review["by"]["via"]) == (
        "unjustified", "bob@example.com", "api"
    )  # fmt: skip
    problem(await api.decide(view["id"], "review", "admin"), 409, "AlreadyReviewed")

    ordinary = await api.create()
    problem(await api.decide(ordinary["id"], "review", "bob"), 409, "NotBreakGlass")
    wrong = await api.decide(view["id"], "review", "bob", finding="fine")
    assert wrong.status_code == 422


async def test_service_requests_on_behalf_of_a_person(api: Api):
    created = await api.http.post(
        "/v1/requests",
        json={
            "flow": "prod-power-user",
            "target": "prod",
            "reason": "deploy 812",
            "requester": "Alice@Example.com",
        },
        headers=auth("ci"),
    )
    assert created.status_code == 201, created.text
    view = created.json()
    assert view["requester"]["email"] == "alice@example.com"
    assert (view["submitted_by"]["email"], view["submitted_by"]["role"]) == (
        "ci@example.com",
        "service",
    )
    # Alice is the requester, so she cannot approve it; the service may cancel what it asked.
    own = await api.decide(view["id"], "approve", "alice")
    assert problem(own, 403, "SelfApproval").startswith(
        "alice@example.com cannot approve their own request"
    )
    cancelled = await api.decide(view["id"], "cancel", "ci")
    assert cancelled.json()["state"] == "CANCELLED"


async def test_only_services_name_a_requester(api: Api):
    body = {
        "flow": "prod-power-user",
        "target": "prod",
        "reason": "x",
        "requester": "bob@example.com",
    }
    response = await api.http.post("/v1/requests", json=body, headers=auth("alice"))
    assert problem(response, 403, "NotAService") == (
        "alice@example.com may only request access for themselves; "
        "only service tokens may name another requester"
    )
    del body["requester"]
    response = await api.http.post("/v1/requests", json=body, headers=auth("ci"))
    assert problem(response, 422, "RequesterRequired") == (
        "ci@example.com is a service token: set `requester` to the email of the person "
        "the access is for"
    )


# --- errors, each with its status and sentence ----------------------------------------------------------


async def test_missing_and_bad_tokens(api: Api):
    missing = await api.http.get("/v1/flows")
    assert problem(missing, 401, "MissingToken").startswith("this needs an API token")
    assert missing.headers["www-authenticate"] == 'Bearer realm="keycard"'

    # Who you are is checked before what you sent: no token, no validation messages.
    anonymous = await api.http.post("/v1/requests", json={"flow": 1})
    problem(anonymous, 401, "MissingToken")

    basic = await api.http.get("/v1/flows", headers={"Authorization": "Basic YWxpY2U6cHc="})
    problem(basic, 401, "MissingToken")

    wrong = TOKENS["alice"][:-1] + ("A" if TOKENS["alice"][-1] != "A" else "B")
    bad = await api.http.get("/v1/flows", headers={"Authorization": f"Bearer {wrong}"})
    assert problem(bad, 401, "InvalidToken").startswith("the API token is not valid")
    assert 'error="invalid_token"' in bad.headers["www-authenticate"]


async def test_tokens_never_reach_the_logs(api: Api):
    with structlog.testing.capture_logs() as logs:
        await api.create()
        await api.http.get("/v1/flows", headers={"Authorization": "Bearer kc_not-a-real-token"})
    assert any(e["event"] == "api.http" and e["caller"] == "alice@example.com" for e in logs)
    text = repr(logs)
    assert TOKENS["alice"] not in text
    assert "kc_not-a-real-token" not in text


async def test_unknown_request(api: Api):
    assert problem(
        await api.http.get("/v1/requests/req-nosuch", headers=auth("alice")), 404, "NotFound"
    ) == ("there is no request req-nosuch")
    response = await api.decide("req-nosuch", "approve", "bob")
    assert problem(response, 404, "NotFound") == "there is no request req-nosuch"


async def test_refused_decisions_change_nothing(api: Api):
    view = await api.create()
    for verb, who, status, code in [
        ("approve", "alice", 403, "SelfApproval"),
        # dave may not read the request: his refusals answer as if it did not exist
        ("approve", "dave", 404, "NotFound"),
        ("deny", "dave", 404, "NotFound"),
        ("cancel", "bob", 403, "NotTheRequester"),
        ("revoke", "bob", 409, "WrongState"),
    ]:
        problem(await api.decide(view["id"], verb, who), status, code)
    extend = await api.decide(view["id"], "extend", "alice", duration="30m")
    assert problem(extend, 409, "WrongState") == (
        f"request {view['id']} is PENDING; it can no longer be extended"
    )
    after = await api.get(view["id"])
    assert (after["state"], after["approvals"], after["decided_by"]) == ("PENDING", [], None)
    denied = await api.decide(view["id"], "deny", "bob")
    assert denied.json()["state"] == "DENIED"
    # Once the request has closed, a late decision is answered but has nowhere to be recorded
    # (while it is still closing, it would be: a race this test must not run).
    await api.stack.client.get_workflow_handle(view["id"]).result()
    late = await api.decide(view["id"], "approve", "carol")
    assert problem(late, 409, "WrongState") == (
        f"request {view['id']} is DENIED; it can no longer be approved"
    )

    async def audited():
        types = api.stack.audit.types(view["id"])
        return types if "request.denied" in types else None

    # Refusals change no state; each is only recorded, as who tried what (issue #6).
    refused = ["decision.refused"] * 6
    assert await eventually(audited) == [
        "request.created",
        "request.pending",
        *refused,
        "request.denied",
    ]


async def test_invalid_requests(api: Api):
    async def create(**body):
        body = {"flow": "prod-power-user", "target": "prod", "reason": "x", **body}
        return await api.http.post("/v1/requests", json=body, headers=auth("alice"))

    assert problem(await create(flow="nope"), 422, "UnknownFlow") == (
        "there is no flow 'nope'; flows: prod-power-user, prod-admin, restricted"
    )
    assert problem(await create(target="dev"), 422, "UnknownTarget") == (
        "flow prod-power-user has no target 'dev'; targets: prod"
    )
    assert problem(await create(duration="3h"), 422, "DurationNotAllowed") == (
        "flow prod-power-user does not offer 3h; choose one of: 1h, 2h, 30m, 1m"
    )
    assert problem(await create(duration="soon"), 422, "InvalidDuration").startswith(
        "'soon' is not a duration"
    )
    assert problem(await create(reason=""), 422, "ReasonRequired") == (
        "flow prod-power-user requires a reason for access"
    )
    assert problem(await create(fields={"ticket": "1"}), 422, "UnknownField").startswith(
        "flow prod-power-user has no field ticket"
    )
    assert problem(await create(flow="restricted"), 422, "NotARequester") == (
        "alice@example.com may not request flow restricted"
    )
    extend = await api.decide("req-x", "extend", "alice", duration="soon")
    assert problem(extend, 422, "InvalidDuration").startswith("'soon' is not a duration")


async def test_invalid_bodies_are_problems_too(api: Api):
    missing = await api.http.post("/v1/requests", json={"flow": "x"}, headers=auth("alice"))
    named = "name the target: `target` for one, or `targets` for several"
    assert problem(missing, 422, "InvalidInput") == f"body: {named}"
    assert missing.json()["errors"] == [{"location": "body", "message": named}]
    both = await api.http.post(
        "/v1/requests",
        json={"flow": "x", "target": "y", "targets": ["y", "z"]},
        headers=auth("alice"),
    )
    assert problem(both, 422, "InvalidInput") == "body: give `target` or `targets`, not both"

    extra = await api.http.post(
        "/v1/requests", json={"flow": "x", "target": "y", "urgent": True}, headers=auth("alice")
    )
    assert (
        problem(extra, 422, "InvalidInput") == "urgent: is not a known field (check the spelling)"
    )

    not_json = await api.http.post(
        "/v1/requests",
        content=b"{flow:",
        headers={**auth("alice"), "Content-Type": "application/json"},
    )
    assert problem(not_json, 422, "InvalidInput").startswith("body: is not valid JSON")

    limit = await api.http.get("/v1/requests", params={"limit": 0}, headers=auth("alice"))
    assert problem(limit, 422, "InvalidInput") == (
        "query parameter limit: Input should be greater than or equal to 1"
    )
    nul = await api.http.get(
        "/v1/requests", params={"requester": "a\x00@example.com"}, headers=auth("alice")
    )
    assert problem(nul, 422, "InvalidInput") == (
        "query parameter requester: has characters that are not allowed here"
    )
    flow = await api.http.get("/v1/requests", params={"flow": "Prod Admin"}, headers=auth("bob"))
    assert problem(flow, 422, "InvalidInput") == (
        "query parameter flow: must be lower-case letters, digits, - or _, e.g. prod-admin"
    )
    token = await api.http.get(
        "/v1/requests", params={"page_token": "not base64!"}, headers=auth("alice")
    )
    assert problem(token, 422, "InvalidPageToken").startswith("page_token is not one this API")

    no_duration = await api.decide("req-x", "extend", "alice", comment="more")
    assert problem(no_duration, 422, "InvalidInput") == "duration: is required"

    route = await api.http.get("/v1/nothing-here", headers=auth("alice"))
    assert problem(route, 404, "NotFound") == "there is nothing at /v1/nothing-here; see /docs"
    method = await api.http.delete("/v1/flows", headers=auth("alice"))
    problem(method, 405, "MethodNotAllowed")


async def test_no_identity_center_user_is_unprocessable(api: Api):
    body = {
        "flow": "prod-power-user",
        "target": "prod",
        "reason": "x",
        "requester": "zed@example.com",
    }
    response = await api.http.post("/v1/requests", json=body, headers=auth("ci"))
    assert problem(response, 422, "NoSuchUser") == (
        "no Identity Center user has the email zed@example.com"
    )


# --- idempotency and waiting -----------------------------------------------------------------------------


async def test_idempotency_key_returns_the_same_request(api: Api):
    body = {"flow": "prod-power-user", "target": "prod", "reason": "incident 77"}
    key = {"Idempotency-Key": "deploy-812-attempt"}
    first = await api.http.post("/v1/requests", json=body, headers={**auth("alice"), **key})
    again = await api.http.post("/v1/requests", json=body, headers={**auth("alice"), **key})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"

    # The same key from someone else is their own request.
    bobs = await api.http.post("/v1/requests", json=body, headers={**auth("bob"), **key})
    assert bobs.json()["id"] != first.json()["id"]

    # Reusing a key for a different request is refused rather than answered with the old one.
    other = {**body, "duration": "2h"}
    reused = await api.http.post("/v1/requests", json=other, headers={**auth("alice"), **key})
    assert problem(reused, 422, "IdempotencyKeyReused").startswith(
        f"Idempotency-Key 'deploy-812-attempt' was already used for request {first.json()['id']}"
    )

    # Once the request has ended and its workflow closed, the key still answers with it instead
    # of starting another (Temporal would let a closed workflow's id start a new one).
    await api.decide(first.json()["id"], "deny", "bob")
    await api.stack.client.get_workflow_handle(first.json()["id"]).result()
    late = await api.http.post("/v1/requests", json=body, headers={**auth("alice"), **key})
    assert (late.json()["id"], late.json()["state"]) == (first.json()["id"], "DENIED")


async def test_a_retried_decision_is_applied_once(api: Api):
    view = await api.create(flow="prod-admin")
    retry = {**auth("bob"), "Idempotency-Key": "approve-once"}
    first = await api.http.post(f"/v1/requests/{view['id']}/approve", headers=retry)
    again = await api.http.post(f"/v1/requests/{view['id']}/approve", headers=retry)
    assert first.status_code == again.status_code == 200, again.text
    assert [a["actor"]["email"] for a in again.json()["approvals"]] == ["bob@example.com"]
    # Without the key, the same approval is a second one, and refused.
    problem(await api.decide(view["id"], "approve", "bob"), 409, "AlreadyApproved")


async def test_wait_active_holds_the_answer_until_access_is_granted(api: Api):
    body = {"flow": "prod-power-user", "target": "prod", "reason": "script"}
    headers = {**auth("alice"), "Idempotency-Key": "ci-run-1"}
    created = await api.http.post("/v1/requests", json=body, headers=headers)
    request_id = created.json()["id"]

    waiting = asyncio.create_task(
        api.http.post("/v1/requests", params={"wait": "active"}, json=body, headers=headers)
    )
    approved = await api.decide(request_id, "approve", "bob")
    assert approved.status_code == 200
    answer = await waiting
    assert answer.status_code == 201
    assert (answer.json()["id"], answer.json()["state"]) == (request_id, "ACTIVE")
    assert answer.json()["granted_at"] is not None


async def test_wait_active_gives_up_after_its_bound(dev_env):
    async with running_stack(dev_env.client, config=api_config()) as stack:
        app = create_app(stack.keycard, options=ApiOptions(wait_timeout=timedelta(seconds=0.3)))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://keycard.test"
        ) as http:
            response = await http.post(
                "/v1/requests",
                params={"wait": "active"},
                json={"flow": "prod-power-user", "target": "prod", "reason": "x"},
                headers=auth("alice"),
            )
    assert response.status_code == 201
    assert response.json()["state"] == "PENDING"


# --- the document ---------------------------------------------------------------------------------------


async def test_openapi_document_is_valid(api: Api):
    document = (await api.http.get("/openapi.json")).json()
    validate(document)
    create = document["paths"]["/v1/requests"]["post"]
    assert create["operationId"] == "create_request"
    assert create["security"] == [{"HTTPBearer": []}]
    assert "application/problem+json" in create["responses"]["422"]["content"]
    assert set(document["paths"]) >= {
        "/v1/requests",
        "/v1/requests/{request_id}",
        "/v1/requests/{request_id}/approve",
        "/v1/requests/{request_id}/deny",
        "/v1/requests/{request_id}/revoke",
        "/v1/requests/{request_id}/cancel",
        "/v1/requests/{request_id}/extend",
        "/v1/requests/{request_id}/break-glass",
        "/v1/requests/{request_id}/review",
        "/v1/flows",
        "/v1/auth",
        "/healthz",
        "/readyz",
    }
    docs = await api.http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # Served whole by Keycard, so the docs work offline: no CDN anywhere on the page.
    assert "cdn" not in docs.text and "https://" not in docs.text
    script = re.search(r'<script src="([^"]+)"', docs.text)
    assert script and (await api.http.get(script.group(1))).status_code == 200


def test_idempotent_ids_are_stable():
    seed = b"alice@example.com\nkey-1"
    assert names.request_id_from(seed) == names.request_id_from(seed)
    assert names.request_id_from(seed) != names.request_id_from(seed + b"x")
    assert len(names.request_id_from(seed)) == len("req-") + 16
