"""AccessRequestWorkflow decisions on the Temporal dev server: updates, validators, signals."""

from __future__ import annotations

import pytest

from keycard.models import Actor, ApproveInput, RequestState, RequestView, Role
from keycard.policy import DecisionRefused, Refusal, RequestInvalid
from starter.client import RequestRejected
from starter.protocol import Ask
from tests.harness import ALICE, BOB, CAROL, DAVE, ask, running_stack, unique_id
from tests.polling import eventually

request = ask


async def test_approved_request_is_granted_then_revoked(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack, fields={"incident": "4312"})
        assert view.state is RequestState.PENDING
        assert view.approvers == ["bob@example.com", "carol@example.com"]
        assert view.fields == {"incident": "4312"}

        await stack.keycard.approve(view.id, BOB, "go ahead")

        async def active():
            current = await stack.keycard.get(view.id)
            return current if current.state is RequestState.ACTIVE else None

        current = await eventually(active)
        assert stack.cloud.has("alice@example.com")
        assert current.expires_at is not None and current.granted_at is not None
        assert current.expires_at - current.granted_at == current.duration
        assert [a.actor.email for a in current.approvals] == ["bob@example.com"]

        await stack.keycard.revoke(view.id, ALICE_ACTOR, "done early")
        final = await dev_env.client.get_workflow_handle(view.id, result_type=RequestView).result()
        assert final.state is RequestState.ENDED
        assert final.end_reason == "revoked early by alice@example.com"
        assert not stack.cloud.has("alice@example.com")
        assert stack.audit.types(view.id) == [
            "request.created",
            "request.pending",
            "request.approved",
            "access.granted",
            "access.revoked",
            "access.sessions_ended",
        ]


ALICE_ACTOR = Actor(email="alice@example.com")


@pytest.mark.parametrize(
    ("kwargs", "code", "fragment"),
    [
        ({"flow": "nope"}, "UnknownFlow", "there is no flow 'nope'; flows: prod-power-user"),
        ({"target": "dev"}, "UnknownTarget", "has no target 'dev'; targets: prod"),
        ({"duration": "3h"}, "DurationNotAllowed", "choose one of: 1h, 2h, 30m, 1m"),
        ({"duration": "soon"}, "InvalidDuration", "'soon' is not a duration"),
        ({"reason": "  "}, "ReasonRequired", "requires a reason"),
        ({"fields": {"ticket": "1"}}, "UnknownField", "has no field ticket"),
    ],
)
async def test_invalid_requests_are_refused_before_anything_starts(dev_env, kwargs, code, fragment):
    async with running_stack(dev_env.client) as stack:
        request_id = unique_id()
        with pytest.raises(RequestInvalid) as refused:
            await request(stack, request_id=request_id, **kwargs)
        assert refused.value.code == code
        assert fragment in refused.value.message
        assert stack.cloud.calls == []


async def test_unknown_requester_fails_with_the_reason(dev_env):
    async with running_stack(dev_env.client) as stack:
        with pytest.raises(RequestRejected) as rejected:
            await request(stack, requester=ALICE.model_copy(update={"email": "zed@example.com"}))
        assert rejected.value.code == "NoSuchUser"
        assert "no Identity Center user has the email zed@example.com" in rejected.value.message


async def test_same_request_id_twice_is_one_request(dev_env):
    async with running_stack(dev_env.client) as stack:
        request_id = unique_id()
        first = await request(stack, request_id=request_id)
        second = await request(stack, request_id=request_id, reason="a retry")
        assert second.id == first.id
        assert second.reason == "incident 4312"
        assert [c for c in stack.cloud.calls if c[0] == "resolve"] == [
            ("resolve", "alice@example.com")
        ]


@pytest.mark.parametrize(
    ("actor", "code", "kind", "message"),
    [
        (
            Actor(email="alice@example.com"),
            "SelfApproval",
            Refusal.FORBIDDEN,
            "alice@example.com cannot approve their own request",
        ),
        (
            Actor(email="dave@example.com"),
            "NotAnApprover",
            Refusal.FORBIDDEN,
            "dave@example.com is not an approver of flow prod-power-user",
        ),
    ],
)
async def test_refused_approvals_name_why_and_change_nothing(dev_env, actor, code, kind, message):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.approve(view.id, actor)
        assert (refused.value.code, refused.value.kind) == (code, kind)
        assert message in refused.value.message
        after = await stack.keycard.get(view.id)
        assert after.state is RequestState.PENDING and after.approvals == []
        # A validator's refusal leaves no event in the workflow's history.
        history = await dev_env.client.get_workflow_handle(view.id).fetch_history()
        accepted = [
            e.workflow_execution_update_accepted_event_attributes.accepted_request.input.name
            for e in history.events
            if e.HasField("workflow_execution_update_accepted_event_attributes")
        ]
        assert accepted == ["submitted"]


