"""`keycard report` and `GET /v1/reports/access`: an auditor's evidence for a period, from a seeded
run whose every request is known: approved and revoked early, denied after a self-approval
attempt, approved by a hook's rule, break-glass, extended, one still pending, and one decided
under an edited flow."""

from __future__ import annotations

import asyncio
import csv
import io
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from activities.hooks import HookActivities
from keycard.config import ApiSettings, parse_config
from keycard.models import (
    AccessActivity,
    ActivityCall,
    Actor,
    LifecycleEvent,
    Requester,
    RequestState,
    TargetRef,
)
from keycard.policy import DecisionRefused
from keycard.sdk.context import Integrations
from keycard.temporal import config_workflow_id
from main import app
from starter.api.app import ApiOptions
from starter.api.auth import config_entry
from starter.audit_trail import export_events
from starter.client import KeycardClient
from starter.reports.access import AccessReport, build_report
from starter.reports.render import COLUMNS, Format, render
from starter.run.http import create_app
from tests.fake_cloudtrail import running_fake_cloudtrail
from tests.fakes import KNOWN_USERS, FakeCloud
from tests.harness import BOB, CAROL, ask, running_stack, state_is
from tests.polling import eventually
from tests.starter.conftest import IDENTITIES, TOKENS, auth, new_account_id
from tests.workflows.test_access_activity import reader as cloudtrail_reader
from worker import announce_config

ALICE_ACTOR = Actor(email="alice@example.com")
HOOKS = """
from keycard.sdk import Decision, hook


@hook
def on_request(event):
    if "on call" in event.reason:
        return Decision.approve("the requester is on call")
    return None
"""


def seeded_config(account: str, hooks: Path, max_duration: str = "4h"):
    text = textwrap.dedent(f"""
        approver_groups:
          sre-leads: [bob@example.com, carol@example.com]
        flows:
          - name: report-power-user
            strategy: aws_sso
            targets: [{{name: prod, account_id: "{account}", permission_set: PowerUserAccess}}]
            durations: [1h, 30m]
            max_duration: {max_duration}
            approvers: {{groups: [sre-leads]}}
            allow_extension: true
            activity: {{delay: 2s}}
          - name: report-emergency
            strategy: aws_sso
            targets: [{{name: prod, account_id: "{account}", permission_set: AdministratorAccess}}]
            durations: [1h]
            approvers: {{users: [bob@example.com, carol@example.com]}}
            break_glass: true
          - name: report-on-call
            strategy: aws_sso
            targets: [{{name: prod, account_id: "{account}", permission_set: ReadOnlyAccess}}]
            durations: [1h]
            approvers: {{users: [bob@example.com, carol@example.com]}}
            hooks: "{hooks}"
    """)
    tokens = [
        config_entry(TOKENS[who], email, role, name=who)
        for who, (email, role) in IDENTITIES.items()
    ]
    return parse_config(text).model_copy(update={"api": ApiSettings(tokens=tokens)})


