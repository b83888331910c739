"""Hooks and automatic rules on the real workflows: a fake PagerDuty, real hook files on disk."""

from __future__ import annotations

import asyncio
import textwrap
import uuid
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity
from temporalio.client import WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError

from activities.hooks import HookActivities
from activities.notify import console_line
from activities.pagerduty import PagerDutyDirectory, rest_client
from keycard import temporal as names
from keycard.config import KeycardConfig
from keycard.models import (
    Actor,
    ApproveInput,
    Notification,
    NotificationResult,
    RequestState,
    RequestView,
    Role,
)
from keycard.policy import DecisionRefused
from keycard.sdk.context import Integrations
from tests.fake_pagerduty import API_KEY, running_fake_pagerduty, self_signed_certificate
from tests.harness import ALICE, BOB, CAROL, DAVE, running_stack
from tests.hook_gate import gate
from worker import keycard_replayer

ALICE_ACTOR = Actor(email="alice@example.com")
FLOW_APPROVERS = ["bob@example.com", "carol@example.com"]
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hooks" / "oncall.py"


@pytest.fixture(scope="module")
def certificate():
    return self_signed_certificate()


@pytest.fixture
def pagerduty(certificate):
    with running_fake_pagerduty(certificate) as fake:
        fake.add_user("PALICE", "alice@example.com")
        fake.add_user("PBOB", "bob@example.com")
        yield fake


def flows(hooks: Path | None = None, **settings) -> KeycardConfig:
    """A flow on an account of its own: grants (GrantWorkflows, by account and user) outlive
    each test's worker, so no two tests may share one."""
    flow = {
        "name": "prod",
        "label": "Prod",
        "strategy": "aws_sso",
        "targets": [
            {"name": "prod", "account_id": fresh_account(), "permission_set": "PowerUserAccess"}
        ],
        "durations": ["1h", "4h"],
        "reason_required": False,
        "approvers": {"users": FLOW_APPROVERS},
        **settings,
    }
    if hooks is not None:
        flow["hooks"] = str(hooks)
    return KeycardConfig.model_validate({"flows": [flow]})


def fresh_account() -> str:
    return str(uuid.uuid4().int)[:12].rjust(12, "1")


def has_access(stack, email: str = "alice@example.com") -> bool:
    account = stack.keycard.config.flows[0].targets[0].account_id
    return stack.cloud.has(email, account_id=account)


