"""`keycard doctor` on flows of strategies other than AWS's: each strategy's own check, run as
its activities would run it (http: its secret and header variables; okta_group: each group
exists; custom: its module loads and its class checks out)."""

from __future__ import annotations

from pathlib import Path

import pytest

from keycard.config import parse_config
from starter.doctor.report import Level, Report
from starter.doctor.services import check_strategies
from tests.fake_okta import TOKEN, running_okta

CONFIG = """
flows:
  - name: billing-db
    strategy: http
    http:
      url: https://access.example.com/keycard
      secret: ${ACCESS_SECRET}
      headers: {Authorization: "Bearer ${ACCESS_TOKEN}"}
    targets: [{name: billing, settings: {database: billing}}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
  - name: okta-sre
    strategy: okta_group
    targets: [{name: sre, group: sre-admins}, {name: gone, group: no-such-group}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
  - name: reports
    strategy: custom
    module: strategies/broken.py
    targets: [{name: r}]
    durations: [1h]
    approvers: {users: [bob@example.com, carol@example.com]}
"""


@pytest.fixture(autouse=True)
def plain_http(monkeypatch):
    monkeypatch.setenv("OKTA_TESTING_TESTINGDISABLEHTTPSCHECK", "true")


async def test_each_non_aws_flow_is_checked_by_its_strategy(tmp_path: Path):
    (tmp_path / "strategies").mkdir()
    (tmp_path / "strategies" / "broken.py").write_text("from keycard.sdk import Strategy\n")
    (tmp_path / "keycard.yaml").write_text(CONFIG)
    config = parse_config(CONFIG)
    config._base_dir = tmp_path
    async with running_okta() as okta:
        env = {"OKTA_CLIENT_ORGURL": okta.url, "OKTA_CLIENT_TOKEN": TOKEN, "ACCESS_TOKEN": "t"}
        report = Report()
        await check_strategies(report, config, env)
    found = {f.check: (f.level, f.message) for f in report.findings}
    assert found["flow billing-db (http)"] == (
        Level.FAIL,
        "the http strategy's secret is not set on this worker: environment variable "
        "ACCESS_SECRET is not set.",
    )
    assert found["flow okta-sre (okta_group)"] == (
        Level.FAIL,
        "target gone: there is no Okta group named no-such-group.",
    )
    level, message = found["flow reports (custom)"]
    assert level is Level.FAIL
    assert "must define exactly one subclass of keycard.sdk.Strategy (found: none)" in message

    env["ACCESS_SECRET"] = "s"
    report = Report()
    good = parse_config(CONFIG.split("  - name: okta-sre")[0])
    await check_strategies(report, good, env)
    assert [(f.level, f.message) for f in report.findings] == [(Level.OK, "1 target(s) check out.")]
