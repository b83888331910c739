"""Group lookups for hooks: Slack user groups (a fake Slack Web API) and Identity Center (moto)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import boto3
import pytest
from moto import mock_aws
from slack_sdk import WebClient

from activities.groups import IdentityCenterGroups, SlackGroups
from activities.hooks import integrations_from_env
from keycard.config import parse_config

GROUPS = [
    {"id": "S1", "handle": "sre-oncall", "users": ["U_ALICE"]},
    {"id": "S2", "handle": "dba", "users": ["U_BOB"]},
]
USERS = {"alice@example.com": "U_ALICE", "bob@example.com": "U_BOB"}


@pytest.fixture
def slack_api() -> Iterator[tuple[str, list[str]]]:
    """A fake Slack Web API: usergroups.list and users.lookupByEmail, on a free port."""
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode())
            method = self.path.strip("/")
            calls.append(method)
            if method == "usergroups.list":
                full = form.get("include_users") == ["1"] or form.get("include_users") == ["true"]
                body = {
                    "ok": True,
                    "usergroups": [g if full else {**g, "users": []} for g in GROUPS],
                }
            elif method == "users.lookupByEmail":
                email = form.get("email", [""])[0]
                body = (
                    {"ok": True, "user": {"id": USERS[email]}}
                    if email in USERS
                    else {"ok": False, "error": "users_not_found"}
                )
            else:
                body = {"ok": False, "error": "unknown_method"}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", calls
    server.shutdown()
    server.server_close()


def test_slack_group_membership_by_email_or_slack_id(slack_api):
    url, calls = slack_api
    groups = SlackGroups(WebClient(token="xoxb-test", base_url=url))
    assert groups.is_user_in_group("alice@example.com", None, "sre-oncall")
    assert not groups.is_user_in_group("bob@example.com", None, "sre-oncall")
    assert groups.is_user_in_group("whoever@example.com", "U_BOB", "dba")
    assert calls.count("users.lookupByEmail") == 2  # a known Slack id needs no lookup
    with pytest.raises(LookupError, match="no Slack user group @nope"):
        groups.is_user_in_group("alice@example.com", "U_ALICE", "nope")


def test_hooks_reach_slack_at_slack_api_url_as_the_notifier_does(slack_api):
    """A worker behind a proxy (or a test's fake) sets SLACK_API_URL once, for hooks too."""
    url, calls = slack_api
    config = parse_config(
        "flows:\n  - {name: prod, strategy: aws_sso_group, targets: [{name: sre, group: SRE}], "
        "durations: [1h], approvers: {users: [bob@example.com, carol@example.com]}}\n"
    )
    env = {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_API_URL": url.rstrip("/")}
    slack = integrations_from_env(boto3.session.Session(region_name="us-east-1"), config, env).slack

    assert slack is not None and slack.is_user_in_group("alice@example.com", None, "sre-oncall")
    assert calls == ["usergroups.list", "users.lookupByEmail"]


@pytest.fixture
def identity_center():
    with mock_aws():
        session = boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        store = session.client("identitystore")
        sso_admin = session.client("sso-admin")
        store_id = sso_admin.list_instances()["Instances"][0]["IdentityStoreId"]

        def user(email: str) -> str:
            return store.create_user(
                IdentityStoreId=store_id,
                UserName=email,
                DisplayName=email,
                Name={"GivenName": "A", "FamilyName": "B"},
                Emails=[{"Value": email, "Primary": True}],
            )["UserId"]

        alice, _ = user("alice@example.com"), user("bob@example.com")
        group = store.create_group(IdentityStoreId=store_id, DisplayName="SRE")["GroupId"]
        store.create_group_membership(
            IdentityStoreId=store_id, GroupId=group, MemberId={"UserId": alice}
        )
        yield IdentityCenterGroups(store, sso_admin)


def test_identity_center_group_membership(identity_center):
    assert identity_center.is_user_in_group("alice@example.com", "SRE")
    assert not identity_center.is_user_in_group("bob@example.com", "SRE")
    assert not identity_center.is_user_in_group("nobody@example.com", "SRE")
    with pytest.raises(LookupError, match="no Identity Center group named DBA"):
        identity_center.is_user_in_group("alice@example.com", "DBA")


def test_identity_center_clients_are_made_on_first_use():
    with mock_aws():
        session = boto3.session.Session(
            region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
        )
        groups = IdentityCenterGroups.from_session(session)
        assert not groups.is_user_in_group("nobody@example.com", "SRE")
