"""end_sessions on the time-skipping server: an ended grant's sessions are denied through the
permission set's single writer, a later grant's are not, entries go after the session maximum,
grants ending together make one policy, and standing access ends nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio.client import WorkflowExecutionStatus

from activities.notify import ConsoleNotifier
from keycard import session_policy
from keycard import temporal as names
from keycard.config import parse_config
from keycard.models import RequestState, SessionPolicyView
from tests.fakes import FakeCloud
from tests.harness import BOB, CAROL, CONFIG, Requester, ask, running_stack, state_is
from tests.polling import eventually
from tests.workflows.test_timers import ALICE_ACTOR, approved, grant_view, outcome

ACCOUNT = "111111111111"
BOB_REQUESTER = Requester(email="bob@example.com")


def user(cloud: FakeCloud, name: str = "alice") -> str:
    return f"u-{name}-{cloud.salt}"


def writer_id(cloud: FakeCloud, permission_set: str = "PowerUserAccess") -> str:
    return names.session_policy_workflow_id(
        f"arn:aws:sso:::instance/ssoins-{cloud.salt}",
        f"arn:aws:sso:::permissionSet/ssoins-{cloud.salt}/ps-{permission_set}",
    )


async def test_an_ended_grant_denies_its_sessions_until_they_can_no_longer_exist(time_env):
    async with running_stack(time_env.client) as stack:
        view = await approved(stack, duration="1m")
        final = await outcome(time_env, view.id)
        cloud = stack.cloud

        assert final.state is RequestState.ENDED and not cloud.has("alice@example.com")
        assert stack.audit.types(view.id)[-2:] == ["access.ended", "access.sessions_ended"]
        ended = stack.audit.events[-1].detail
        assert ended["account_id"] == ACCOUNT
        assert ended["permission_set_arn"].endswith("/ps-PowerUserAccess")
        denied_before = datetime.fromisoformat(ended["denied_before"])
        # Sessions are denied from before the removal the grant saw, never after it by more than
        # the clock margin (rounded up to AWS's whole seconds).
        margin = names.SESSIONS_CLOCK_MARGIN
        assert (
            final.granted_at < denied_before <= session_policy.ceil_second(final.ended_at + margin)
        )
        policy = cloud.policy()
        assert session_policy.denies(policy, user(cloud), ACCOUNT, final.granted_at)
        assert session_policy.denies(policy, user(cloud), ACCOUNT, final.expires_at)
        assert not session_policy.denies(policy, user(cloud), ACCOUNT, denied_before)
        assert not session_policy.denies(policy, user(cloud, "bob"), ACCOUNT, final.granted_at)

        # The permission set's sessions last 1h (FakeCloud.session_duration): until then the entry
        # stays; a durable timer then prunes it, and the writer, holding nothing, ends.
        writer = time_env.client.get_workflow_handle(writer_id(cloud))
        await time_env.sleep(timedelta(minutes=50))
        assert session_policy.entries(cloud.policy()) == {(user(cloud), ACCOUNT): denied_before}
        state = await writer.query("status", result_type=SessionPolicyView)
        assert state.session_duration == timedelta(hours=1) and state.writes == 1
        await time_env.sleep(timedelta(minutes=15))
        assert cloud.policy() is None
        assert ("prune_sessions", ended["permission_set_arn"]) in cloud.calls
        assert (await writer.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_a_new_grant_after_the_end_keeps_working(time_env):
    async with running_stack(time_env.client) as stack:
        first = await outcome(time_env, (await approved(stack, duration="1m")).id)
        denied_before = datetime.fromisoformat(stack.audit.events[-1].detail["denied_before"])
        second = await approved(stack, duration="1h")
        await time_env.sleep(timedelta(minutes=1))
        active = await stack.keycard.get(second.id)

        assert active.state is RequestState.ACTIVE and stack.cloud.has("alice@example.com")
        # The access was made again no sooner than the deny's time: every session of the new
        # grant is issued after it, so the entry that ended the first grant's leaves them alone.
        assert active.granted_at >= denied_before > first.granted_at
        policy = stack.cloud.policy()
        assert not session_policy.denies(policy, user(stack.cloud), ACCOUNT, active.granted_at)
        assert session_policy.denies(policy, user(stack.cloud), ACCOUNT, first.granted_at)
        await stack.keycard.revoke(second.id, ALICE_ACTOR, "done")  # leave no timers behind
        await outcome(time_env, second.id)


async def test_two_grants_ending_together_on_one_permission_set_make_one_correct_policy(time_env):
    async with running_stack(time_env.client) as stack:
        alice = await approved(stack, duration="1m")
        bob = await ask(stack, duration="1m", requester=BOB_REQUESTER)
        await stack.keycard.approve(bob.id, CAROL)
        alice_final = await outcome(time_env, alice.id)
        bob_final = await outcome(time_env, bob.id)

        policy = stack.cloud.policy()
        entries = session_policy.entries(policy)
        assert set(entries) == {(user(stack.cloud), ACCOUNT), (user(stack.cloud, "bob"), ACCOUNT)}
        assert session_policy.denies(policy, user(stack.cloud), ACCOUNT, alice_final.granted_at)
        assert session_policy.denies(
            policy, user(stack.cloud, "bob"), ACCOUNT, bob_final.granted_at
        )
        for view in (alice_final, bob_final):
            assert stack.audit.types(view.id)[-1] == "access.sessions_ended"


async def test_standing_access_ends_no_sessions(time_env):
    cloud = FakeCloud()
    async with running_stack(time_env.client, cloud=cloud) as stack:
        cloud.give("alice@example.com", ps="PowerUserAccess")
        final = await outcome(time_env, (await approved(stack, duration="1m")).id)

        assert final.standing_access and cloud.has("alice@example.com")
        assert stack.audit.types(final.id)[-1] == "access.ended"
        assert cloud.policy() is None
        assert not any(call[0] == "end_sessions" for call in cloud.calls)


async def test_a_flow_can_leave_sessions_alone(time_env):
    config = parse_config(
        CONFIG.replace(
            "    allow_extension: true", "    allow_extension: true\n    end_sessions: false"
        )
    )
    async with running_stack(time_env.client, config=config) as stack:
        final = await outcome(time_env, (await approved(stack, duration="1m")).id)

        assert final.state is RequestState.ENDED and not stack.cloud.has("alice@example.com")
        assert stack.audit.types(final.id)[-1] == "access.ended"
        assert stack.cloud.policy() is None


async def test_a_flow_can_keep_its_deny_entries_in_a_customer_managed_policy(time_env):
    chosen = "{name: KeycardEndSessions, path: /keycard/, role: KeycardSessionWriter}"
    config = parse_config(
        CONFIG.replace(
            "    allow_extension: true",
            f"    allow_extension: true\n    end_sessions_policy: {chosen}",
        )
    )
    managed = config.flows[0].end_sessions_policy
    async with running_stack(time_env.client, config=config) as stack:
        final = await outcome(time_env, (await approved(stack, duration="1m")).id)
        cloud = stack.cloud

        assert stack.audit.types(final.id)[-2:] == ["access.ended", "access.sessions_ended"]
        ended = stack.audit.events[-1].detail
        assert ended["policy_arn"] == managed.policy_arn(ACCOUNT)
        # The writer is the policy's, not the permission set's; the inline policy is untouched.
        instance = f"arn:aws:sso:::instance/ssoins-{cloud.salt}"
        assert cloud.writers == {names.session_policy_workflow_id(instance, "", managed)}
        assert cloud.policy() is None
        policy = cloud.policies[managed.policy_arn(ACCOUNT)]
        role = (
            f"arn:aws:iam::{ACCOUNT}:role/aws-reserved/sso.amazonaws.com/"
            "AWSReservedSSO_{}_0123456789abcdef"
        )
        before = final.granted_at
        assert session_policy.denies(
            policy, user(cloud), ACCOUNT, before, role.format("PowerUserAccess")
        )
        assert not session_policy.denies(policy, user(cloud), ACCOUNT, before, role.format("Other"))

        # After the permission set's sessions (1h) the entry is pruned; the policy stays.
        writer = time_env.client.get_workflow_handle(next(iter(cloud.writers)))
        await time_env.sleep(timedelta(minutes=65))
        assert session_policy.entries(cloud.policies[managed.policy_arn(ACCOUNT)]) == {}
        assert (await writer.describe()).status == WorkflowExecutionStatus.COMPLETED


async def test_sessions_that_cannot_be_ended_are_reported_and_the_access_still_goes(time_env):
    cloud = FakeCloud(session_error="Keycard's AWS credentials may not call PutInlinePolicy")
    async with running_stack(time_env.client, cloud=cloud) as stack:
        final = await outcome(time_env, (await approved(stack, duration="1m")).id)

        assert final.state is RequestState.ENDED and not cloud.has("alice@example.com")
        assert stack.audit.types(final.id)[-2:] == ["access.ended", "access.sessions_not_ended"]
        failed = stack.audit.events[-1].detail
        assert "may not call PutInlinePolicy" in failed["error"]


GROUP_FLOW = """
  - name: ops-group
    strategy: aws_sso_group
    targets:
      - {name: ops, group: Operators}
    durations: [1m]
    approvers: {groups: [sre-leads]}
    end_sessions: true
