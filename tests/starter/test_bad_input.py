"""Hostile and malformed input at the HTTP API: each row is refused with a sentence that names
what was wrong, never a 5xx or a traceback, and changes nothing (no request, no decision, no
access, no audit event).

Rows name the call, the body, the status expected and words the answer must contain.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from tests.starter.conftest import Api, auth

FIVE_MB = "x" * (5 * 1024 * 1024)


@dataclass(frozen=True)
class Row:
    name: str
    body: dict[str, Any]
    status: int
    says: tuple[str, ...]


CREATE_ROWS = [
    Row("overflowing duration", {"duration": "999999999999h"}, 422, ("at most 366d", "1h, 2h")),
    Row("duration past a year", {"duration": "400d"}, 422, ("at most 366d",)),
    Row("duration as a huge number", {"duration": 1e30}, 422, ("duration",)),
    Row("duration of zero", {"duration": "0s"}, 422, ("longer than zero",)),
    Row("duration in words", {"duration": "a while"}, 422, ("such as 30m",)),
    Row("a 5 MB field", {"fields": {"incident": FIVE_MB}}, 413, ("at most 256 KiB",)),
    Row("a 5 MB reason", {"reason": FIVE_MB}, 413, ("at most 256 KiB",)),
    Row("a long field", {"fields": {"incident": "x" * 1001}}, 422, ("field incident", "1000")),
    Row("a long reason", {"reason": "x" * 1001}, 422, ("reason", "1000 characters")),
    Row("a field that is not declared", {"fields": {"ticket": "1"}}, 422, ("no field ticket",)),
    Row("a list as a field value", {"fields": {"incident": [1, 2]}}, 422, ("incident",)),
    Row("an unknown flow", {"flow": "nope"}, 422, ("nope",)),
    Row("an unknown target", {"target": "staging"}, 422, ("staging",)),
    Row("an unknown key", {"color": "red"}, 422, ("color",)),
    Row("a reason that is not text", {"reason": 42}, 422, ("reason",)),
    Row("no flow", {"flow": None}, 422, ("flow",)),
    Row("an empty flow name", {"flow": ""}, 422, ("flow",)),
    Row("a 201-character flow name", {"flow": "x" * 201}, 422, ("flow",)),
    Row("a target as a list", {"target": ["prod"]}, 422, ("target",)),
    Row("a duration the flow does not offer", {"duration": "3h"}, 422, ("1h, 2h",)),
    Row("a duration as a number", {"duration": 3600}, 422, ("duration",)),
    Row("fields as a list", {"fields": ["incident"]}, 422, ("fields",)),
    Row("a field value that is an object", {"fields": {"incident": {"a": 1}}}, 422, ("incident",)),
    Row(
        "someone else as requester",
        {"requester": "bob@example.com"},
        403,
        ("only service tokens",),
    ),
]


@pytest.mark.parametrize("row", CREATE_ROWS, ids=[r.name for r in CREATE_ROWS])
async def test_a_bad_request_is_refused_and_starts_nothing(api: Api, row: Row):
    before = await _listed(api)
    body = {"flow": "prod-power-user", "target": "prod", "reason": "incident 4312", **row.body}

    answer = await api.http.post("/v1/requests", json=body, headers=auth("alice"))

    _assert_refused(answer, row)
    assert await _listed(api) == before
    assert not api.has_access("alice@example.com")


EXTEND_ROWS = [
    Row("overflowing extension", {"duration": "999999999999h"}, 422, ("at most 366d",)),
    Row("empty extension", {"duration": ""}, 422, ("such as 30m",)),
    Row("extension as a huge number", {"duration": 1e30}, 422, ("duration",)),
    Row("a 5 MB comment", {"duration": "30m", "comment": FIVE_MB}, 413, ("at most 256 KiB",)),
    Row("a long comment", {"duration": "30m", "comment": "x" * 2001}, 422, ("comment", "2000")),
    Row("a negative extension", {"duration": "-30m"}, 422, ("such as 30m",)),
    Row("an extension as a number", {"duration": 30}, 422, ("duration",)),
    Row("a comment that is not text", {"duration": "30m", "comment": 5}, 422, ("comment",)),
    Row("an unknown key", {"duration": "30m", "until": "tomorrow"}, 422, ("until",)),
]


@dataclass(frozen=True)
class QueryRow:
    name: str
    params: dict[str, Any]
    says: tuple[str, ...]


LIST_ROWS = [
    QueryRow("an unknown state", {"state": "BOGUS"}, ("state",)),
    QueryRow("a limit of zero", {"limit": 0}, ("limit",)),
    QueryRow("a limit past 500", {"limit": 501}, ("limit",)),
    QueryRow("a limit in words", {"limit": "many"}, ("limit",)),
    QueryRow("a page token never given out", {"page_token": "garbage"}, ("page_token",)),
    QueryRow("a requester that is not an email", {"requester": "not an email"}, ("requester",)),
    QueryRow("a flow name with spaces", {"flow": "prod admin"}, ("flow",)),
]


@pytest.mark.parametrize("row", LIST_ROWS, ids=[r.name for r in LIST_ROWS])
async def test_a_bad_list_query_is_refused_with_what_was_wrong(api: Api, row: QueryRow):
    answer = await api.http.get("/v1/requests", params=row.params, headers=auth("alice"))

    _assert_refused(answer, Row(row.name, row.params, 422, row.says))


@pytest.mark.parametrize("row", EXTEND_ROWS, ids=[r.name for r in EXTEND_ROWS])
async def test_a_bad_extension_is_refused_and_changes_nothing(api: Api, row: Row):
    view = await api.create()
    before = await api.get(view["id"])

    answer = await api.decide(view["id"], "extend", "alice", **row.body)

    _assert_refused(answer, row)
    after = await api.get(view["id"])
    assert (after["state"], after["extensions"]) == (before["state"], before["extensions"])


GRANT_ID = "grant:aws_sso:111111111111:ps-PowerUserAccess:u-alice"


@pytest.mark.parametrize("verb", ["approve", "deny", "cancel", "revoke", "extend"])
async def test_a_grant_workflow_is_not_a_request(api: Api, verb: str):
    body = {"duration": "30m"} if verb == "extend" else {}
    answer = await api.decide(GRANT_ID, verb, "admin", **body)

    assert answer.status_code == 404, answer.text
    assert "no request" in answer.json()["detail"]


async def test_reading_a_grant_workflow_is_not_found(api: Api):
    answer = await api.http.get(f"/v1/requests/{GRANT_ID}", headers=auth("admin"))

    assert answer.status_code == 404, answer.text
    assert "no request" in answer.json()["detail"]


def _assert_refused(answer, row: Row) -> None:
    assert answer.status_code == row.status, answer.text[:500]
    problem = answer.json()
    detail = str(problem.get("detail", "")) + " " + str(problem.get("errors", ""))
    assert "Traceback" not in answer.text
    for words in row.says:
        assert words in detail, f"{row.name}: {words!r} not in {detail[:300]!r}"


async def _listed(api: Api) -> int:
    """Workflows started on this test's task queue (visibility on the dev server is immediate
    enough: a refused call starts nothing, so the count must not move)."""
    await asyncio.sleep(0.3)
    query = f"TaskQueue = '{api.stack.task_queue}'"
    return (await api.stack.client.count_workflows(query)).count


async def test_a_streamed_body_over_the_limit_is_refused_unread(api: Api):
    async def chunks():
        for _ in range(5):
            yield b"x" * (100 * 1024)

    answer = await api.http.post(
        "/v1/requests",
        content=chunks(),
        headers={**auth("alice"), "Content-Type": "application/json"},
    )

    assert answer.status_code == 413, answer.text
    assert "more than" in answer.json()["detail"] and "256 KiB" in answer.json()["detail"]


TOKEN = "kc_Zx9f3Q2pLmN8vT4rS6uW1yA0bC5dE7gH"


async def test_a_pasted_token_is_redacted_before_anything_records_it(api: Api):
    view = await api.create(
        reason=f"urgent, my token is {TOKEN}", fields={"incident": f"see {TOKEN}"}
    )
    await api.decide(view["id"], "approve", "bob", comment=f"ok, and {TOKEN}")

    shown = await api.get(view["id"])
    assert TOKEN not in str(shown) and "[redacted]" in shown["reason"]
    history = await api.stack.client.get_workflow_handle(view["id"]).fetch_history()
    assert TOKEN not in history.to_json()