@pytest.fixture(scope="module")
async def seeded(dev_env, tmp_path_factory):
    """The known requests, ended as each story says; returns (ids by story, events, period)."""
    hooks = tmp_path_factory.mktemp("hooks") / "hooks.py"
    hooks.write_text(HOOKS)
    account = new_account_id()
    config = seeded_config(account, hooks)
    started = datetime.now(UTC) - timedelta(seconds=1)
    runner = HookActivities(Integrations(), ".", timedelta(seconds=5))
    # grace asks too: a requester no other test uses, so lists elsewhere never see her requests.
    cloud = FakeCloud(users={*KNOWN_USERS, "grace@example.com"})
    async with (
        running_fake_cloudtrail() as trail,
        running_stack(
            dev_env.client,
            config,
            cloud=cloud,
            extra_activities=cloudtrail_reader(trail),
            hook_activities=[runner.evaluate_request, runner.check_approval, runner.observe],
        ) as stack,
    ):
        ids: dict[str, str] = {}
        # What a worker does at its start: say which config it loaded.
        await announce_config(stack.client, config, stack.task_queue)

        async def asked(name: str, **overrides) -> str:
            view = await ask(stack, **{"flow": "report-power-user", **overrides})
            ids[name] = view.id
            return view.id

        approved = await asked("approved")
        await stack.keycard.approve(approved, BOB, "looks right")
        denied = await asked("denied")
        with pytest.raises(DecisionRefused):
            await stack.keycard.approve(denied, ALICE_ACTOR)  # self-approval
        await stack.keycard.deny(denied, BOB, "not today")
        auto = await asked("auto", flow="report-on-call", reason="on call for INC-7")
        glass = await asked("break_glass", flow="report-emergency", reason="db is down")
        await stack.keycard.break_glass(glass, ALICE_ACTOR, "the primary is down, no one answers")
        extended = await asked("extended", requester=Requester(email="grace@example.com"))
        await stack.keycard.approve(extended, CAROL)
        await asked("open")
        edited_config = seeded_config(account, hooks, "8h")
        await announce_config(stack.client, config, stack.task_queue)  # a restart: no event
        await announce_config(stack.client, edited_config, stack.task_queue)
        edited = KeycardClient(stack.client, edited_config, stack.task_queue)
        ids["edited"] = (await ask(edited, flow="report-power-user")).id

        for name in ("approved", "auto", "break_glass", "extended"):
            await state_is(stack, ids[name], RequestState.ACTIVE)
        # What alice did with the first grant, as CloudTrail will tell it.
        granted_at = (await stack.keycard.get(approved)).granted_at
        assert granted_at is not None
        for n, (call, source, read_only) in enumerate(
            [
                ("DescribeDBInstances", "rds.amazonaws.com", True),
                ("RebootDBInstance", "rds.amazonaws.com", False),
                ("GetMetricData", "monitoring.amazonaws.com", True),
            ]
        ):
            trail.call(
                granted_at + timedelta(milliseconds=n + 1), call, user="alice@example.com",
                account=account, permission_set="PowerUserAccess", source=source,
                read_only=read_only,
            )  # fmt: skip
        await stack.keycard.extend(extended, Actor(email="grace@example.com"), "30m")
        await stack.keycard.revoke(approved, ALICE_ACTOR, "done early")
        await stack.keycard.revoke(auto, BOB)
        await stack.keycard.revoke(glass, ALICE_ACTOR)
        await stack.keycard.review(glass, BOB, "justified", "the primary was down: INC-7")
        await stack.keycard.revoke(extended, Actor(email="grace@example.com"))
        for name in ("approved", "denied", "auto", "break_glass", "extended"):
            await stack.client.get_workflow_handle(ids[name]).result()
        until = datetime.now(UTC) + timedelta(seconds=1)

        async def all_visible() -> list[LifecycleEvent] | None:
            events = await export_events(dev_env.client, since=started, until=until)
            wanted = {*ids.values(), config_workflow_id(stack.task_queue)}
            ours = [e for e in events if e.request_id in wanted]
            return ours if {e.request_id for e in ours} == wanted else None

        events = await eventually(all_visible, "every seeded request in visibility")
        yield ids, events, (started, until), stack


def report_of(seeded) -> AccessReport:
    _, events, (since, until), _ = seeded
    return build_report(events, since=since, until=until)


async def test_one_row_per_grant_with_how_it_was_approved_and_ended(seeded):
    ids, *_ = seeded
    report = report_of(seeded)
    rows = {row.request_id: row for row in report.rows}
    assert set(rows) == {ids[n] for n in ("approved", "auto", "break_glass", "extended")}

    approved = rows[ids["approved"]]
    assert approved.approved_how == "bob@example.com (cli)" and approved.approved_by_a_person
    assert (approved.ended, approved.ended_by, approved.removal) == (
        "revoked", "alice@example.com", "removed"
    )  # fmt: skip
    assert approved.removal_confirmed_at is not None and approved.held is not None
    assert approved.asked == timedelta(hours=1) and approved.reason == "incident 4312"
    assert approved.policy_digest and approved.policy_digest.startswith("sha256:")
    assert approved.activity is not None and (approved.activity.calls, approved.activity.writes) == (
        3, 1
    )  # fmt: skip
    assert approved.activity_line.startswith(
        "3 call(s) (1 write(s), 0 error(s)) to rds, monitoring"
    )

    auto = rows[ids["auto"]]
    assert auto.approvals[0].channel == "rule" and not auto.approved_by_a_person
    assert auto.ended_by == "bob@example.com"

    glass = rows[ids["break_glass"]]
    assert glass.break_glass
    assert glass.approved_how == "break-glass (reviewed justified by bob@example.com)"

    extended = rows[ids["extended"]]
    assert extended.requester == "grace@example.com" and extended.extensions == ["30m"]
    assert (
        extended.asked == timedelta(hours=1, minutes=30)
        and extended.ended_by == "grace@example.com"
    )


