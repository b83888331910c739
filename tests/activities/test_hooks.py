"""HookActivities on their own: how hooks' answers and failures become results (fail closed)."""

from __future__ import annotations

import os
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest

from activities.groups import SlackGroups
from activities.hooks import HookActivities, hook_activities, integrations_from_env
from activities.pagerduty import PagerDutyDirectory
from keycard.config import AutoApprove, KeycardConfig
from keycard.hooks import ApprovalHookInput, ObserveInput, RequestHooksInput
from keycard.sdk import IntegrationNotConfigured, Person
from keycard.sdk.context import Integrations
from keycard.sdk.events import Flow, HookEvent, Target
from keycard.sdk.integrations import aws_sso, pagerduty, slack

EVENT = HookEvent(
    hook="on_request",
    request_id="req-1",
    state="PENDING",
    requester=Person(email="alice@example.com", slack_user_id="U_ALICE"),
    flow=Flow(name="prod", label="Prod", strategy="aws_sso"),
    target=Target(name="prod", label="Production"),
    duration=timedelta(hours=1),
    reason="incident 4312",
    approvals_required=1,
    approvers=["bob@example.com"],
    requested_at=datetime(2026, 1, 1, tzinfo=UTC),
)


class Directory:
    """Stands in for PagerDuty, Slack and Identity Center at once, answering from sets."""

    def __init__(self, on_call=(), groups=None):
        self.on_call = set(on_call)
        self.groups = groups or {}
        self.asked: list[tuple] = []

    def is_on_call(self, email, schedules, escalation_policies):
        self.asked.append(("on_call", email, tuple(schedules), tuple(escalation_policies)))
        return email in self.on_call

    def users_on_call(self, schedules, escalation_policies):
        return [Person(email=e) for e in sorted(self.on_call)]

    def has_incident(self, services, statuses):
        return False

    def is_user_in_group(self, email, *rest):
        group = rest[-1]
        self.asked.append(("group", email, *rest))
        return email in self.groups.get(group, ())


def activities(tmp_path, directory=None, timeout=timedelta(seconds=2)) -> HookActivities:
    directory = directory or Directory()
    integrations = Integrations(pagerduty=directory, slack=directory, aws_sso=directory)
    return HookActivities(integrations, tmp_path, timeout)


def write(tmp_path: Path, source: str, name: str = "hooks.py") -> str:
    (tmp_path / name).write_text(textwrap.dedent(source))
    return name


async def test_integrations_reach_the_clients_the_worker_gave(tmp_path):
    directory = Directory(groups={"sre-oncall": {"alice@example.com"}, "SRE": set()})
    hooks = write(
        tmp_path,
        """
        from keycard.sdk import Decision, hook, reducer
        from keycard.sdk.integrations import aws_sso, pagerduty, slack

        @hook
        def on_request(event):
            if slack.is_user_in_group(event.user, "@sre-oncall") and not aws_sso.is_user_in_group(
                event.requester, "SRE"
            ):
                return Decision.approve("SRE on-call rota member")

        @reducer
        def get_approvers(event):
            return pagerduty.users_on_call(schedules="PSCHED1")
        """,
    )
    directory.on_call = {"bob@example.com"}
    result = await activities(tmp_path, directory).evaluate_request(
        RequestHooksInput(hooks=hooks, event=EVENT)
    )
    assert result.failures == []
    assert result.decision is not None and result.decision.by == "hook:on_request"
    assert result.decision.reason == "SRE on-call rota member"
    assert result.approvers == ["bob@example.com"]
    assert ("group", "alice@example.com", "U_ALICE", "sre-oncall") in directory.asked


async def test_rule_runs_only_when_on_request_left_it_open(tmp_path):
    directory = Directory(on_call={"alice@example.com"})
    rule = AutoApprove.model_validate({"pagerduty_on_call": {"escalation_policies": ["PEP1"]}})
    hooks = write(tmp_path, "from keycard.sdk import hook\n@hook\ndef on_request(e):\n    pass\n")
    result = await activities(tmp_path, directory).evaluate_request(
        RequestHooksInput(hooks=hooks, auto_approve=rule, event=EVENT)
    )
    assert result.decision is not None and result.decision.by == "auto_approve.pagerduty_on_call"
    assert directory.asked == [("on_call", "alice@example.com", (), ("PEP1",))]

    denying = write(
        tmp_path,
        "from keycard.sdk import Decision, hook\n"
        "@hook\ndef on_request(e):\n    return Decision.deny('frozen')\n",
        "deny.py",
    )
    result = await activities(tmp_path, directory).evaluate_request(
        RequestHooksInput(hooks=denying, auto_approve=rule, event=EVENT)
    )
    assert result.decision is not None and result.decision.outcome == "deny"
    assert result.decision.reason == "frozen"


