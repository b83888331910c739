"""`strategy: custom`: the README's example strategy file (examples/strategies/postgres_role.py),
loaded from a test keycard.yaml and run through a whole lifecycle against an in-memory stand-in
for PostgreSQL; `keycard strategies check` passing it and catching broken files."""

from __future__ import annotations

import re
import shutil
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from activities.custom import custom_activities
from activities.registry import StrategyContext
from keycard.config import ConfigError, load_config, parse_config
from keycard.models import RequestState
from main import app
from starter.client import RequestRejected
from tests.harness import ALICE, BOB, running_stack, state_is, unique_id
from tests.workflows.test_timers import outcome

EXAMPLE = Path(__file__).parents[2] / "examples" / "strategies" / "postgres_role.py"

FLOW = """
flows:
  - name: billing-db
    strategy: custom
    module: strategies/postgres_role.py
    targets:
      - {name: billing, label: Billing admin, settings: {role: billing_admin}}
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


class FakePostgres:
    """Logins, roles and memberships; answers the example's statements and nothing else."""

    def __init__(self) -> None:
        self.roles = {"alice", "bob", "billing_admin"}
        self.members: set[tuple[str, str]] = set()
        self.statements: list[str] = []

    @asynccontextmanager
    async def connect(self):
        yield self

    async def fetchval(self, query: str, *args: str):
        self.statements.append(query)
        if "pg_roles" in query:
            return 1 if args[0] in self.roles else None
        if "pg_has_role" in query:
            return (args[0], args[1]) in self.members
        raise AssertionError(query)

    async def execute(self, statement: str) -> None:
        self.statements.append(statement)
        if match := re.fullmatch(r'GRANT "(\w+)" TO "(\w+)"', statement):
            self.members.add((match[2], match[1]))
        elif match := re.fullmatch(r'REVOKE "(\w+)" FROM "(\w+)"', statement):
            self.members.discard((match[2], match[1]))
        else:
            raise AssertionError(statement)


async def test_a_custom_strategy_runs_a_whole_lifecycle(time_env, tmp_path):
    (tmp_path / "strategies").mkdir()
    shutil.copy(EXAMPLE, tmp_path / "strategies" / "postgres_role.py")
    config = parse_config(FLOW)
    activities = custom_activities(StrategyContext(config, None, tmp_path))
    db = FakePostgres()
    [module] = [m for m in list(sys.modules.values()) if getattr(m, "PostgresRole", None)
                and Path(getattr(m, "__file__", "")).parent == tmp_path / "strategies"]  # fmt: skip
    module.connect = db.connect
    async with running_stack(time_env.client, config, strategies=activities) as stack:
        view = await stack.keycard.request(
            flow="billing-db", target="billing", reason="month end", requester=ALICE,
            request_id=unique_id(),
        )  # fmt: skip
        assert view.state is RequestState.PENDING
        await stack.keycard.approve(view.id, BOB)
        await state_is(stack, view.id, RequestState.ACTIVE)
        assert ("alice", "billing_admin") in db.members
        final = await outcome(time_env, view.id)
        assert final.state is RequestState.ENDED and not db.members
        assert 'REVOKE "billing_admin" FROM "alice"' in db.statements

        with pytest.raises(RequestRejected) as nobody:
            await stack.keycard.request(
                flow="billing-db", target="billing", reason="x",
                requester=ALICE.model_copy(update={"email": "mallory@example.com"}),
                request_id=unique_id(),
            )  # fmt: skip
        assert str(nobody.value) == "mallory@example.com has no database login mallory"


runner = CliRunner()


def test_strategies_check_passes_the_example():
    result = runner.invoke(app, ["strategies", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("OK (PostgresRole)")


BROKEN = {
    "sync.py": (
        "from keycard.sdk import Strategy\n"
        "class S(Strategy):\n"
        "    def resolve(self, person, target, settings): ...\n"
        "    async def exists(self, grant): ...\n"
        "    async def grant(self, grant): ...\n"
        "    async def revoke(self, grant): ...\n",
        ["S.resolve must be async (async def resolve)"],
    ),
    "missing.py": (
        "from keycard.sdk import Strategy\n"
        "class S(Strategy):\n"
        "    async def resolve(self, person, target, settings): ...\n"
        "    async def grant(self, grant): ...\n",
        ["S does not implement exists", "S does not implement revoke"],
    ),
    "args.py": (
        "from keycard.sdk import Strategy\n"
        "class S(Strategy):\n"
        "    async def resolve(self, person): ...\n"
        "    async def exists(self, grant): ...\n"
        "    async def grant(self, grant): ...\n"
        "    async def revoke(self, grant): ...\n",
        ["S.resolve(self, person) must take (self, person, target, settings)"],
    ),
    "two.py": (
        "from keycard.sdk import Strategy\nclass A(Strategy): ...\nclass B(Strategy): ...\n",
        ["must define exactly one subclass of keycard.sdk.Strategy (found: A, B)"],
    ),
    "raises.py": (
        "import nowhere_to_be_found\n",
        ["importing it failed: line 1: ModuleNotFoundError"],
    ),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_strategies_check_names_what_is_wrong(tmp_path, name):
    source, problems = BROKEN[name]
    path = tmp_path / name
    path.write_text(source)
    result = runner.invoke(app, ["strategies", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}: {len(problems)} problem(s)" in result.stderr
    for problem in problems:
        assert problem in result.stderr


def test_strategies_list_shows_every_strategy_of_the_registry():
    result = runner.invoke(app, ["strategies", "list"])
    assert result.exit_code == 0
    names = [line.split()[0] for line in result.output.splitlines() if not line.startswith(" ")]
    assert names == ["aws_sso", "aws_sso_group", "aws_iam_group", "okta_group", "http", "custom"]


def test_a_module_missing_or_outside_the_config_directory_stops_the_config(tmp_path):
    path = tmp_path / "keycard.yaml"
    path.write_text(FLOW)
    with pytest.raises(ConfigError) as missing:
        load_config(path)
    assert "flows[0].module: strategies/postgres_role.py does not exist" in str(missing.value)
    path.write_text(FLOW.replace("strategies/postgres_role.py", "../postgres_role.py"))
    shutil.copy(EXAMPLE, tmp_path.parent / "postgres_role.py")
    with pytest.raises(ConfigError) as outside:
        load_config(path)
    assert "flows[0].module: ../postgres_role.py is outside" in str(outside.value)