async def test_the_summary_and_the_exceptions(seeded):
    ids, *_ = seeded
    report = report_of(seeded)
    s, e = report.summary, report.exceptions
    assert (s.requests, s.grants) == (7, 4)
    assert s.outcomes == {"ENDED": 4, "DENIED": 1, "PENDING": 2}
    assert s.grants_by_flow == {
        "report-power-user": 2, "report-on-call": 1, "report-emergency": 1
    }  # fmt: skip
    assert s.grants_by_person == {"alice@example.com": 3, "grace@example.com": 1}
    assert s.auto_approvals_by_rule == {"hook:on_request": 1}
    assert [u.request_id for u in s.break_glass] == [ids["break_glass"]]
    [use] = s.break_glass
    assert use.justification == "the primary is down, no one answers"
    assert (use.finding, use.reviewed_by, use.comment) == (
        "justified", "bob@example.com", "the primary was down: INC-7"
    )  # fmt: skip
    assert e.break_glass_to_follow_up == []
    assert s.refused_by_code == {"SelfApproval": 1}
    assert [(r.actor, r.request_id) for r in s.self_approval_attempts] == [
        ("alice@example.com", ids["denied"])
    ]

    assert {r.request_id for r in e.without_a_human_approver} == {ids["auto"], ids["break_glass"]}
    assert {o.request_id for o in e.still_open} == {ids["open"], ids["edited"]}
    assert e.late_removals == []
    first, edit = e.config_changes  # the worker's restart on the same config added nothing
    assert first.added == ["report-emergency", "report-on-call", "report-power-user"]
    assert (edit.added, edit.removed, edit.changed) == ([], [], ["report-power-user"])
    assert edit.what == "changed report-power-user" and edit.digest.startswith("sha256:")
    [power] = [f for f in s.policies if f.flow == "report-power-user"]
    assert len(power.policies) == 2
    assert power.policies[-1].requests == 1  # only the edited flow's request


def made_event(
    request_id: str, seq: int, type: str, at: datetime, state: str, **detail
) -> LifecycleEvent:
    """An event of a hand-made request of alice's, approved by bob in Slack."""
    return LifecycleEvent(
        id=f"{request_id}/{seq}", type=type, time=at, request_id=request_id,
        workflow_id=request_id, run_id="r", requester=Requester(email="alice@example.com"),
        flow="f", target=TargetRef(name="prod", label="Prod", strategy="aws_sso"),
        duration=timedelta(hours=1), reason="x", state=state, detail=detail,
        actor=Actor(email="bob@example.com", via="slack") if type == "request.approved" else None,
    )  # fmt: skip


def test_a_removal_later_than_a_minute_past_expiry_is_an_exception():
    granted_at = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)

    def event(seq: int, type: str, at: datetime, state: str, **detail) -> LifecycleEvent:
        return made_event("req-late", seq, type, at, state, **detail)

    events = [
        event(1, "request.created", granted_at - timedelta(minutes=2), "PENDING"),
        event(2, "request.approved", granted_at - timedelta(minutes=1), "GRANTING"),
        event(
            3, "access.granted", granted_at, "ACTIVE", expires_at=granted_at + timedelta(hours=1)
        ),
        event(
            4, "access.ended", granted_at + timedelta(hours=1, seconds=95), "ENDED", removed=True
        ),
    ]
    report = build_report(
        events, since=granted_at - timedelta(days=1), until=granted_at + timedelta(days=1)
    )
    [row] = report.exceptions.late_removals
    assert (
        row.removal_late_by == timedelta(seconds=95)
        and row.approved_how == "bob@example.com (slack)"
    )
    assert "req-late prod: 1m35s late" in render(report, Format.MD)


def test_what_was_done_with_a_grant_is_on_its_row_and_calls_after_the_end_are_an_exception():
    granted_at = datetime(2026, 7, 1, 9, 0, tzinfo=UTC)
    ended_at = granted_at + timedelta(hours=1)
    summary = AccessActivity(
        target="prod", account_id="111111111111", regions=["us-east-1"],
        role_session="AWSReservedSSO_PowerUserAccess_*/alice@example.com",
        since=granted_at, until=ended_at, calls=42, writes=3, errors=1,
        services={"ec2.amazonaws.com": 40, "s3.amazonaws.com": 2},
        error_codes={"AccessDenied": 1}, after_end=2,
        first_call=ActivityCall(
            time=granted_at + timedelta(minutes=1), name="DescribeInstances",
            service="ec2.amazonaws.com", region="us-east-1", read_only=True,
        ),
        last_call=ActivityCall(
            time=granted_at + timedelta(minutes=40), name="GetObject",
            service="s3.amazonaws.com", region="us-east-1", read_only=True,
        ),
    )  # fmt: skip

    def event(seq: int, type: str, at: datetime, state: str, **detail) -> LifecycleEvent:
        return made_event("req-used", seq, type, at, state, **detail)

    events = [
        event(1, "request.created", granted_at - timedelta(minutes=2), "PENDING"),
        event(2, "request.approved", granted_at - timedelta(minutes=1), "GRANTING"),
        event(3, "access.granted", granted_at, "ACTIVE", expires_at=ended_at),
        event(4, "access.ended", ended_at, "ENDED", removed=True),
        event(
            5, "access.activity", ended_at + timedelta(minutes=15), "ENDED",
            summary=summary.line, **summary.model_dump(mode="json", exclude={"target"}),
        ),
    ]  # fmt: skip
    report = build_report(
        events, since=granted_at - timedelta(days=1), until=granted_at + timedelta(days=1)
    )
    [row] = report.rows
    assert row.activity == summary
    assert [r.request_id for r in report.exceptions.calls_after_end] == ["req-used"]
    line = "42 call(s) (3 write(s), 1 error(s)) to ec2, s3; 09:01 to 09:40 UTC; 2 after the end"
    assert row.activity_line == line
    [csv_row] = list(csv.DictReader(io.StringIO(render(report, Format.CSV))))
    assert csv_row["activity"] == line
    markdown = render(report, Format.MD)
    assert f"| {line} |" in markdown and "- req-used prod: 2 call(s)" in markdown
    assert line in render(report, Format.HTML)