async def test_two_approvals_must_come_from_two_people(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack, flow="prod-admin", reason="")
        assert view.approvals_required == 2
        once = await stack.keycard.approve(view.id, BOB)
        assert once.state is RequestState.PENDING and len(once.approvals) == 1
        with pytest.raises(DecisionRefused) as twice:
            await stack.keycard.approve(view.id, BOB)
        assert twice.value.code == "AlreadyApproved"
        assert "needs 2 different approvers" in twice.value.message
        done = await stack.keycard.approve(view.id, DAVE)
        assert done.state is RequestState.GRANTING
        assert [a.actor.email for a in done.approvals] == ["bob@example.com", "dave@example.com"]


async def test_one_person_in_two_spellings_is_one_approver(dev_env):
    """A signal as BOB@EXAMPLE.COM after bob@example.com approved must not count twice (raw JSON,
    as `temporal workflow signal` sends it, so no client-side model normalises it first)."""
    async with running_stack(dev_env.client) as stack:
        view = await request(stack, flow="prod-admin", reason="")
        await stack.keycard.approve(view.id, BOB)
        handle = dev_env.client.get_workflow_handle(view.id)
        await handle.signal("approve", {"actor": {"email": "BOB@EXAMPLE.COM", "via": "signal"}})
        refused = await stack.audit.wait_for(view.id, "decision.refused")
        assert refused.detail["code"] == "AlreadyApproved"
        assert refused.actor.email == "bob@example.com"
        current = await stack.keycard.get(view.id)
        assert current.state is RequestState.PENDING
        assert [a.actor.email for a in current.approvals] == ["bob@example.com"]


async def test_denied_request_ends_and_later_decisions_say_so(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack)
        with pytest.raises(DecisionRefused) as self_deny:
            await stack.keycard.deny(view.id, ALICE_ACTOR)
        assert self_deny.value.code == "SelfDenial"
        denied = await stack.keycard.deny(view.id, CAROL, "not during the freeze")
        assert denied.state is RequestState.DENIED
        assert denied.end_reason == "denied by carol@example.com"
        await dev_env.client.get_workflow_handle(view.id, result_type=RequestView).result()
        with pytest.raises(DecisionRefused) as late:
            await stack.keycard.approve(view.id, BOB)
        assert late.value.kind is Refusal.CONFLICT
        assert f"request {view.id} is DENIED; it can no longer be approved" == late.value.message
        assert stack.cloud.assignments == set()
        # The refused self-denial is audited (the late approval found the request closed).
        assert stack.audit.types(view.id) == [
            "request.created",
            "request.pending",
            "decision.refused",
            "request.denied",
        ]


