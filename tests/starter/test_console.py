"""The web console on the real workflows: sign in, ask, approve, see access and revoke it, each
person seeing only what the read model lets them; forms without the session's CSRF token, forged
sessions and removed tokens are refused with a sentence."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from keycard.models import Role
from starter.api.auth import TokenBook
from starter.run.http import create_app
from starter.web import ConsoleOptions
from tests.harness import ALICE, BOB, running_stack, unique_id
from tests.starter.conftest import TOKENS, Api, api_config, new_account_id


@asynccontextmanager
async def browser(api: Api, app=None) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser does, on the test's app (or another)."""
    transport = httpx.ASGITransport(app=app or api.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http:
        yield http


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def said(page: httpx.Response) -> str:
    """The page's alert, as a person reads it."""
    match = re.search(r'class="error" role="alert">([^<]*)<', page.text)
    return html.unescape(match.group(1)) if match else ""


async def sign_in(http: httpx.AsyncClient, who: str) -> None:
    form = await http.get("/signin")
    answer = await http.post("/signin", data={"csrf": csrf(form), "token": TOKENS[who]})
    assert answer.status_code == 303, answer.text[:300]
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and TOKENS[who].lower() not in cookie


async def post(http: httpx.AsyncClient, path: str, page: str, **data: str) -> httpx.Response:
    """Submit a form found on `page`, as a browser would (with that page's CSRF token)."""
    token = csrf(await http.get(page))
    return await http.post(path, data={"csrf": token, **data})


async def ask(http: httpx.AsyncClient, **overrides: str) -> str:
    form = {
        "flow": "prod-power-user",
        "target": "prod",
        "duration": "1h",
        "reason": "incident 4312",
        "field.incident": "4312",
        **overrides,
    }
    answer = await post(http, "/new", "/new", **form)
    assert answer.status_code == 303, said(answer) or answer.text[:300]
    return answer.headers["location"].removeprefix("/requests/")


async def test_the_whole_story_in_the_console(api: Api):
    async with browser(api) as alice, browser(api) as bob, browser(api) as erin:
        await sign_in(alice, "alice")
        await sign_in(bob, "bob")
        await sign_in(erin, "admin")

        request_id = await ask(alice)
        page = await alice.get(f"/requests/{request_id}")
        assert "PENDING" in page.text and "incident 4312" in page.text

        refused = await post(alice, f"/requests/{request_id}/approve", f"/requests/{request_id}")
        assert refused.status_code == 403
        assert said(refused).startswith("alice@example.com cannot approve their own request")

        home = await bob.get("/")
        to_approve = home.text.split('id="decide-heading"')[1].split('id="mine-heading"')[0]
        assert request_id in to_approve
        approved = await post(
            bob, f"/requests/{request_id}/approve", f"/requests/{request_id}", comment="go"
        )
        assert approved.status_code == 303, said(approved)
        view = await api.stack.keycard.wait(request_id)
        assert view.state.value == "ACTIVE" and api.has_access("alice@example.com")
        assert view.approvals[0].actor.via == "console"
        [created] = [
            e for e in api.stack.audit.events if e.request_id == request_id
            if e.type == "request.created"
        ]  # fmt: skip
        assert created.actor.via == "console"  # asked in the console, audited as such

        active = await alice.get(f"/requests/{request_id}")
        assert "ACTIVE" in active.text and "data-countdown" in active.text
        assert "request.approved" in active.text  # the timeline, from history

        access = await erin.get("/access")
        assert access.status_code == 200 and request_id in access.text
        assert request_id in (await erin.get("/access?person=alice&flow=prod-power-user")).text
        assert request_id not in (await erin.get("/access?person=carol")).text
        assert request_id not in (await erin.get("/access?flow=prod-admin")).text
        revoked = await post(
            erin, f"/requests/{request_id}/revoke", f"/requests/{request_id}", comment="done"
        )
        assert revoked.status_code == 303, said(revoked)
        ended = await api.stack.keycard.wait(request_id, until=(), timeout=timedelta(seconds=30))
        assert ended.state.value == "ENDED" and not api.has_access("alice@example.com")


async def test_people_see_only_what_they_may_read(api: Api):
    async with browser(api) as alice, browser(api) as dave:
        await sign_in(alice, "alice")
        await sign_in(dave, "dave")
        request_id = await ask(alice)

        hidden = await dave.get(f"/requests/{request_id}")
        assert hidden.status_code == 404 and said(hidden) == f"there is no request {request_id}"
        decided = await post(dave, f"/requests/{request_id}/deny", "/")
        assert decided.status_code == 404
        assert request_id not in (await dave.get("/")).text
        assert (await dave.get("/access")).status_code == 403
    assert (await api.get(request_id))["state"] == "PENDING"


async def test_a_refused_form_keeps_what_was_typed_and_says_why(api: Api):
    async with browser(api) as alice:
        await sign_in(alice, "alice")
        answer = await post(
            alice, "/new", "/new", flow="prod-power-user", target="prod", duration="1h",
            reason="needs it", **{"field.incident": "x" * 1001},
        )  # fmt: skip
    assert answer.status_code == 422
    assert said(answer) == "field incident is longer than 1000 characters; shorten it"
    assert ">needs it</textarea>" in answer.text


async def test_a_start_time_from_the_form_schedules_the_access(api: Api):
    start = (datetime.now(UTC) + timedelta(hours=5)).replace(second=0, microsecond=0)
    async with browser(api) as alice:
        await sign_in(alice, "alice")
        request_id = await ask(alice, start_at=start.strftime("%Y-%m-%dT%H:%M"))
        page = await alice.get(f"/requests/{request_id}")
        assert f'<dt>Starts</dt><dd><time datetime="{start.isoformat()}">' in page.text
        assert (await api.get(request_id))["start_at"].startswith(start.strftime("%Y-%m-%dT%H:%M"))
        await api.decide(request_id, "cancel", "alice")
        too_far = await post(
            alice, "/new", "/new", flow="prod-power-user", target="prod", duration="1h",
            reason="later", start_at=(start + timedelta(days=8)).strftime("%Y-%m-%dT%H:%M"),
        )  # fmt: skip
    assert too_far.status_code == 422
    assert "more than 7d ahead, flow prod-power-user's max_start_delay" in said(too_far)


async def test_forms_without_the_sessions_csrf_token_are_refused(api: Api):
    async with browser(api) as alice:
        await sign_in(alice, "alice")
        before = len(
            (await api.http.get("/v1/requests", headers=_auth("alice"))).json()["requests"]
        )
        forged_signout = await alice.post("/signout", data={"csrf": "forged"})
        assert forged_signout.status_code == 403 and (await alice.get("/")).status_code == 200
        for token in ("", "forged"):
            answer = await alice.post(
                "/new", data={"csrf": token, "flow": "prod-power-user", "target": "prod",
                              "duration": "1h", "reason": "x", "field.incident": "1"},
            )  # fmt: skip
            assert answer.status_code == 403
            assert "did not come from this console" in said(answer)
    after = len((await api.http.get("/v1/requests", headers=_auth("alice"))).json()["requests"])
    assert after == before


async def test_signed_out_forged_and_revoked_sessions_go_to_sign_in(api: Api):
    async with browser(api) as anonymous:
        assert (await anonymous.get("/")).headers["location"] == "/signin"
        bad = await post(anonymous, "/signin", "/signin", token="kc_not-a-token")
        assert bad.status_code == 401 and "not valid" in said(bad)
        anonymous.cookies.set("keycard_session", "eyJ0b2tlbl9oYXNoIjogIngifQ==.forged.sig")
        assert (await anonymous.get("/")).headers["location"] == "/signin"

    # A session lasts only as long as its token is in keycard.yaml (here: the API restarted
    # without alice's entry, with the same session key).
    async with browser(api) as alice:
        await sign_in(alice, "alice")
        assert (await alice.get("/")).status_code == 200
        tokens = api.app.state.tokens
        config = api.stack.keycard.config
        api.app.state.tokens = TokenBook(
            [t for t in config.api.tokens if t.email != "alice@example.com"]
        )
        try:
            assert (await alice.get("/")).headers.get("location") == "/signin"
        finally:
            api.app.state.tokens = tokens


@pytest.mark.parametrize("dev", [False, True], ids=["elsewhere", "keycard dev"])
async def test_the_demo_sign_in_exists_only_in_keycard_dev(api: Api, dev: bool):
    users = {"alice@example.com": Role.USER} if dev else {}
    app = create_app(api.stack.keycard, console=ConsoleOptions(dev_users=users))
    async with browser(api, app) as http:
        page = await http.get("/signin")
        assert ("sign in as a demo user" in page.text) is dev
        answer = await http.post(
            "/signin/dev", data={"csrf": csrf(page), "email": "alice@example.com"}
        )
        if dev:
            assert answer.status_code == 303 and (await http.get("/")).status_code == 200
        else:
            assert answer.status_code == 403 and "only for `keycard dev`" in said(answer)


def _auth(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[who]}"}


async def test_the_pages_assets_are_served_whole_without_a_cdn(api: Api):
    """Served by Keycard itself (and whole: a middleware once cut file bodies off)."""
    async with browser(api) as http:
        css = await http.get("/console/static/console.css")
        js = await http.get("/console/static/console.js")
        page = await http.get("/signin")
    assert css.status_code == 200 and "--accent" in css.text
    assert js.status_code == 200 and "data-poll" in js.text
    assert "http" not in re.sub(r'href="/[^"]*"', "", page.text.split("<body")[0])


async def test_access_now_lists_a_request_whose_worker_is_gone_without_waiting_for_it(api: Api):
    """Its details cannot be asked while no worker runs it; the page still answers, at once."""
    async with running_stack(api.stack.client, config=api_config(new_account_id())) as gone:
        view = await gone.keycard.request(
            flow="prod-power-user", target="prod", reason="x", requester=ALICE,
            fields={"incident": "1"}, request_id=unique_id(),
        )  # fmt: skip
        await gone.keycard.approve(view.id, BOB)
        assert (await gone.keycard.wait(view.id)).state.value == "ACTIVE"
    async with browser(api) as erin:
        await sign_in(erin, "admin")
        started = asyncio.get_running_loop().time()
        page = await erin.get("/access")
        took = asyncio.get_running_loop().time() - started
    assert page.status_code == 200
    silent = page.text.split('id="silent-heading"')[1]
    assert view.id in silent and took < 10


async def test_an_approver_reviews_a_break_glass_use_in_the_console(api: Api):
    view = await api.create(who="carol", flow="restricted")
    await api.decide(view["id"], "break-glass", "carol", justification="prod is down, INC-4312")
    page_of = f"/requests/{view['id']}"
    async with browser(api) as carol, browser(api) as bob:
        await sign_in(carol, "carol")
        await sign_in(bob, "bob")
        assert "Review this break-glass use" not in (await carol.get(page_of)).text  # her own
        page = await bob.get(page_of)
        assert "Review this break-glass use" in page.text and "Review it." in page.text

        bare = await post(bob, f"{page_of}/review", page_of, finding="unjustified")
        assert bare.status_code == 422 and said(bare).startswith("say why the break-glass use")
        done = await post(
            bob, f"{page_of}/review", page_of, finding="unjustified", comment="a restart did it"
        )
        assert done.status_code == 303, said(done)
        page = await bob.get(page_of)
        assert "Review this break-glass use" not in page.text
        assert "unjustified by bob@example.com" in page.text and "a restart did it" in page.text
