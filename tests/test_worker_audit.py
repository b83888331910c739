"""The worker builds its audit destinations from keycard.yaml."""

from __future__ import annotations

from activities.audit import AuditActivities, HttpSink, JsonlSink
from keycard.config import parse_config
from keycard.settings import Settings
from tests.harness import CONFIG
from worker import build_activities


def test_the_worker_delivers_to_the_configured_destinations(dev_env, tmp_path, monkeypatch):
    monkeypatch.setenv("KEYCARD_TEST_SIEM_TOKEN", "siem-token")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    config = parse_config(
        CONFIG
        + f"""
audit:
  destinations:
    - {{type: jsonl, path: "{tmp_path / "audit.jsonl"}"}}
    - type: http
      name: siem
      url: https://siem.example.com/hook
      headers: {{X-Token: "${{KEYCARD_TEST_SIEM_TOKEN}}"}}
"""
    )
    activities = build_activities(dev_env.client, config, Settings())
    [audit] = [
        a.__self__ for a in activities if isinstance(getattr(a, "__self__", None), AuditActivities)
    ]
    assert list(audit.sinks) == config.audit.destination_names == ["jsonl", "siem"]
    assert isinstance(audit.sinks["jsonl"], JsonlSink)
    assert isinstance(audit.sinks["siem"], HttpSink)
    assert audit.sinks["siem"]._headers["X-Token"] == "siem-token"
