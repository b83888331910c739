"""End to end: the real worker wiring, the Temporal dev server and a moto server, via KeycardClient.

Nothing is faked here: worker.build_worker registers the production activities, boto3 reaches the
moto server through the usual AWS settings (AWS_ENDPOINT_URL), exactly as `keycard dev` does.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from keycard.config import parse_config
from keycard.models import Actor, RequestState, RequestView
from keycard.session_policy import denies
from keycard.settings import Settings
from starter.client import KeycardClient, RequestRejected
from starter.run.demo_aws import (
    assignments_for,
    inline_policy,
    seed_demo,
    session_denials_for,
    user_id_of,
)
from tests.harness import ALICE
from tests.polling import eventually
from worker import build_worker

REGION = "us-east-1"
CONFIG = """
approver_groups:
  sre-leads: [bob@example.com, carol@example.com]
flows:
  - name: prod-power-user
    label: Prod PowerUser
    strategy: aws_sso
    targets:
      - {name: prod, label: Production, account_id: "ACCOUNT", permission_set: PowerUserAccess}
    durations: [1h, 3s]
    approvers: {groups: [sre-leads]}
  - name: ops-group
    strategy: aws_sso_group
    targets:
      - {name: ops, group: Operators}
    durations: [3s]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


@pytest.fixture
async def keycard(dev_env, aws, tmp_path: Path):
    # A fresh account per test: grant workflows are keyed by it and outlive a test's worker.
    account = f"{uuid.uuid4().int % 10**12:012d}"
    config = parse_config(CONFIG.replace("ACCOUNT", account))
    seed_demo(config, aws, REGION)
    settings = Settings(
        task_queue=f"e2e-{uuid.uuid4()}",
        audit_jsonl=tmp_path / "audit.jsonl",
        audit_stdout=False,
        state_dir=tmp_path,
    )
    async with build_worker(dev_env.client, config, settings):
        client = KeycardClient(dev_env.client, config, settings.task_queue)
        client.account = account  # type: ignore[attr-defined]
        client.audit_path = settings.audit_jsonl  # type: ignore[attr-defined]
        yield client


def held(aws: str, email: str = "alice@example.com") -> list[tuple]:
    return [
        (s.strategy, s.account_id, s.permission_set, s.group)
        for s in assignments_for(aws, REGION, email)
    ]


async def state_of(keycard: KeycardClient, request_id: str, state: RequestState):
    view = await keycard.get(request_id)
    return view if view.state is state else None


async def test_request_approve_grant_expire_against_moto(keycard, aws, dev_env):
    view = await keycard.request(
        flow="prod-power-user", target="prod", duration="3s", reason="e2e", requester=ALICE
    )
    assert view.state is RequestState.PENDING
    assert held(aws) == []

    await keycard.approve(view.id, Actor(email="bob@example.com"))
    active = await eventually(lambda: state_of(keycard, view.id, RequestState.ACTIVE))
    assert held(aws) == [("aws_sso", keycard.account, "PowerUserAccess", None)]
    assert active.expires_at is not None

    handle = dev_env.client.get_workflow_handle(view.id, result_type=RequestView)
    final = await asyncio.wait_for(handle.result(), 60)
    assert final.state is RequestState.ENDED and final.end_reason == "expired"
    assert final.ended_at >= active.expires_at
    assert held(aws) == []
    trail = [json.loads(line) for line in keycard.audit_path.read_text().splitlines()]
    assert [event["type"] for event in trail[-2:]] == ["access.ended", "access.sessions_ended"]
    assert len(trail) == 6

    # end_sessions (on by default for aws_sso): the permission set's inline policy in AWS now
    # denies every session alice opened under the grant, in that account only, and none after.
    ended = trail[-1]["detail"]
    assert ended["account_id"] == keycard.account and ended["seconds"] >= 0
    denied_before = datetime.fromisoformat(ended["denied_before"])
    assert denied_before >= final.ended_at - timedelta(minutes=1)
    policy = inline_policy(aws, REGION, "PowerUserAccess")
    alice = user_id_of(aws, REGION, "alice@example.com")
    assert denies(policy, alice, keycard.account, active.granted_at)
    assert denies(policy, alice, keycard.account, denied_before - timedelta(seconds=1))
    assert not denies(policy, alice, keycard.account, denied_before)  # a later grant's session
    assert not denies(policy, alice, "999999999999", active.granted_at)  # another account's


