"""The demo AWS behind `keycard dev`: seeding is repeatable, and the strategies can use it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.aws import strategy_activities
from keycard.config import AwsSettings, load_config, parse_config
from keycard.models import AssignmentSpec, ResolveInput
from starter.run.demo_aws import (
    assignments_for,
    demo_environment,
    seed_demo,
    start_moto_server,
    stop_recording,
)

REGION = "us-east-1"
EXAMPLE_CONFIG = Path(__file__).parents[2] / "keycard.example.yaml"

ALL_STRATEGIES = """
version: 1
approver_groups:
  leads: [erin@example.com, frank@example.com]
flows:
  - name: prod
    strategy: aws_sso
    durations: [1h]
    approvers: {groups: [leads]}
    targets:
      - {name: prod, account_id: "111111111111", permission_set: PowerUserAccess}
      - name: pinned
        account_id: "111111111111"
        permission_set: arn:aws:sso:::permissionSet/ssoins-0123456789abcdef/ps-0123456789abcdef
  - name: oncall
    strategy: aws_sso_group
    durations: [1h]
    targets: [{name: oncall, group: OnCall}]
  - name: deploy
    strategy: aws_iam_group
    durations: [1h]
    targets: [{name: deploy, group: deployers}]
"""


@pytest.fixture(scope="module")
def moto_server() -> Iterator[str]:
    server, endpoint_url = start_moto_server()
    yield endpoint_url
    server.stop()


@pytest.fixture
def endpoint_url(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    # moto keeps its state per process, not per server: start every test from nothing.
    httpx.post(f"{moto_server}/moto-api/reset").raise_for_status()
    for name, value in demo_environment(moto_server, REGION).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return moto_server


def worker_activities() -> dict[str, object]:
    """The activities as worker.py builds them: from the environment `keycard dev` sets."""
    from temporalio import activity

    built = strategy_activities(boto3.Session(), AwsSettings(region=REGION))
    return {activity._Definition.must_from_callable(fn).name: fn for fn in built}


def test_seeding_twice_changes_nothing(endpoint_url: str) -> None:
    config = load_config(EXAMPLE_CONFIG)

    first = seed_demo(config, endpoint_url, REGION)
    second = seed_demo(config, endpoint_url, REGION)

    assert first == second
    assert list(first.users) == [
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "security@example.com",  # an approver the example config names: seeded to sign in
    ]
    assert sorted(first.permission_sets) == ["AdministratorAccess", "PowerUserAccess"]
    identitystore = boto3.client("identitystore", endpoint_url=endpoint_url, region_name=REGION)
    users = identitystore.list_users(IdentityStoreId=first.identity_store_id)["Users"]
    assert len(users) == 4
    sso_admin = boto3.client("sso-admin", endpoint_url=endpoint_url, region_name=REGION)
    sets = sso_admin.list_permission_sets(InstanceArn=first.instance_arn)["PermissionSets"]
    assert len(sets) == 2
    assert any("PowerUserAccess" in line for line in first.lines())


async def test_the_worker_can_grant_a_seeded_user_and_assignments_for_shows_it(
    endpoint_url: str,
) -> None:
    seed_demo(load_config(EXAMPLE_CONFIG), endpoint_url, REGION)
    activities = worker_activities()
    env = ActivityEnvironment()
    spec = AssignmentSpec(
        strategy="aws_sso",
        principal_email="alice@example.com",
        account_id="111111111111",
        permission_set="PowerUserAccess",
    )

    assignment = await env.run(activities["aws_sso.resolve"], ResolveInput(spec=spec))
    await env.run(activities["aws_sso.grant"], assignment)

    assert assignments_for(endpoint_url, REGION, "alice@example.com") == [spec]
    assert assignments_for(endpoint_url, REGION, "bob@example.com") == []

    await env.run(activities["aws_sso.revoke"], assignment)
    assert assignments_for(endpoint_url, REGION, "alice@example.com") == []


async def test_every_strategy_finds_what_the_config_names(endpoint_url: str) -> None:
    summary = seed_demo(parse_config(ALL_STRATEGIES), endpoint_url, REGION)
    activities = worker_activities()
    env = ActivityEnvironment()

    assert "erin@example.com" in summary.users  # approvers can sign in to the demo too
    assert list(summary.groups) == ["OnCall"]
    assert summary.iam_groups == ["deployers"]
    assert list(summary.permission_sets) == ["PowerUserAccess"]
    assert any("by ARN" in note for note in summary.notes)

    group = AssignmentSpec(
        strategy="aws_sso_group", principal_email="bob@example.com", group="OnCall"
    )
    iam = AssignmentSpec(
        strategy="aws_iam_group", principal_email="bob@example.com", group="deployers"
    )
    for spec in (group, iam):
        assignment = await env.run(activities[f"{spec.strategy}.resolve"], ResolveInput(spec=spec))
        await env.run(activities[f"{spec.strategy}.grant"], assignment)

    assert assignments_for(endpoint_url, REGION, "bob@example.com") == [group, iam]


async def test_the_demo_aws_outlives_a_restart(tmp_path: Path, monkeypatch) -> None:
    """`keycard dev` stopped and started again: requests survive in Temporal's SQLite, and the
    access they hold in the demo AWS survives with the same ids, so it is removed on time."""
    config = load_config(EXAMPLE_CONFIG)
    recording = tmp_path / "demo-aws.jsonl"
    spec = AssignmentSpec(
        strategy="aws_sso",
        principal_email="alice@example.com",
        account_id="111111111111",
        permission_set="PowerUserAccess",
    )

    def point_at(endpoint: str) -> None:
        for name, value in demo_environment(endpoint, REGION).items():
            monkeypatch.setenv(name, value)

    server, first = start_moto_server(recording=recording)
    try:
        point_at(first)
        before = seed_demo(config, first, REGION)
        env = ActivityEnvironment()
        granted = await env.run(worker_activities()["aws_sso.resolve"], ResolveInput(spec=spec))
        await env.run(worker_activities()["aws_sso.grant"], granted)
    finally:
        stop_recording()
        server.stop()
    assert oct(recording.stat().st_mode & 0o777) == "0o600"

    server, second = start_moto_server(recording=recording)
    try:
        point_at(second)
        after = seed_demo(config, second, REGION)
        assert (after.instance_arn, after.users, after.permission_sets) == (
            before.instance_arn,
            before.users,
            before.permission_sets,
        )
        assert assignments_for(second, REGION, "alice@example.com") == [spec]
        # The grant's workflow kept the ids it resolved before the restart: they still work.
        await ActivityEnvironment().run(worker_activities()["aws_sso.revoke"], granted)
        assert assignments_for(second, REGION, "alice@example.com") == []
    finally:
        stop_recording()
        server.stop()


def test_a_flow_the_demo_cannot_stand_in_for_is_named_in_its_notes(endpoint_url: str) -> None:
    config = parse_config(
        ALL_STRATEGIES
        + """  - name: billing-db
    strategy: http
    http: {url: "https://access.example.com/keycard", secret: "${ACCESS_SECRET}"}
    durations: [1h]
    targets: [{name: billing}]
"""
    )
    summary = seed_demo(config, endpoint_url, REGION)
    assert (
        "flow billing-db uses strategy http: the demo has no stand-in for it, so its requests "
        "reach the real system its flow names"
    ) in summary.notes
