"""`keycard` in API mode (KEYCARD_API_URL + KEYCARD_TOKEN): the CLI against a live API server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import structlog
import yaml
from typer.testing import CliRunner

from keycard.config import parse_config
from keycard.models import Role
from main import app
from starter.api.auth import TokenBook, config_entry, config_line
from starter.run.serve import running_api
from tests.polling import eventually
from tests.starter.conftest import TOKENS, Api, auth, free_port

runner = CliRunner()


@pytest.fixture(autouse=True)
def server_logs():
    """The API server runs in this process and logs to stdout, which CliRunner captures as the
    command's output: keep the server's lines out of it."""
    with structlog.testing.capture_logs() as logs:
        yield logs


async def keycard(url: str, who: str, *args: str):
    """Run `keycard ARGS` as `who` in a thread: the CLI runs its own event loop."""
    env = {"KEYCARD_API_URL": url, "KEYCARD_TOKEN": TOKENS[who], "KEYCARD_AS": None}
    return await asyncio.to_thread(runner.invoke, app, list(args), env=env)


def request_id(output: str) -> str:
    match = re.search(r"^(req-\w+)\s", output, re.MULTILINE)
    assert match, output
    return match.group(1)


async def test_request_approve_list_and_revoke_from_the_cli(api: Api):
    async with running_api(api.app) as server:
        asked = await keycard(
            server.url, "alice", "request", "prod-power-user", "-t", "prod", "-r", "incident 9",
            "-f", "incident=9",
        )  # fmt: skip
        assert asked.exit_code == 0, asked.output
        rid = request_id(asked.stdout)
        assert "PENDING" in asked.stdout
        assert f"Approve with: keycard approve {rid}\n" in asked.stdout

        refused = await keycard(server.url, "alice", "approve", rid)
        assert refused.exit_code == 1
        assert refused.stderr.startswith(
            "error: alice@example.com cannot approve their own request"
        )
        hidden = await keycard(server.url, "dave", "approve", rid)  # dave may not read it
        assert (hidden.exit_code, hidden.stderr) == (1, f"error: there is no request {rid}\n")

        approved = await keycard(server.url, "bob", "approve", rid, "-m", "ok")
        assert approved.exit_code == 0, approved.output
        assert "approvals: 1 of 1 (bob@example.com)" in approved.stdout

        status = await keycard(server.url, "carol", "status", rid, "-o", "json")
        assert json.loads(status.stdout)["requester"]["email"] == "alice@example.com"

        await api.stack.keycard.wait(rid)  # ACTIVE: the row shows when it ends and who approved
        listed = await keycard(server.url, "alice", "list", "--requester", "alice@example.com")
        assert listed.exit_code == 0, listed.output
        header, *rows = listed.stdout.splitlines()
        assert header.split() == [
            "ID", "STATE", "REQUESTER", "FLOW/TARGET", "STARTED", "(UTC)", "ENDS", "(UTC)",
            "DECIDED", "BY",
        ]  # fmt: skip
        assert any(row.startswith(rid) and "prod-power-user/prod" in row for row in rows)
        mine = next(row for row in rows if row.startswith(rid)).split()
        assert mine[1] == "ACTIVE" and mine[-1] == "bob@example.com"
        assert re.fullmatch(r"\d\d:\d\d:\d\d", mine[-2])  # the time its access ends

        revoked = await keycard(server.url, "alice", "revoke", rid)
        assert revoked.exit_code == 0, revoked.output
        assert f"{rid}  ENDED" in revoked.stdout
        assert "outcome:   revoked early by alice@example.com" in revoked.stdout


async def test_request_wait_prints_what_to_do_next(api: Api):
    async with running_api(api.app) as server:
        asking = asyncio.create_task(
            keycard(
                server.url, "alice", "request", "prod-power-user", "-t", "prod", "-r", "x", "--wait"
            )
        )

        async def created():  # the CLI's request, as soon as it is audited
            return [e.request_id for e in api.stack.audit.events if e.type == "request.created"]

        ids = await eventually(created)
        approve = await api.http.post(f"/v1/requests/{ids[0]}/approve", headers=auth("bob"))
        assert approve.status_code == 200
        result = await asking
    assert result.exit_code == 0, result.output
    assert (
        f"{ids[0]}: waiting for 1 approval(s) from bob@example.com, carol@example.com"
        in result.stderr
    )
    assert f"{ids[0]}  ACTIVE" in result.stdout
    assert (
        f"In the AWS access portal, open account {api.account_id} (Production) and choose "
        "PowerUserAccess." in result.stdout
    )
    assert f"sso_account_id = {api.account_id}" in result.stdout
    assert "aws sso login --profile prod-power-user-prod" in result.stdout


async def test_request_wait_fails_when_access_is_not_granted(api: Api):
    async with running_api(api.app) as server:
        asking = asyncio.create_task(
            keycard(
                server.url, "alice", "request", "prod-power-user", "-t", "prod", "-r", "x", "--wait"
            )
        )

        async def created():
            return [e.request_id for e in api.stack.audit.events]

        ids = await eventually(created)
        await api.http.post(f"/v1/requests/{ids[0]}/deny", headers=auth("carol"))
        result = await asking
    assert result.exit_code == 1
    assert result.stderr.endswith(
        f"error: request {ids[0]} is DENIED: denied by carol@example.com\n"
    )


async def test_break_glass_from_the_cli(api: Api):
    async with running_api(api.app) as server:
        asked = await keycard(server.url, "carol", "request", "restricted", "-t", "prod")
        rid = request_id(asked.stdout)
        broken = await keycard(
            server.url, "carol", "break-glass", rid, "-m", "prod is down, INC-4312"
        )
        own = await keycard(server.url, "carol", "review", rid)
        reviewed = await keycard(server.url, "bob", "review", rid, "-m", "INC-4312 was real")
    assert broken.exit_code == 0, broken.output
    assert f"{rid}  GRANTING" in broken.stdout or f"{rid}  ACTIVE" in broken.stdout
    assert own.exit_code == 1 and own.stderr.startswith(
        "error: carol@example.com used break-glass on this request and cannot review it"
    )
    assert reviewed.exit_code == 0, reviewed.output
    [line] = [x for x in reviewed.stdout.splitlines() if x.startswith("  review:")]
    assert line.startswith("  review:    justified by bob@example.com at ")
    assert line.endswith(" UTC: INC-4312 was real")


async def test_cli_refusals_and_unreachable_api(api: Api):
    async with running_api(api.app) as server:
        unknown = await keycard(server.url, "alice", "request", "nope", "-t", "prod")
        assert unknown.exit_code == 1
        assert unknown.stderr == (
            "error: there is no flow 'nope'; flows: prod-power-user, prod-admin, restricted\n"
        )
        missing = await keycard(server.url, "alice", "status", "req-nosuch")
        assert missing.stderr == "error: there is no request req-nosuch\n"
        other = await keycard(
            server.url, "alice", "request", "prod-power-user", "-t", "prod", "-r", "x",
            "--as", "bob@example.com",
        )  # fmt: skip
        assert other.stderr.startswith(
            "error: alice@example.com may only request access for themselves"
        )

    nowhere = f"http://127.0.0.1:{free_port()}"
    down = await keycard(nowhere, "alice", "status", "req-x")
    assert down.exit_code == 1
    assert down.stderr.startswith(f"error: cannot reach the Keycard API at {nowhere}")

    no_token = await asyncio.to_thread(
        runner.invoke,
        app,
        ["status", "req-x"],
        env={
            "KEYCARD_API_URL": nowhere,
            "KEYCARD_TOKEN": "",
            "KEYCARD_CREDENTIALS": "/nonexistent",
        },
    )
    assert no_token.exit_code == 1
    assert no_token.stderr.startswith(
        "error: KEYCARD_API_URL is set but you are not signed in: run `keycard login`"
    )


def test_operator_mode_still_needs_as():
    result = runner.invoke(
        app, ["approve", "req-x"], env={"KEYCARD_API_URL": "", "KEYCARD_AS": None}
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("error: say who you are with --as EMAIL")


def test_token_create_prints_the_token_once_and_the_line_to_paste():
    result = runner.invoke(
        app, ["token", "create", "--email", "Alice@Example.com", "--role", "admin"]
    )
    assert result.exit_code == 0, result.output
    tokens = re.findall(r"kc_[A-Za-z0-9_-]{43}", result.stdout)
    assert len(tokens) == 1
    line = next(x.strip() for x in result.stdout.splitlines() if x.strip().startswith("- {hash:"))
    assert tokens[0] not in line
    config = parse_config(
        yaml.safe_dump({"flows": yaml.safe_load(FLOWS)}) + "api:\n  tokens:\n    " + line + "\n"
    )
    identity = TokenBook(config.api.tokens).identify(tokens[0])
    assert identity is not None
    assert (identity.email, identity.role.value) == ("alice@example.com", "admin")

    bad = runner.invoke(app, ["token", "create", "--email", "alice"])
    assert bad.exit_code == 1
    assert bad.stderr == "error: email: 'alice' is not an email address\n"


FLOWS = """
- name: f
  strategy: aws_sso
  targets: [{name: t, account_id: "111111111111", permission_set: ReadOnlyAccess}]
  durations: [1h]