"""


async def test_a_group_membership_ends_the_sessions_of_every_permission_set_the_group_has(
    time_env,
):
    cloud = FakeCloud(group_permission_sets=[("ReadOnly", ACCOUNT), ("Deploy", "222222222222")])
    config = parse_config(CONFIG + GROUP_FLOW)
    group_activities = [*cloud.activities("aws_sso_group"), ConsoleNotifier().send]
    async with running_stack(
        time_env.client, config=config, cloud=cloud, extra_activities=group_activities
    ) as stack:
        view = await ask(stack, flow="ops-group", target="ops", duration="1m")
        await stack.keycard.approve(view.id, BOB)
        final = await outcome(time_env, view.id)

        assert final.state is RequestState.ENDED
        assert stack.audit.types(final.id)[-2:] == ["access.ended", "access.sessions_ended"]
        ended = stack.audit.events[-1].detail
        assert [(s["permission_set_arn"].rsplit("/ps-", 1)[1], s["account_id"]) for s in
                ended["scopes"]] == [("ReadOnly", ACCOUNT), ("Deploy", "222222222222")]  # fmt: skip
        for name, account in cloud.group_permission_sets:
            policy = cloud.policy(name)
            assert session_policy.denies(policy, user(cloud), account, final.granted_at)
            assert not session_policy.denies(
                policy, user(cloud), account, datetime.fromisoformat(ended["denied_before"])
            )


async def test_a_group_flow_leaves_sessions_alone_unless_it_says_so(time_env):
    cloud = FakeCloud(group_permission_sets=[("ReadOnly", ACCOUNT)])
    config = parse_config(CONFIG + GROUP_FLOW.replace("    end_sessions: true\n", ""))
    group_activities = [*cloud.activities("aws_sso_group"), ConsoleNotifier().send]
    async with running_stack(
        time_env.client, config=config, cloud=cloud, extra_activities=group_activities
    ) as stack:
        view = await ask(stack, flow="ops-group", target="ops", duration="1m")
        await stack.keycard.approve(view.id, BOB)
        final = await outcome(time_env, view.id)

        assert stack.audit.types(final.id)[-1] == "access.ended"
        assert cloud.policy("ReadOnly") is None


async def test_a_lease_taken_while_a_removal_ends_sessions_has_its_own_sessions_ended(time_env):
    """The first grant's removal is still ending sessions (its writer held) when a second request
    takes a lease: the second access is made afresh after, and its end cuts its sessions too
    (the chaos run found a removal that forgot the second lease's end_sessions)."""
    cloud = FakeCloud(session_gate=asyncio.Event())
    async with running_stack(time_env.client, cloud=cloud) as stack:
        first = await approved(stack, duration="1h")
        await state_is(stack, first.id, RequestState.ACTIVE)
        await stack.keycard.revoke(first.id, ALICE_ACTOR, "done")
        await eventually(lambda: _called(cloud, "end_sessions"))  # the writer is held there
        second = await approved(stack, duration="1h")

        async def waiting():
            return second.id in (await grant_view(time_env, stack)).waiting

        await eventually(waiting)
        cloud.session_gate.set()
        await outcome(time_env, first.id)
        await state_is(stack, second.id, RequestState.ACTIVE)
        await stack.keycard.revoke(second.id, ALICE_ACTOR, "done too")
        await outcome(time_env, second.id)
        assert stack.audit.types(second.id)[-2:] == ["access.revoked", "access.sessions_ended"]
        assert not cloud.has("alice@example.com")


async def _called(cloud: FakeCloud, name: str) -> bool:
    return any(call[0] == name for call in cloud.calls)
