"""`keycard doctor`: check a deployment before a user finds out what is wrong with it.

Every check reads only: it connects, describes and lists, and never changes Temporal, AWS or
Slack. Each finding is OK, WARN or FAIL with one sentence saying what was found and what to do
(report.py). The checks: temporal.py, aws.py (for flows of AWS strategies), services.py (the
config, hooks, other strategies, Slack, the payload key, sign-on, PagerDuty).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from keycard import temporal as names
from keycard.settings import Settings
from starter.doctor.aws import beside_keycard_dev, check_aws
from starter.doctor.report import Report
from starter.doctor.services import (
    check_config,
    check_pagerduty,
    check_payload_key,
    check_slack,
    check_sso,
    check_strategies,
)
from starter.doctor.temporal import check_temporal

__all__ = ["Report", "diagnose"]


async def diagnose(config_path: Path, state_dir: Path = Path(".keycard")) -> Report:
    """Run every check with the settings the worker would use: its environment, as it is; or,
    beside a running `keycard dev` and with no AWS or Temporal settings of one's own, that dev's
    demo AWS and Temporal, which its worker uses."""
    env = dict(os.environ)
    report = Report()
    demo = beside_keycard_dev(report, env, state_dir)
    config = check_config(report, config_path)
    try:
        task_queue = Settings.from_env(env).task_queue
    except ValueError as err:
        report.fail("settings", f"{err}.")
        task_queue = names.DEFAULT_TASK_QUEUE
    check_payload_key(report, env)
    await check_sso(report, env)
    await check_temporal(report, env, task_queue)
    if config is not None:
        if config.uses_aws:
            await asyncio.to_thread(check_aws, report, config, demo)
        await check_strategies(report, config, env)
    await check_slack(report, env)
    await asyncio.to_thread(check_pagerduty, report, env, config)
    return report