"""


async def test_keycard_serve_answers_and_stops_gracefully(dev_env, tmp_path: Path):
    """The real command in its own process: JSON logs without the token, and SIGTERM ends it."""
    token = TOKENS["alice"]
    line = config_line(config_entry(token, "alice@example.com", Role.USER))
    config = tmp_path / "keycard.yaml"
    config.write_text(
        yaml.safe_dump({"flows": yaml.safe_load(FLOWS)}) + "api:\n  tokens:\n    " + line + "\n"
    )
    port = free_port()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_env.client.service_client.config.target_host,
        "KEYCARD_LOG_FORMAT": "json",
    }
    server = await asyncio.create_subprocess_exec(
        Path(sys.executable).parent / "keycard", "serve", "-c", config, "--port", str(port),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

            async def ready():
                try:
                    return await http.get("/readyz")
                except httpx.TransportError:
                    return None

            answer = await eventually(ready, timeout=30)
            assert answer is not None, "keycard serve did not start"
            assert answer.json() == {"status": "ready"}
            flows = await http.get("/v1/flows", headers={"Authorization": f"Bearer {token}"})
            assert [f["name"] for f in flows.json()["flows"]] == ["f"]
    finally:
        server.send_signal(signal.SIGTERM)
        _, raw = await asyncio.wait_for(server.communicate(), timeout=30)
    stderr = raw.decode()
    assert server.returncode == 0, stderr
    events = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    kinds = [e["event"] for e in events]
    assert "api.started" in kinds and "api.stopped" in kinds
    assert any(e["event"] == "api.http" and e["caller"] == "alice@example.com" for e in events)
    assert token not in stderr


CLI_ROWS = [
    # (arguments after `keycard`, exit code, words the error must contain)
    (["list", "--state", "BOGUS"], 2, "is not one of"),
    (["list", "-o", "yaml"], 2, "'text', 'json'"),
    (["status", "req-x", "-o", "xml"], 2, "'text', 'json'"),
    (["request", "prod-power-user", "-t", "prod", "-r", "x", "-d", "999999999999h"], 1, "366d"),
    (["request", "prod-power-user", "-t", "prod", "-r", "x", "-d", "soon"], 1, "such as 30m"),
    (["request", "prod-power-user", "-t", "prod", "-r", "x", "-f", "incident=" + "x" * 1001], 1,
     "1000 characters"),
    (["extend", "req-x", "-d", "999999999999h"], 1, "366d"),
    (["extend", "req-x", "-d", ""], 1, "such as 30m"),
    (["extend", "req-x", "-d", "-30m"], 1, "such as 30m"),
    (["request", "prod-power-user", "-t", "prod", "-r", "x", "-f", "incident"], 1, "NAME=VALUE"),
    (["request", "prod-power-user", "-t", "prod", "-r", "x", "-f", "=4312"], 1, "NAME=VALUE"),
    (["request", "nope", "-t", "prod", "-r", "x"], 1, "nope"),
    (["request", "prod-power-user", "-t", "staging", "-r", "x"], 1, "staging"),
    (["request", "prod-power-user", "-t", "prod", "-r", "x", "-f", "ticket=1"], 1, "no field ticket"),
    (["list", "--limit", "0"], 1, "limit"),
    (["list", "--limit", "many"], 2, "parse string as an integer"),
    (["list", "--requester", "not an email"], 1, "requester"),
    (["status", "r" * 5000], 1, "request_id: String should have at most 200 characters"),
    (["approve", "grant:aws_sso:111111111111:ps-PowerUserAccess:u-alice"], 1, "no request"),
    (["audit", "export", "--since", "yesterday"], 2, "is not a date or time"),
    (["audit", "export", "--since", "2026-01-02", "--until", "2026-01-01"], 2,
     "--until must be later than --since"),
    (["codec", "new-key", "--id", "a b"], 1, "must be 1-64 letters"),
]  # fmt: skip


async def test_cli_refuses_bad_input_with_a_sentence_and_no_traceback(api: Api):
    async with running_api(api.app) as server:
        for args, code, words in CLI_ROWS:
            result = await keycard(server.url, "alice", *args)
            said = result.stderr + result.stdout
            assert result.exit_code == code, (args, said)
            assert words in " ".join(said.split()), (args, said)
            assert "Traceback" not in said, (args, said)
    assert not api.has_access("alice@example.com")


async def test_status_and_list_show_control_characters_instead_of_obeying_them(api: Api):
    hostile = "fix\x1b]0;pwned\x07\x1b[2J now"
    view = await api.create(reason=hostile)
    async with running_api(api.app) as server:
        status = await keycard(server.url, "alice", "status", view["id"])
        listed = await keycard(server.url, "alice", "list")
    assert status.exit_code == 0, status.stderr
    assert "\x1b" not in status.stdout and "\x07" not in status.stdout
    assert "fix\\x1b]0;pwned\\x07\\x1b[2J now" in status.stdout
    assert listed.exit_code == 0 and "\x1b" not in listed.stdout


def test_help_groups_the_commands_and_version_prints_it():
    help_text = runner.invoke(app, ["--help"]).output
    for panel in ("Ask and decide", "Sign in", "Run Keycard", "Configure and audit"):
        assert panel in help_text, help_text
    assert "Other" not in help_text  # every command has its group
    version = runner.invoke(app, ["--version"])
    assert version.exit_code == 0 and version.output.startswith("keycard ")


def test_help_shows_no_type_beside_a_flag():
    import typer.main

    def commands(group, path=()):
        yield path
        for name, command in getattr(group, "commands", {}).items():
            yield from commands(command, (*path, name))

    for path in commands(typer.main.get_command(app)):
        shown = runner.invoke(app, [*path, "--help"], terminal_width=100)
        assert shown.exit_code == 0, (path, shown.output)
        assert "<bool>" not in shown.output, (path, shown.output)
    assert "--wait " in runner.invoke(app, ["request", "--help"]).output


def test_status_shows_the_duration_with_its_extensions():
    from datetime import UTC, datetime, timedelta

    from keycard.models import Actor, Extension, Requester, RequestState, RequestView
    from starter.cli.terminal import describe

    now = datetime(2026, 12, 2, 12, tzinfo=UTC)
    view = RequestView(
        id="req-x", state=RequestState.ACTIVE, requester=Requester(email="alice@example.com"),
        flow="f", flow_label="F", strategy="aws_sso", target="t", target_label="T",
        duration=timedelta(hours=1), reason="r", approvals_required=1, requested_at=now,
        extensions=[Extension(actor=Actor(email="alice@example.com"), at=now,
                              duration=timedelta(minutes=30), expires_at=now)],
    )  # fmt: skip
    assert "alice@example.com → F (T), 1h + 30m" in describe(view)


async def test_list_filters_by_target(api: Api):
    view = await api.create()
    async with running_api(api.app) as server:

        async def listed():  # visibility lags the start a little
            found = await keycard(server.url, "alice", "list", "--target", "prod")
            return found if view["id"] in found.stdout else None

        prod = await eventually(listed)
        other = await keycard(server.url, "alice", "list", "--target", "staging")
    assert prod and prod.exit_code == 0
    assert other.exit_code == 0 and view["id"] not in other.stdout


async def test_a_scheduled_start_from_the_cli_over_the_api(api: Api):
    async with running_api(api.app) as server:
        start = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
        asked = await keycard(
            server.url, "alice", "request", "prod-power-user", "-t", "prod", "-r", "migration",
            "--start-at", start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )  # fmt: skip
        assert asked.exit_code == 0, asked.output
        assert f"  starts:    {start:%Y-%m-%d %H:%M:%S} UTC (once approved)" in asked.stdout
        rid = request_id(asked.stdout)
        approved = await keycard(server.url, "bob", "approve", rid)
        assert approved.exit_code == 0, approved.output
        status = await keycard(server.url, "alice", "status", rid, "-o", "json")
        view = json.loads(status.stdout)
        assert view["state"] in ("GRANTING", "SCHEDULED")  # SCHEDULED once the workflow moves on
        assert view["start_at"].startswith(start.strftime("%Y-%m-%dT%H:%M:%S"))
        assert not api.has_access("alice@example.com")
        cancelled = await keycard(server.url, "alice", "cancel", rid)
        assert cancelled.exit_code == 0, cancelled.output

        bad = await keycard(
            server.url, "alice", "request", "prod-power-user", "-t", "prod", "-r", "x",
            "--start-at", "tomorrow",
        )  # fmt: skip
        assert bad.exit_code == 1
        assert bad.stderr == (
            "error: --start-at takes a time such as 2026-12-05T09:00Z (ISO 8601; without a "
            "zone, UTC), not 'tomorrow'\n"
        )
        far = await keycard(
            server.url, "alice", "request", "prod-power-user", "-t", "prod", "-r", "x",
            "--start-at", (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        )  # fmt: skip
        assert far.exit_code == 1
        assert "is more than 7d ahead, flow prod-power-user's max_start_delay" in far.stderr
