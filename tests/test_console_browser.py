"""The console in a real browser (Debian's Chromium, driven by Playwright) against `keycard dev`:
alice asks, bob approves, alice watches her access go ACTIVE and count down while the demo AWS
holds it, an admin sees it under Access now and revokes it; alice's self-approval is refused with
the workflow's sentence.

Set KEYCARD_SCREENSHOTS=<dir> to keep a screenshot of each page (the README's come from here).
Without Chromium the test is skipped, except where KEYCARD_REQUIRE_BROWSER=1 (.ci/run) makes that
a failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.starter.test_dev import cli, keycard_dev

CHROMIUM = os.environ.get("KEYCARD_CHROMIUM") or shutil.which("chromium") or ""
# As the machine's notes say: without these, Chromium phones home at every start and is refused.
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

if not CHROMIUM:
    if os.environ.get("KEYCARD_REQUIRE_BROWSER") == "1":
        raise RuntimeError("Chromium is not installed: apt-get install chromium (.ci/run does)")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[tuple[str, dict, Path]]:
    """`keycard dev` on free ports; yields the console's URL, the CLI's environment and cwd."""
    with keycard_dev(tmp_path_factory.mktemp("console")) as run:
        url = re.search(r"Console\s+(http://\S+)/ ", run.banner)
        assert url, run.banner
        yield url.group(1), run.env, run.cwd


@pytest.fixture(scope="module")
async def browser() -> Browser:
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def signed_in(browser: Browser, url: str, email: str) -> Page:
    """A new browser (its own cookies) signed in as a demo user."""
    context = await browser.new_context(base_url=url, viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/signin$"))
    await page.get_by_role("button", name=re.compile(re.escape(email))).click()
    await expect(page.get_by_role("heading", name="Requests", exact=True)).to_be_visible()
    return page


async def shot(page: Page, name: str) -> None:
    folder = os.environ.get("KEYCARD_SCREENSHOTS")
    if folder:
        await asyncio.to_thread(Path(folder).mkdir, parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


async def test_the_whole_story_in_a_browser(dev, browser: Browser):
    url, env, cwd = dev
    alice = await signed_in(browser, url, "alice@example.com")

    # alice asks
    await alice.get_by_role("link", name="Request access").first.click()
    await alice.get_by_text("Prod PowerUser").first.click()  # the flow's section opens
    form = alice.locator("form[action='/new']").filter(
        has=alice.locator("[value='prod-power-user']")
    )
    await form.get_by_label("For how long").select_option("1h")
    await form.get_by_label("Reason").fill("incident 4312: checkout is down")
    await shot(alice, "1-request-form")
    await form.get_by_role("button", name="Ask").click()
    await expect(alice.locator("h1 .state")).to_have_text("PENDING")
    request_id = (await alice.locator("dd code").first.text_content()) or ""
    assert request_id.startswith("req-")
    await shot(alice, "2-pending")
    temporal_link = alice.get_by_role("link", name="in the Temporal UI")
    await expect(temporal_link).to_have_attribute(
        "href", re.compile(rf"^http://localhost:\d+/namespaces/default/workflows/{request_id}$")
    )

    # on a phone: nothing wider than the screen, and every field has a label
    phone = await browser.new_context(base_url=url, viewport={"width": 390, "height": 844})
    small = await phone.new_page()
    await small.context.add_cookies(await alice.context.cookies())
    for path in ("/", "/new", f"/requests/{request_id}"):
        await small.goto(path)
        overflow = await small.evaluate("document.documentElement.scrollWidth - innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a phone"
        unlabelled = await small.evaluate(
            """[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                 .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
                 .map(el => el.name)"""
        )
        assert unlabelled == [], f"{path}: fields without a label: {unlabelled}"
    await phone.close()

    # her own approval is refused with the workflow's sentence (the page offers no button for it;
    # a hand-made form post, with her session and its CSRF token, gets the sentence)
    token = await alice.locator("input[name=csrf]").first.get_attribute("value")
    refused = await alice.request.post(
        f"/requests/{request_id}/approve", form={"csrf": token or "", "comment": ""}
    )
    assert refused.status == 403
    assert "alice@example.com cannot approve their own request" in await refused.text()

    # bob approves from his list
    bob = await signed_in(browser, url, "bob@example.com")
    await expect(bob.locator("section", has_text="To approve")).to_contain_text(request_id)
    await shot(bob, "3-to-approve")
    await bob.get_by_role("link", name=request_id).first.click()
    await bob.get_by_label("Comment (optional)").first.fill("go ahead")
    await bob.get_by_role("button", name="Approve").click()
    await expect(bob.locator("h1 .state")).to_have_text(re.compile("GRANTING|ACTIVE"))
    await shot(bob, "3b-approved")

    # alice's page turns ACTIVE by itself, and counts down
    await expect(alice.locator("h1 .state")).to_have_text("ACTIVE", timeout=30_000)
    await expect(alice.locator("time[data-countdown]")).to_contain_text("left")
    await shot(alice, "4-active")
    held = await asyncio.to_thread(cli, env, cwd, "demo-access", "alice@example.com")
    assert "permission set PowerUserAccess in account 111111111111" in held.stdout, held.stdout

    # an admin sees who has access now, and ends it
    admin = await signed_in(browser, url, "admin@example.com")
    await admin.get_by_role("link", name="Access now").click()
    row = admin.locator("tr", has_text=request_id)
    await expect(row).to_contain_text("alice@example.com")
    await expect(row).to_contain_text("bob@example.com")
    await shot(admin, "5-access-now")
    await row.get_by_role("link", name=request_id).click()
    await admin.get_by_role("button", name="Revoke now").click()
    await expect(admin.locator("h1 .state")).to_have_text(re.compile("REVOKING|ENDED"))
    await expect(alice.locator("h1 .state")).to_have_text("ENDED", timeout=30_000)
    await shot(alice, "6-ended")
    deadline = time.monotonic() + 30
    while (
        "permission set PowerUserAccess in account"
        in (
            held := await asyncio.to_thread(cli, env, cwd, "demo-access", "alice@example.com")
        ).stdout
    ):
        assert time.monotonic() < deadline, "the assignment was not removed"
        await asyncio.sleep(0.5)
    assert "sessions of PowerUserAccess in account 111111111111 issued before" in held.stdout