async def test_cancel_only_by_the_requester(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.cancel(view.id, BOB)
        assert refused.value.code == "NotTheRequester"
        cancelled = await stack.keycard.cancel(view.id, ALICE_ACTOR)
        assert cancelled.state is RequestState.CANCELLED


async def test_revoke_and_extend_are_refused_until_active(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack)
        with pytest.raises(DecisionRefused) as revoke:
            await stack.keycard.revoke(view.id, BOB)
        assert "is PENDING, not active; cancel or deny it instead" in revoke.value.message
        with pytest.raises(DecisionRefused) as extend:
            await stack.keycard.extend(view.id, ALICE_ACTOR, "1h")
        assert extend.value.code == "WrongState"


async def test_extension_is_bounded_by_the_flow_maximum(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack, duration="2h")
        await stack.keycard.approve(view.id, BOB)

        async def active():
            current = await stack.keycard.get(view.id)
            return current if current.state is RequestState.ACTIVE else None

        before = await eventually(active)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.extend(view.id, ALICE_ACTOR, "3h")
        assert refused.value.code == "OverMaximum"
        assert (
            "would make 5h in all, over flow prod-power-user's maximum of 4h"
            in refused.value.message
        )
        assert "at most 2h more" in refused.value.message
        extended = await stack.keycard.extend(view.id, ALICE_ACTOR, "2h", "still on it")
        assert extended.expires_at - before.expires_at == (extended.extensions[0].duration)

        async def lease_moved():
            grant = await _grant_status(dev_env, stack)
            return grant.leases.get(view.id) == extended.expires_at

        await eventually(lease_moved)


async def test_requester_may_not_end_access_early_when_the_flow_says_so(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack, flow="prod-admin", reason="")
        await stack.keycard.approve(view.id, BOB)
        await stack.keycard.approve(view.id, CAROL)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.revoke(view.id, ALICE_ACTOR)
        assert refused.value.code == "EarlyRevokeNotAllowed"
        admin = Actor(email="root@example.com", role=Role.ADMIN)
        revoked = await stack.keycard.revoke(view.id, admin, "incident over")
        assert revoked.state in (RequestState.ACTIVE, RequestState.GRANTING)
        final = await dev_env.client.get_workflow_handle(view.id, result_type=RequestView).result()
        assert final.end_reason == "revoked early by root@example.com"


async def test_signals_take_the_same_decisions_and_refusals_are_audited(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack)
        handle = dev_env.client.get_workflow_handle(view.id)
        await handle.signal(
            "approve", ApproveInput(actor=Actor(email="dave@example.com", via="signal"))
        )
        await handle.signal(
            "approve", ApproveInput(actor=Actor(email="carol@example.com", via="signal"))
        )

        async def granted():
            current = await stack.keycard.get(view.id)
            return current if current.state is RequestState.ACTIVE else None

        current = await eventually(granted)
        assert [a.actor.email for a in current.approvals] == ["carol@example.com"]
        refused = await stack.audit.wait_for_any("decision.refused")
        assert refused.actor.email == "dave@example.com"
        assert refused.detail["code"] == "NotAnApprover"


async def test_a_failed_grant_fails_the_request_with_the_cloud_reason(dev_env):
    async with running_stack(dev_env.client) as stack:
        stack.cloud.grant_error = "permission set PowerUserAccess does not exist"
        view = await request(stack)
        await stack.keycard.approve(view.id, BOB)
        final = await dev_env.client.get_workflow_handle(view.id, result_type=RequestView).result()
        assert final.state is RequestState.FAILED
        assert "permission set PowerUserAccess does not exist" in final.end_reason
        assert stack.audit.types(view.id)[-1] == "access.grant_failed"


async def test_requests_are_listed_by_search_attributes(dev_env):
    async with running_stack(dev_env.client) as stack:
        view = await request(stack)
        other = await request(
            stack, requester=ALICE.model_copy(update={"email": "carol@example.com"})
        )

        async def listed():
            page = await stack.keycard.list(
                requester="alice@example.com", state="PENDING", limit=500
            )
            return page if any(r.id == view.id for r in page.requests) else None

        page = await eventually(listed)
        row = next(r for r in page.requests if r.id == view.id)
        assert (row.flow, row.target, row.state) == (
            "prod-power-user",
            "prod",
            RequestState.PENDING,
        )
        assert all(r.id != other.id for r in page.requests)
        description = await dev_env.client.get_workflow_handle(view.id).describe()
        assert await description.static_summary() == (
            "alice@example.com → Prod PowerUser (Production), 1h: incident 4312"
        )


async def _grant_status(dev_env, stack):
    from keycard.models import GrantView

    grant_id = f"grant:aws_sso:111111111111:ps-PowerUserAccess:u-alice-{stack.cloud.salt}"
    handle = dev_env.client.get_workflow_handle(grant_id)
    return await handle.query("status", result_type=GrantView)


async def test_a_cancel_that_arrives_with_the_start_stands(dev_env):
    """Even when the AWS check would fail, a request cancelled at once ends CANCELLED."""
    from keycard import temporal as names
    from keycard.models import CancelInput

    async with running_stack(dev_env.client) as stack:
        input = stack.keycard.prepare(
            Ask(
                flow="prod-power-user",
                target="prod",
                reason="typo",
                requester=ALICE.model_copy(update={"email": "zed@example.com"}),
            )
        )
        handle = await dev_env.client.start_workflow(
            names.ACCESS_REQUEST_WORKFLOW,
            input,
            id=input.request_id,
            task_queue=stack.task_queue,
            start_signal="cancel",
            start_signal_args=[CancelInput(actor=Actor(email="zed@example.com"))],
            result_type=RequestView,
        )
        final = await handle.result()
        assert final.state is RequestState.CANCELLED
        assert final.end_reason == "cancelled by zed@example.com"
        assert "access.grant_failed" not in stack.audit.types(input.request_id)


async def test_the_id_of_a_finished_request_returns_that_request(dev_env):
    async with running_stack(dev_env.client) as stack:
        first = await request(stack)
        await stack.keycard.cancel(first.id, ALICE_ACTOR)
        await dev_env.client.get_workflow_handle(first.id).result()
        again = await request(stack, request_id=first.id, reason="a retry")
        assert (again.id, again.state, again.reason) == (
            first.id,
            RequestState.CANCELLED,
            first.reason,
        )
