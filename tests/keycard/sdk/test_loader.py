"""Loading hooks files: what is found, and every problem that must stop a file from running."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from keycard.models import Actor, Approval, Requester, RequestState, RequestView, Role
from keycard.sdk import Decision, Person
from keycard.sdk.events import hook_event
from keycard.sdk.loader import load_hooks_file

NOW = datetime(2026, 1, 1, tzinfo=UTC)

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hooks" / "oncall.py"


def write(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "hooks.py"
    path.write_text(textwrap.dedent(source))
    return path


def test_the_example_loads_cleanly():
    hooks = load_hooks_file(EXAMPLE)
    assert hooks.ok, hooks.problems
    assert sorted(hooks.functions) == ["on_request"]


def test_hooks_and_reducers_are_found_by_name(tmp_path):
    hooks = load_hooks_file(
        write(
            tmp_path,
            """
            from keycard.sdk import Decision, hook, reducer

            def helper(event):  # not a hook: never called by Keycard, and that is fine
                return None

            @hook
            def on_request(event):
                return Decision.deny("no")

            @hook
            def after_end(evt, extra=None):
                pass

            @reducer
            def get_approvers(event):
                return ["bob@example.com"]
            """,
        )
    )
    assert hooks.ok, hooks.problems
    assert sorted(hooks.functions) == ["after_end", "get_approvers", "on_request"]
    assert hooks.get("on_request")(None) == Decision.deny("no")


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            "@hook\ndef on_requst(event):\n    pass\n",
            "@hook on_requst is not a name Keycard knows; did you mean on_request? known: "
            "on_request, on_approve, after_request",
        ),
        (
            "@hook\ndef get_approvers(event):\n    pass\n",
            "get_approvers is decorated with @hook; it must be @reducer",
        ),
        (
            "@reducer\ndef on_approve(event):\n    pass\n",
            "on_approve is decorated with @reducer; it must be @hook",
        ),
        (
            "@hook\ndef on_request():\n    pass\n",
            "on_request() must take exactly one argument, the event: def on_request(event)",
        ),
        (
            "@hook\ndef on_approve(event, approver):\n    pass\n",
            "on_approve(event, approver) must take exactly one argument",
        ),
        (
            "@hook\nasync def on_request(event):\n    pass\n",
            "on_request is async; hooks are plain functions (def, not async def)",
        ),
        (
            "def on_approve(event):\n    pass\n",
            "on_approve is not decorated with @hook, so it would never run",
        ),
        ("@hook\ndef on_request(event)\n    pass\n", "importing it failed: line 5: expected ':'"),
        (
            "import os\nKEY = os.environ['NO_SUCH_VARIABLE_FOR_KEYCARD']\n",
            "importing it failed: line 5: KeyError: 'NO_SUCH_VARIABLE_FOR_KEYCARD'",
        ),
    ],
    ids=[
        "misspelled",
        "reducer-as-hook",
        "hook-as-reducer",
        "no-argument",
        "two-arguments",
        "async",
        "undecorated",
        "syntax-error",
        "raises-on-import",
    ],
)
def test_problems_are_reported_with_the_file_and_what_to_do(tmp_path, source, problem):
    path = write(tmp_path, "from keycard.sdk import hook, reducer\n\n\n" + source)
    hooks = load_hooks_file(path)
    assert not hooks.ok
    assert len(hooks.problems) == 1
    assert hooks.problems[0].startswith(f"{path}: {problem}"), hooks.problems


def test_a_missing_file_is_a_problem_not_an_exception(tmp_path):
    hooks = load_hooks_file(tmp_path / "nope.py")
    assert hooks.problems == [f"{tmp_path / 'nope.py'}: no such file"]


def test_each_load_imports_the_file_afresh(tmp_path):
    path = write(
        tmp_path, "from keycard.sdk import hook\n@hook\ndef on_request(e):\n    return 1\n"
    )
    assert load_hooks_file(path).get("on_request")(None) == 1
    path.write_text("from keycard.sdk import hook\n@hook\ndef on_request(e):\n    return 2\n")
    assert load_hooks_file(path).get("on_request")(None) == 2


def test_the_event_is_the_request_at_that_step():
    view = RequestView(
        id="req-1",
        state=RequestState.PENDING,
        requester=Requester(email="alice@example.com", slack_user_id="U1", name="Alice"),
        flow="prod",
        flow_label="Prod",
        strategy="aws_sso",
        target="prod",
        target_label="Production",
        target_settings={"account_id": "111111111111", "permission_set": "PowerUserAccess"},
        duration=timedelta(hours=1),
        reason="incident 4312",
        fields={"incident": "4312"},
        approvals=[Approval(actor=Actor(email="bob@example.com", via="slack"), at=NOW)],
        approvals_required=2,
        approvers=["bob@example.com", "carol@example.com"],
        requested_at=NOW,
    )
    event = hook_event("on_approve", view, Actor(email="carol@example.com", role=Role.ADMIN), "ok")
    assert (
        event.user
        == event.requester
        == Person(email="alice@example.com", slack_user_id="U1", name="Alice")
    )
    assert event.target.settings["account_id"] == "111111111111"
    assert event.approvals[0].approver.email == "bob@example.com"
    assert event.approvals[0].approver.via == "slack"
    assert event.actor is not None and event.actor.admin and event.comment == "ok"
    assert (event.hook, event.state, event.duration) == (
        "on_approve",
        "PENDING",
        timedelta(hours=1),
    )


def test_hook_files_may_define_their_own_models(tmp_path):
    path = write(
        tmp_path,
        """
        from __future__ import annotations

        from dataclasses import dataclass
        from typing import ClassVar

        from pydantic import BaseModel
        from keycard.sdk import hook

        @dataclass
        class Rota:
            kind: ClassVar[str] = "rota"
            name: str

        class Ticket(BaseModel):
            id: str
            rota: Rota | None = None

        @hook
        def after_request(event):
            return Ticket(id=event, rota=Rota("sre"))
        """,
    )
    hooks = load_hooks_file(path)
    assert hooks.ok, hooks.problems
    assert hooks.get("after_request")("T-1").rota.name == "sre"