def hooks_file(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "hooks.py"
    path.write_text(textwrap.dedent(source))
    return path


class Announcements:
    """Records notifications, as the notifier sees them, under the real activity name."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._sent = asyncio.Condition()

    @activity.defn(name=names.SEND_NOTIFICATION)
    async def send(self, notification: Notification) -> NotificationResult:
        line = console_line(notification)
        if line:
            self.lines.append(line)
            async with self._sent:
                self._sent.notify_all()
        return NotificationResult(messages=notification.messages)

    async def starting_with(self, prefix: str, timeout: float = 20) -> list[str]:
        def found() -> list[str]:
            return [line for line in self.lines if line.startswith(prefix)]

        async with asyncio.timeout(timeout), self._sent:
            await self._sent.wait_for(found)
        return found()


@asynccontextmanager
async def stack_with_hooks(env, config, pagerduty=None, announcements=None, base_dir="."):
    directory = (
        PagerDutyDirectory(rest_client(API_KEY, pagerduty.url, verify=pagerduty.client_tls))
        if pagerduty
        else None
    )
    hooks = HookActivities(Integrations(pagerduty=directory), base_dir, timedelta(seconds=2))
    async with running_stack(
        env.client,
        config,
        extra_activities=[announcements.send] if announcements else None,
        hook_activities=[hooks.evaluate_request, hooks.check_approval, hooks.observe],
    ) as stack:
        yield stack


async def replay(handle) -> None:
    replayer = keycard_replayer()
    await replayer.replay_workflow(await handle.fetch_history())


async def ask(stack, duration: str = "1h"):
    return await stack.keycard.request(
        flow="prod", target="prod", duration=duration, reason="incident 4312", requester=ALICE
    )


# --- the README's example: on call → approved at once; everyone else waits for a peer ---------


async def test_the_on_call_engineer_is_approved_without_a_person(dev_env, pagerduty):
    pagerduty.put_on_call("PALICE", "PSCHED1")
    async with stack_with_hooks(dev_env, flows(EXAMPLE), pagerduty) as stack:
        view = await ask(stack)
        assert view.state is RequestState.GRANTING
        assert view.decided_by is not None and view.decided_by.rule == "hook:on_request"
        assert view.decided_by.via == "rule" and view.decided_by.email is None
        assert view.approvals[0].comment == "alice@example.com is on call in PagerDuty"

        granted = await stack.audit.wait_for(view.id, "access.granted")
        approved = stack.audit.of(view.id, "request.auto_approved")[0]
        assert approved.actor is not None and approved.actor.rule == "hook:on_request"
        assert approved.detail["reason"] == "alice@example.com is on call in PagerDuty"
        assert granted.state is RequestState.ACTIVE
        assert has_access(stack)
        assert "request.approved" not in stack.audit.types(view.id)


async def test_someone_not_on_call_waits_for_a_peer(dev_env, pagerduty):
    pagerduty.put_on_call("PBOB", "PSCHED1")
    async with stack_with_hooks(dev_env, flows(EXAMPLE), pagerduty) as stack:
        view = await ask(stack)
        assert view.state is RequestState.PENDING
        assert view.decided_by is None and view.notes == []
        assert not has_access(stack)

        view = await stack.keycard.approve(view.id, BOB)
        assert view.state is RequestState.GRANTING
        await stack.audit.wait_for(view.id, "access.granted")
        assert has_access(stack)
        assert "request.auto_approved" not in stack.audit.types(view.id)


# --- the same without code: auto_approve in keycard.yaml, capped by max_duration ---------------


async def test_auto_approve_rule_approves_on_call_requests_up_to_its_cap(dev_env, pagerduty):
    config = flows(
        auto_approve={"pagerduty_on_call": {"schedules": ["PSCHED1"]}, "max_duration": "1h"},
        approvals_required=2,
        requesters={"users": ["alice@example.com"]},  # two approvals from bob and carol
        allow_extension=True,
    )
    pagerduty.put_on_call("PALICE", "PSCHED1")
    async with stack_with_hooks(dev_env, config, pagerduty) as stack:
        view = await ask(stack, "1h")
        assert view.state is RequestState.GRANTING  # a rule's approval decides on its own
        assert view.decided_by is not None
        assert view.decided_by.rule == "auto_approve.pagerduty_on_call"
        event = await stack.audit.wait_for(view.id, "request.auto_approved")
        assert event.detail["rule"] == "auto_approve.pagerduty_on_call"
        assert event.detail["reason"] == "alice@example.com is on call in PagerDuty (PSCHED1)"

        # Alice may not stretch what the rule approved; an approver may.
        await stack.audit.wait_for(view.id, "access.granted")
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.extend(view.id, ALICE_ACTOR, "1h")
        assert refused.value.code == "OverAutomaticCap"
        assert "approved automatically, which is limited to 1h" in refused.value.message
        assert len((await stack.keycard.extend(view.id, BOB, "1h")).extensions) == 1

        longer = await ask(stack, "4h")
        assert longer.state is RequestState.PENDING
        assert "automatic approval is limited to 1h" in longer.notes[0]
        refused = await stack.audit.wait_for(longer.id, "decision.refused")
        assert refused.detail["code"] == "OverAutomaticCap"


async def test_on_call_elsewhere_does_not_count(dev_env, pagerduty):
    config = flows(auto_approve={"pagerduty_on_call": {"schedules": ["PSCHED1"]}})
    pagerduty.put_on_call("PALICE", "POTHER")
    async with stack_with_hooks(dev_env, config, pagerduty) as stack:
        view = await ask(stack)
        assert view.state is RequestState.PENDING and view.notes == []


# --- failing closed ------------------------------------------------------------------------------


async def test_pagerduty_down_leaves_the_request_to_people_and_says_why(dev_env, pagerduty):
    pagerduty.put_on_call("PALICE", "PSCHED1")
    pagerduty.fail_with = 503
    async with stack_with_hooks(dev_env, flows(EXAMPLE), pagerduty) as stack:
        view = await ask(stack)
        assert view.state is RequestState.PENDING
        assert len(view.notes) == 1
        assert view.notes[0].startswith("on_request failed: ServerHttpError")
        assert "503" in view.notes[0] and "people decide" in view.notes[0]
        failed = await stack.audit.wait_for(view.id, "hook.failed")
        assert failed.detail["hook"] == "on_request" and "503" in failed.detail["error"]
        assert (await stack.keycard.get(view.id)).notes == view.notes

        view = await stack.keycard.approve(view.id, BOB)
        assert view.state is RequestState.GRANTING
        await stack.audit.wait_for(view.id, "access.granted")


async def test_pagerduty_not_configured_fails_closed(dev_env):
    async with stack_with_hooks(dev_env, flows(EXAMPLE), pagerduty=None) as stack:
        view = await ask(stack)
        assert view.state is RequestState.PENDING
        assert "PAGERDUTY_API_KEY" in view.notes[0]


async def test_a_failing_get_approvers_leaves_only_admins(dev_env, tmp_path):
    source = """
        from keycard.sdk import reducer

        @reducer
        def get_approvers(event):
            raise LookupError("HR system unreachable")
        """
    async with stack_with_hooks(dev_env, flows(hooks_file(tmp_path, source))) as stack:
        view = await ask(stack)
        assert view.state is RequestState.PENDING and view.approvers == []
        assert view.notes == [
            "get_approvers failed: LookupError: HR system unreachable (nothing was decided "
            "automatically, and Keycard cannot tell who should approve: only an admin can "
            "approve this request)"
        ]
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.approve(view.id, BOB)  # on the flow's list, but not a fallback
        assert refused.value.code == "NotAnApprover"
        admin = Actor(email="erin@example.com", role=Role.ADMIN)
        assert (await stack.keycard.approve(view.id, admin)).state is RequestState.GRANTING
        await stack.audit.wait_for(view.id, "access.granted")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            """
            from keycard.sdk import Decision, hook

            @hook
            def on_request(event):
                raise ValueError("the CMDB is down")
            """,
            "on_request failed: ValueError: the CMDB is down",
        ),
        (
            """
            from keycard.sdk import hook

            @hook
            def on_request(event):
                return True
            """,
            "on_request failed: returned True; return Decision.approve(reason)",
        ),
        (
            """
            from keycard.sdk import Decision, hook

            @hook
            def on_request(event):
                return Decision.approve("always")

            @hook
            def after_requst(event):
                pass
            """,
            "hooks file failed: ",
        ),
    ],
    ids=["raises", "returns-nonsense", "misspelled-hook-beside-it"],
)
async def test_a_broken_hook_approves_nothing_and_the_requester_is_told(
    dev_env, tmp_path, source, expected
):
    config = flows(hooks_file(tmp_path, source))
    async with stack_with_hooks(dev_env, config) as stack:
        view = await ask(stack)
        assert view.state is RequestState.PENDING
        assert view.notes[0].startswith(expected), view.notes
        assert (await stack.audit.wait_for(view.id, "hook.failed")).detail["error"]
        # A file that does not load might have routed the request: only admins remain.
        assert view.approvers == ([] if expected.startswith("hooks file") else FLOW_APPROVERS)


async def test_a_hook_that_hangs_times_out_and_fails_closed(dev_env, tmp_path):
    source = """
        import threading
        from keycard.sdk import Decision, hook

        @hook
        def on_request(event):
            threading.Event().wait(5)
            return Decision.approve("too late")
        """
    async with stack_with_hooks(dev_env, flows(hooks_file(tmp_path, source))) as stack:
        view = await ask(stack)
        assert view.state is RequestState.PENDING
        assert view.notes[0].startswith("on_request failed: did not finish within 2s")


async def test_a_hook_may_deny_outright(dev_env, tmp_path):
    source = """
        from keycard.sdk import Decision, hook

        @hook
        def on_request(event):
            if not event.fields.get("ticket") and event.duration.total_seconds() > 3600:
                return Decision.deny("more than an hour needs a change ticket")
        """
    async with stack_with_hooks(dev_env, flows(hooks_file(tmp_path, source))) as stack:
        assert (await ask(stack, "1h")).state is RequestState.PENDING
        view = await ask(stack, "4h")
        assert view.state is RequestState.DENIED
        assert (
            view.end_reason == "denied by hook:on_request: more than an hour needs a change ticket"
        )
        denied = await stack.audit.wait_for(view.id, "request.denied")
        assert denied.actor is not None and denied.actor.rule == "hook:on_request"


# --- routing and vetoes ------------------------------------------------------------------------


async def test_get_approvers_routes_the_request_and_others_are_refused(dev_env, tmp_path):
    source = """
        from keycard.sdk import reducer

        @reducer
        def get_approvers(event):
            return ["Dave@example.com", "carol@example.com"]
        """
    config = flows(hooks_file(tmp_path, source), approvals_required=2)
    async with stack_with_hooks(dev_env, config) as stack:
        view = await ask(stack)
        assert view.approvers == ["dave@example.com", "carol@example.com"]
        routed = await stack.audit.wait_for(view.id, "request.routed")
        assert routed.detail["approvers"] == view.approvers

        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.approve(view.id, BOB)
        assert refused.value.code == "NotAnApprover"

        view = await stack.keycard.approve(view.id, DAVE)
        assert view.state is RequestState.PENDING  # approvals_required: 2 still counts people
        view = await stack.keycard.approve(view.id, CAROL)
        assert view.state is RequestState.GRANTING
        await stack.audit.wait_for(view.id, "access.granted")


async def test_an_approval_waits_for_routing_and_is_judged_by_it(dev_env, tmp_path):
    """bob may approve by the flow's list, but he asked while get_approvers was still running,
    and it routed the request to dave: bob's approval is refused, not slipped in first."""
    source = """
        from keycard.sdk import reducer
        from tests.hook_gate import gate

        @reducer
        def get_approvers(event):
            gate.wait(10)
            return ["dave@example.com"]
        """
    gate.clear()
    async with stack_with_hooks(dev_env, flows(hooks_file(tmp_path, source))) as stack:
        asking = asyncio.create_task(ask(stack))
        created = await stack.audit.wait_for_any("request.created")
        handle = stack.client.get_workflow_handle(created.request_id)
        # Accepted by the validator (bob is on the flow's list), now waiting for the hooks.
        approving = await handle.start_update(
            "approve",
            ApproveInput(actor=BOB),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            result_type=RequestView,
        )
        assert not asking.done()
        gate.set()
        view = await asking
        assert view.approvers == ["dave@example.com"]
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await approving.result()
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == "NotAnApprover"
        assert (await stack.keycard.get(view.id)).approvals == []
        assert (await stack.audit.wait_for(view.id, "decision.refused")).actor == BOB


async def test_on_approve_can_veto_an_approval(dev_env, tmp_path):
    source = """
        from keycard.sdk import Decision, hook

        @hook
        def on_approve(event):
            if event.actor.email == "carol@example.com":
                return Decision.deny(f"carol is on leave; ask someone else about {event.request_id}")
        """
    async with stack_with_hooks(dev_env, flows(hooks_file(tmp_path, source))) as stack:
        view = await ask(stack)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.approve(view.id, CAROL)
        assert refused.value.code == "ApprovalVetoed"
        assert refused.value.message == (
            "the flow's on_approve hook refused this approval: "
            f"carol is on leave; ask someone else about {view.id}"
        )
        event = await stack.audit.wait_for(view.id, "decision.refused")
        assert event.actor is not None and event.actor.email == "carol@example.com"
        assert event.detail["code"] == "ApprovalVetoed"
        assert (await stack.keycard.get(view.id)).approvals == []

        # The same approval as a signal (Temporal UI, `temporal workflow signal`) is vetoed too.
        handle = stack.client.get_workflow_handle(view.id)
        await handle.signal("approve", ApproveInput(actor=CAROL))
        await stack.audit.wait_for(view.id, "decision.refused", nth=2)
        view = await stack.keycard.approve(view.id, BOB)
        assert view.state is RequestState.GRANTING
        refusals = stack.audit.of(view.id, "decision.refused")
        assert [r.detail["code"] for r in refusals] == ["ApprovalVetoed", "ApprovalVetoed"]
        assert [a.actor.email for a in view.approvals] == ["bob@example.com"]
        await stack.audit.wait_for(view.id, "access.granted")
        await replay(handle)


async def test_a_failing_on_approve_refuses_approvals_but_not_break_glass(dev_env, tmp_path):
    source = """
        from keycard.sdk import hook

        @hook
        def on_approve(event):
            raise ConnectionError("directory unreachable")
        """
    config = flows(hooks_file(tmp_path, source), break_glass=True)
    async with stack_with_hooks(dev_env, config) as stack:
        view = await ask(stack)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.approve(view.id, BOB)
        assert refused.value.code == "ApprovalHookFailed"
        assert "ConnectionError: directory unreachable" in refused.value.message
        assert (await stack.keycard.get(view.id)).state is RequestState.PENDING

        view = await stack.keycard.break_glass(view.id, ALICE_ACTOR, "prod is down, INC-4312")
        assert view.state is RequestState.GRANTING and view.break_glass
        assert any("break-glass approval went ahead" in n for n in view.notes)
        await stack.audit.wait_for(view.id, "access.granted")


# --- break-glass --------------------------------------------------------------------------------


async def test_break_glass_self_approval_is_marked_and_announced(dev_env):
    announcements = Announcements()
    config = flows(
        break_glass=True, approvals_required=2, requesters={"users": ["alice@example.com"]}
    )
    async with stack_with_hooks(dev_env, config, announcements=announcements) as stack:
        view = await ask(stack)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.approve(view.id, ALICE_ACTOR)
        assert refused.value.code == "SelfApproval" and "break-glass" in refused.value.message
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.break_glass(view.id, ALICE_ACTOR, "urgent")
        assert refused.value.code == "JustificationRequired"
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.break_glass(view.id, BOB, "bob wants to help out")
        assert refused.value.code == "BreakGlassNotRequester"

        view = await stack.keycard.break_glass(view.id, ALICE_ACTOR, "payments down, INC-4312")
        assert view.state is RequestState.GRANTING
        assert view.break_glass and view.decided_by == ALICE_ACTOR
        used = await stack.audit.wait_for(view.id, "break_glass.used")
        assert used.detail["justification"] == "payments down, INC-4312"
        assert used.detail["bypassed_approvers"] == ["bob@example.com", "carol@example.com"]
        await stack.audit.wait_for(view.id, "access.granted")
        assert await announcements.starting_with("BREAK-GLASS") == [
            f"BREAK-GLASS: alice@example.com approved their own request {view.id} for Prod "
            "(prod), 1h. Justification: payments down, INC-4312. Bypassed approvers: "
            "bob@example.com, carol@example.com. REVIEW IT."
        ]


async def test_break_glass_needs_the_flow_to_allow_it(dev_env):
    async with stack_with_hooks(dev_env, flows()) as stack:
        view = await ask(stack)
        with pytest.raises(DecisionRefused) as refused:
            await stack.keycard.break_glass(view.id, ALICE_ACTOR, "payments down, INC-4312")
        assert refused.value.code == "BreakGlassNotAllowed"


# --- observers ------------------------------------------------------------------------------------


async def test_observers_see_every_step_and_their_failures_delay_nothing(dev_env, tmp_path):
    log = tmp_path / "observed.txt"
    source = f"""
        from pathlib import Path
        from keycard.sdk import hook

        LOG = Path({str(log)!r})

        def note(event):
            who = event.actor.email or event.actor.rule if event.actor else "-"
            with LOG.open("a") as f:
                f.write(f"{{event.hook}} {{event.state}} {{who}}\\n")

        @hook
        def after_request(event):
            note(event)

        @hook
        def after_approve(event):
            note(event)

        @hook
        def after_grant(event):
            note(event)
            raise RuntimeError("the wiki is down")

        @hook
        def after_revoke(event):
            note(event)

        @hook
        def after_end(event):
            note(event)
        """
    async with stack_with_hooks(dev_env, flows(hooks_file(tmp_path, source))) as stack:
        view = await ask(stack)
        await stack.keycard.approve(view.id, BOB, "go ahead")
        await stack.audit.wait_for(view.id, "access.granted")
        await stack.keycard.revoke(view.id, ALICE_ACTOR)
        handle = stack.client.get_workflow_handle(view.id, result_type=RequestView)
        final = await handle.result()
        assert final.state is RequestState.ENDED
        await replay(handle)  # the whole story, observers included, replays deterministically

    assert log.read_text().splitlines() == [
        "after_request PENDING alice@example.com",
        "after_approve GRANTING bob@example.com",  # the state after the approval
        "after_grant ACTIVE -",
        "after_revoke ENDED alice@example.com",
        "after_end ENDED alice@example.com",
    ]
    failed = stack.audit.of(view.id, "hook.failed")
    assert [(f.detail["hook"], f.detail["error"]) for f in failed] == [
        ("after_grant", "RuntimeError: the wiki is down")
    ]
    assert final.notes == []  # observers' failures are audited, not put on the requester