async def test_csv_json_markdown_and_html(seeded):
    ids, *_ = seeded
    report = report_of(seeded)
    table = list(csv.reader(io.StringIO(render(report, Format.CSV))))
    assert tuple(table[0]) == COLUMNS and len(table) == 1 + len(report.rows)
    assert AccessReport.model_validate_json(render(report, Format.JSON)) == report
    markdown = render(report, Format.MD)
    for heading in ("# Access report: ", "## Summary", "## Exceptions", "## Grants"):
        assert heading in markdown
    assert f"{ids['break_glass']} (break-glass (reviewed justified by bob@example.com))" in markdown
    html = render(report, Format.HTML)
    assert html.startswith("<!doctype html>") and "@page" in html and ids["extended"] in html


def test_a_reason_cannot_run_as_a_spreadsheet_formula():
    from starter.reports.render import _spreadsheet_safe

    assert (
        _spreadsheet_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _spreadsheet_safe("ok") == "ok"
    )


async def test_the_html_report_prints_to_pdf(seeded, tmp_path):
    chromium = pytest.importorskip("tests.test_console_browser", reason="needs Chromium")
    from playwright.async_api import async_playwright

    html = render(report_of(seeded), Format.HTML)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium.CHROMIUM, args=chromium.CHROMIUM_ARGS
        )
        page = await browser.new_page()
        await page.set_content(html)
        pdf = await page.pdf(format="A4", landscape=True, print_background=True)
        await browser.close()
    assert pdf.startswith(b"%PDF") and len(pdf) > 5_000
    assert pdf.count(b"/Type /Page") >= 1 or pdf.count(b"/Type/Page") >= 1


async def test_the_cli_and_the_api_give_the_same_report(seeded, dev_env, monkeypatch):
    ids, _, (since, until), stack = seeded
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_env.client.service_client.config.target_host)
    args = ["report", "--since", since.isoformat(), "--until", until.isoformat(), "-f", "json"]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code == 0, result.output
    from_cli = AccessReport.model_validate_json(result.stdout)
    assert {ids[n] for n in ("approved", "auto", "break_glass", "extended")} <= {
        r.request_id for r in from_cli.rows
    }

    api = create_app(stack.keycard, options=ApiOptions())
    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://keycard.test") as http:
        params = {"since": since.isoformat(), "until": until.isoformat()}
        refused = await http.get("/v1/reports/access", params=params, headers=auth("alice"))
        assert refused.status_code == 403 and refused.json()["code"] == "AdminOnly"
        answer = await http.get("/v1/reports/access", params=params, headers=auth("admin"))
        assert answer.status_code == 200, answer.text
        from_api = AccessReport.model_validate(answer.json())
        assert {r.request_id for r in from_api.rows} == {r.request_id for r in from_cli.rows}
        person = {**params, "person": "grace@example.com", "format": "csv"}
        csv_answer = await http.get("/v1/reports/access", params=person, headers=auth("admin"))
        assert csv_answer.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(csv_answer.text)))
        assert {row["requester"] for row in rows} == {"grace@example.com"}  # other tests' too
        assert [r["request_id"] for r in rows if r["request_id"] in ids.values()] == [
            ids["extended"]
        ]
        backwards = {"since": until.isoformat(), "until": since.isoformat()}
        bad = await http.get("/v1/reports/access", params=backwards, headers=auth("admin"))
        assert bad.status_code == 422


def test_the_cli_refuses_a_backwards_period():
    result = CliRunner().invoke(app, ["report", "--since", "2026-10-01", "--until", "2026-07-01"])
    assert result.exit_code == 1 and "--until must be later than --since" in result.output
    result = CliRunner().invoke(app, ["report", "--since", "0102-01-22"])
    assert result.exit_code == 1 and "the period must lie between 1970-01-01" in result.output