@pytest.mark.parametrize(
    "source",
    [
        "from keycard.sdk import hook\n@hook\ndef on_request(e):\n    raise OSError('freeze API down')\n",
        "from keycard.sdk import hook\n@hook\ndef on_requst(e):\n    pass\n",
    ],
    ids=["on_request-raised", "file-has-problems"],
)
async def test_no_rule_approves_when_the_hooks_failed(tmp_path, source):
    directory = Directory(on_call={"alice@example.com"})
    rule = AutoApprove.model_validate({"pagerduty_on_call": {}})
    result = await activities(tmp_path, directory).evaluate_request(
        RequestHooksInput(hooks=write(tmp_path, source), auto_approve=rule, event=EVENT)
    )
    assert result.decision is None
    assert len(result.failures) == 1
    assert directory.asked == []  # the on-call rule was not even consulted


@pytest.mark.parametrize(
    ("returned", "approvers", "error"),
    [
        ("None", None, None),
        ("[]", [], None),
        ("'Bob@Example.com'", ["bob@example.com"], None),
        (
            "[event.requester, 'carol@example.com', 'carol@example.com']",
            ["alice@example.com", "carol@example.com"],
            None,
        ),
        # A reducer that fails leaves nobody but an admin (fails closed), never the flow's list.
        ("[42]", [], "returned [42]; return a list of emails or people, or None"),
        ("{'bob'}", [], "returned {'bob'}; return a list of emails or people, or None"),
        ("1 / 0", [], "ZeroDivisionError: division by zero"),
    ],
)
async def test_get_approvers_takes_emails_or_people(tmp_path, returned, approvers, error):
    hooks = write(
        tmp_path,
        f"from keycard.sdk import reducer\n@reducer\ndef get_approvers(event):\n    return {returned}\n",
    )
    result = await activities(tmp_path).evaluate_request(
        RequestHooksInput(hooks=hooks, event=EVENT)
    )
    assert result.approvers == approvers
    assert [f.error for f in result.failures] == ([error] if error else [])


async def test_on_approve_vetoes_with_deny_and_lets_approve_stand(tmp_path):
    hooks = write(
        tmp_path,
        """
        from keycard.sdk import Decision, hook

        @hook
        def on_approve(event):
            if event.break_glass:
                return Decision.deny("no break-glass during the freeze")
            return Decision.approve("fine")
        """,
    )
    acts = activities(tmp_path)
    ok = await acts.check_approval(ApprovalHookInput(hooks=hooks, event=EVENT))
    assert ok.veto is None and ok.failures == []
    glass = EVENT.model_copy(update={"break_glass": True})
    vetoed = await acts.check_approval(ApprovalHookInput(hooks=hooks, event=glass))
    assert vetoed.veto == "no break-glass during the freeze"