async def test_early_revoke_and_group_membership(keycard, aws, dev_env):
    view = await keycard.request(
        flow="ops-group", target="ops", duration="3s", reason="e2e", requester=ALICE
    )
    await keycard.approve(view.id, Actor(email="bob@example.com"))
    await eventually(lambda: state_of(keycard, view.id, RequestState.ACTIVE))
    assert ("aws_sso_group", None, None, "Operators") in held(aws)

    long = await keycard.request(
        flow="prod-power-user", target="prod", duration="1h", reason="e2e", requester=ALICE
    )
    await keycard.approve(long.id, Actor(email="carol@example.com"))
    await eventually(lambda: state_of(keycard, long.id, RequestState.ACTIVE))
    await keycard.revoke(long.id, Actor(email="alice@example.com"), "done")
    handle = dev_env.client.get_workflow_handle(long.id, result_type=RequestView)
    final = await asyncio.wait_for(handle.result(), 60)
    assert final.end_reason == "revoked early by alice@example.com"
    assert ("aws_sso", keycard.account, "PowerUserAccess", None) not in held(aws)


async def test_unknown_requester_is_refused_with_the_aws_reason(keycard):
    with pytest.raises(RequestRejected) as rejected:
        await keycard.request(
            flow="prod-power-user",
            target="prod",
            reason="e2e",
            requester=ALICE.model_copy(update={"email": "mallory@example.com"}),
        )
    assert rejected.value.code == "NoSuchUser"
    assert "mallory@example.com" in rejected.value.message


async def test_sessions_end_through_a_customer_managed_policy_against_moto(aws, dev_env, tmp_path):
    """end_sessions_policy, through the production wiring: the worker assumes the flow's role in
    the account and writes the deny entry into the policy the permission set references."""
    account = f"{uuid.uuid4().int % 10**12:012d}"
    config = parse_config(
        CONFIG.replace("ACCOUNT", account).replace(
            "permission_set: PowerUserAccess}\n    durations: [1h, 3s]",
            "permission_set: ManagedSessions}\n    durations: [1h, 3s]\n"
            "    end_sessions_policy: {name: KeycardEndSessions, path: /keycard/, "
            "role: KeycardSessionWriter}",
        )
    )
    seed_demo(config, aws, REGION)  # the policy in the account, referenced by the permission set
    settings = Settings(
        task_queue=f"e2e-{uuid.uuid4()}",
        audit_jsonl=tmp_path / "audit.jsonl",
        audit_stdout=False,
        state_dir=tmp_path,
    )
    async with build_worker(dev_env.client, config, settings):
        keycard = KeycardClient(dev_env.client, config, settings.task_queue)
        view = await keycard.request(
            flow="prod-power-user", target="prod", duration="3s", reason="e2e", requester=ALICE
        )
        await keycard.approve(view.id, Actor(email="bob@example.com"))
        active = await eventually(lambda: state_of(keycard, view.id, RequestState.ACTIVE))
        handle = dev_env.client.get_workflow_handle(view.id, result_type=RequestView)
        final = await asyncio.wait_for(handle.result(), 60)

    assert final.state is RequestState.ENDED
    trail = [json.loads(line) for line in settings.audit_jsonl.read_text().splitlines()]
    assert trail[-1]["type"] == "access.sessions_ended", trail[-1]
    policy_arn = f"arn:aws:iam::{account}:policy/keycard/KeycardEndSessions"
    assert trail[-1]["detail"]["policy_arn"] == policy_arn
    denied_before = datetime.fromisoformat(trail[-1]["detail"]["denied_before"])
    assert active.granted_at < denied_before
    assert session_denials_for(aws, REGION, "alice@example.com", config) == [
        ("ManagedSessions", account, denied_before)
    ]
    assert inline_policy(aws, REGION, "ManagedSessions") is None  # nothing provisioned inline
