"""One request, many targets, on the time-skipping server: one approval covers every target; each
is its own lease, granted side by side and removed together; a target that fails is reported and
does not hold up the others; the audit trail has an event per target."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keycard.config import parse_config
from keycard.models import Actor, RequestState
from keycard.policy import RequestInvalid
from tests.fakes import FakeCloud
from tests.harness import BOB, ask, running_stack, state_is
from tests.polling import eventually

PROD, STAGING, SANDBOX = "111111111111", "222222222222", "333333333333"

CONFIG = parse_config(
    f"""
flows:
  - name: power-user
    label: PowerUser
    strategy: aws_sso
    targets:
      - {{name: prod, label: Production, account_id: "{PROD}", permission_set: PowerUserAccess}}
      - {{name: staging, label: Staging, account_id: "{STAGING}", permission_set: PowerUserAccess}}
      - {{name: sandbox, label: Sandbox, account_id: "{SANDBOX}", permission_set: PowerUserAccess}}
    durations: [1h]
    max_duration: 3h
    allow_extension: true
    approvers: {{users: [bob@example.com, carol@example.com]}}
"""
)

ALL = ["prod", "staging", "sandbox"]


def _ask(stack, targets=ALL, **overrides):
    return ask(stack, flow="power-user", target=targets, **overrides)


def _has(cloud: FakeCloud, account: str) -> bool:
    return cloud.has("alice@example.com", account_id=account)


async def test_one_approval_grants_every_target_and_all_end_together(time_env):
    async with running_stack(time_env.client, CONFIG) as stack:
        view = await _ask(stack)
        assert [t.name for t in view.targets] == ALL
        assert [t.state for t in view.targets] == ["waiting"] * 3
        assert view.targets_label == "Production, Staging, Sandbox"
        await stack.keycard.approve(view.id, BOB)
        active = await state_is(stack, view.id, RequestState.ACTIVE)
        assert [t.state for t in active.targets] == ["active"] * 3
        assert all(_has(stack.cloud, a) for a in (PROD, STAGING, SANDBOX))
        assert active.expires_at - active.granted_at <= timedelta(hours=1)

        granted = await eventually(lambda: _events_when(stack, view.id, "access.granted", count=3))
        assert sorted(e.target.name for e in granted) == sorted(ALL)
        ends = {e.detail["expires_at"] for e in granted}  # as it came through the audit's JSON
        assert ends == {active.expires_at.isoformat().replace("+00:00", "Z")}
        created = stack.audit.of(view.id, "request.created")[0]
        assert created.detail["targets"] == ALL

        await time_env.sleep(timedelta(minutes=59))
        assert all(_has(stack.cloud, a) for a in (PROD, STAGING, SANDBOX))  # not early
        await time_env.sleep(timedelta(minutes=2))
        ended = await state_is(stack, view.id, RequestState.ENDED)
        assert not any(_has(stack.cloud, a) for a in (PROD, STAGING, SANDBOX))
        assert [(t.state, t.removed) for t in ended.targets] == [("ended", True)] * 3
        gone = await eventually(lambda: _events_when(stack, view.id, "access.ended", count=3))
        assert sorted(e.target.name for e in gone) == sorted(ALL)
        assert all(e.detail["removed"] for e in gone)


async def test_a_target_that_fails_is_reported_and_the_others_are_granted(time_env):
    cloud = FakeCloud(grant_errors={STAGING: "permission set PowerUserAccess is not in 2222"})
    async with running_stack(time_env.client, CONFIG, cloud=cloud) as stack:
        view = await _ask(stack)
        await stack.keycard.approve(view.id, BOB)
        active = await state_is(stack, view.id, RequestState.ACTIVE)
        states = {t.name: (t.state, t.error) for t in active.targets}
        assert states == {
            "prod": ("active", None),
            "staging": ("failed", "permission set PowerUserAccess is not in 2222"),
            "sandbox": ("active", None),
        }
        assert _has(cloud, PROD) and _has(cloud, SANDBOX) and not _has(cloud, STAGING)
        [failed] = await eventually(lambda: _events_when(stack, view.id, "access.grant_failed"))
        assert failed.target.name == "staging"
        assert failed.detail == {
            "error": "permission set PowerUserAccess is not in 2222",
            "stage": "grant",
        }
        assert failed.state is RequestState.ACTIVE  # the request went on without it

        await stack.keycard.revoke(view.id, BOB, "done")
        ended = await state_is(stack, view.id, RequestState.ENDED)
        assert not _has(cloud, PROD) and not _has(cloud, SANDBOX)
        assert [t.state for t in ended.targets] == ["ended", "failed", "ended"]
        revoked = await eventually(lambda: _events_when(stack, view.id, "access.revoked", count=2))
        assert sorted(e.target.name for e in revoked) == ["prod", "sandbox"]
        assert all(e.actor.email == "bob@example.com" for e in revoked)


async def test_the_request_fails_only_when_no_target_is_granted(time_env):
    cloud = FakeCloud(grant_error="AccessDeniedException: not allowed")
    async with running_stack(time_env.client, CONFIG, cloud=cloud) as stack:
        view = await _ask(stack, targets=["prod", "staging"])
        await stack.keycard.approve(view.id, BOB)
        failed = await state_is(stack, view.id, RequestState.FAILED)
        assert failed.end_reason == "granting access failed: AccessDeniedException: not allowed"
        assert [t.state for t in failed.targets] == ["failed", "failed"]
        events = await eventually(
            lambda: _events_when(stack, view.id, "access.grant_failed", count=2)
        )
        assert [e.target.name for e in events] == ["prod", "staging"]
        assert not cloud.assignments


async def test_a_target_missing_in_aws_is_reported_when_asked_and_left_out(time_env):
    cloud = FakeCloud(missing_accounts={SANDBOX})
    async with running_stack(time_env.client, CONFIG, cloud=cloud) as stack:
        view = await _ask(stack)
        assert view.state is RequestState.PENDING  # the caller sees it at once
        sandbox = view.targets[2]
        assert (sandbox.name, sandbox.state) == ("sandbox", "failed")
        assert sandbox.error == f"account {SANDBOX} has no permission set PowerUserAccess"
        await stack.keycard.approve(view.id, BOB)
        active = await state_is(stack, view.id, RequestState.ACTIVE)
        assert [t.state for t in active.targets] == ["active", "active", "failed"]
        assert _has(cloud, PROD) and _has(cloud, STAGING) and not _has(cloud, SANDBOX)
        [failed] = stack.audit.of(view.id, "access.grant_failed")
        assert (failed.target.name, failed.detail["stage"]) == ("sandbox", "resolve")
        await stack.keycard.revoke(view.id, BOB)
        await state_is(stack, view.id, RequestState.ENDED)


async def test_an_extension_moves_every_targets_lease(time_env):
    async with running_stack(time_env.client, CONFIG) as stack:
        view = await _ask(stack, targets=["prod", "staging"])
        await stack.keycard.approve(view.id, BOB)
        active = await state_is(stack, view.id, RequestState.ACTIVE)
        extended = await stack.keycard.extend(view.id, BOB, "1h", "still at it")
        assert extended.expires_at == active.expires_at + timedelta(hours=1)
        await time_env.sleep(timedelta(hours=1, minutes=30))
        assert _has(stack.cloud, PROD) and _has(stack.cloud, STAGING)  # held past the first end
        await time_env.sleep(timedelta(minutes=31))
        await state_is(stack, view.id, RequestState.ENDED)
        assert not _has(stack.cloud, PROD) and not _has(stack.cloud, STAGING)


async def test_targets_are_checked_before_anything_starts(time_env):
    async with running_stack(time_env.client, CONFIG) as stack:
        with pytest.raises(RequestInvalid) as unknown:
            await _ask(stack, targets=["prod", "qa"])
        assert unknown.value.code == "UnknownTarget"
        assert unknown.value.message == (
            "flow power-user has no target 'qa'; targets: prod, staging, sandbox"
        )
        with pytest.raises(RequestInvalid) as none:
            await _ask(stack, targets=[])
        assert none.value.code == "UnknownTarget"
        assert stack.cloud.calls == []
        twice = await _ask(stack, targets=["prod", "prod"])  # a name given twice counts once
        assert twice.targets == [] and twice.target == "prod"
        await stack.keycard.cancel(twice.id, Actor(email="alice@example.com"))


async def _events_when(stack, request_id: str, type: str, count: int = 1):
    events = stack.audit.of(request_id, type)
    return events if len(events) >= count else None