async def test_a_changed_file_is_loaded_again(tmp_path):
    acts = activities(tmp_path)
    source = "from keycard.sdk import Decision, hook\n@hook\ndef on_request(e):\n    return {}\n"
    hooks = write(tmp_path, source.format("None"))
    assert (
        await acts.evaluate_request(RequestHooksInput(hooks=hooks, event=EVENT))
    ).decision is None
    path = tmp_path / hooks
    path.write_text(source.format("Decision.approve('now')"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    decision = (await acts.evaluate_request(RequestHooksInput(hooks=hooks, event=EVENT))).decision
    assert decision is not None and decision.reason == "now"


async def test_a_missing_file_and_a_hanging_import_fail_closed(tmp_path):
    acts = activities(tmp_path, timeout=timedelta(seconds=1))
    missing = await acts.check_approval(ApprovalHookInput(hooks="nope.py", event=EVENT))
    assert missing.veto is None
    assert [f.hook for f in missing.failures] == ["hooks file"]
    assert "No such file" in missing.failures[0].error

    hooks = write(tmp_path, "import threading\nthreading.Event().wait(10)\n", "slow.py")
    hung = await acts.check_approval(ApprovalHookInput(hooks=hooks, event=EVENT))
    assert [f.error for f in hung.failures] == [f"importing {tmp_path / 'slow.py'} hung"]


async def test_observers_run_in_order_and_one_failing_does_not_stop_the_next(tmp_path):
    log = tmp_path / "log.txt"
    hooks = write(
        tmp_path,
        f"""
        from keycard.sdk import hook

        def note(name):
            with open({str(log)!r}, "a") as f:
                f.write(name + "\\n")

        @hook
        def on_deny(event):
            note(event.hook)
            raise RuntimeError("ticket system down")

        @hook
        def after_deny(event):
            note(event.hook)
        """,
    )
    result = await activities(tmp_path).observe(
        ObserveInput(hooks=hooks, names=["on_deny", "after_deny", "after_end"], event=EVENT)
    )
    assert log.read_text().split() == ["on_deny", "after_deny"]
    assert [(f.hook, f.error) for f in result.failures] == [
        ("on_deny", "RuntimeError: ticket system down")
    ]


def test_integrations_outside_a_hook_say_what_to_configure():
    with pytest.raises(IntegrationNotConfigured, match="PAGERDUTY_API_KEY"):
        pagerduty.is_on_call("alice@example.com")
    with pytest.raises(IntegrationNotConfigured, match="SLACK_BOT_TOKEN"):
        slack.is_user_in_group("alice@example.com", "sre")
    with pytest.raises(IntegrationNotConfigured, match="Identity Center"):
        aws_sso.is_user_in_group("alice@example.com", "SRE")


async def test_hanging_hooks_are_abandoned_and_capped(tmp_path):
    hooks = write(
        tmp_path,
        """
        import threading
        from keycard.sdk import hook

        @hook
        def on_request(event):
            threading.Event().wait(3)
        """,
    )
    acts = HookActivities(Integrations(), tmp_path, timedelta(milliseconds=300), max_threads=1)
    first = await acts.evaluate_request(RequestHooksInput(hooks=hooks, event=EVENT))
    assert [f.error for f in first.failures] == ["did not finish within 0.3s"]
    # That hook still hangs in the only thread, so the next one is not even started.
    second = await acts.evaluate_request(RequestHooksInput(hooks=hooks, event=EVENT))
    assert [f.error for f in second.failures] == [
        "HookBusy: 1 hooks are still running; is one hanging?"
    ]


async def test_a_hook_calling_sys_exit_only_fails(tmp_path):
    hooks = write(
        tmp_path,
        "import sys\nfrom keycard.sdk import hook\n@hook\ndef on_approve(e):\n    sys.exit(3)\n",
    )
    result = await activities(tmp_path).check_approval(ApprovalHookInput(hooks=hooks, event=EVENT))
    assert [f.error for f in result.failures] == ["RuntimeError: SystemExit: 3"]


def test_the_worker_builds_integrations_from_its_environment():
    config = KeycardConfig.model_validate(
        {
            "flows": [
                {
                    "name": "prod",
                    "strategy": "aws_sso_group",
                    "targets": [{"name": "sre", "group": "SRE"}],
                    "durations": ["1h"],
                }
            ]
        }
    )
    session = boto3.session.Session(region_name="us-east-1")
    bare = integrations_from_env(session, config, {})
    assert bare.pagerduty is None and bare.slack is None and bare.aws_sso is not None
    full = integrations_from_env(
        session, config, {"PAGERDUTY_API_KEY": "k", "SLACK_BOT_TOKEN": "xoxb-1"}
    )
    assert isinstance(full.pagerduty, PagerDutyDirectory)
    assert isinstance(full.slack, SlackGroups)
    assert full.slack._client.base_url == "https://slack.com/api/"
    names = [fn.__temporal_activity_definition.name for fn in hook_activities(session, config, ".")]
    assert names == ["hooks.evaluate_request", "hooks.check_approval", "hooks.observe"]
