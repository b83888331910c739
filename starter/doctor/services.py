"""`keycard doctor`'s other checks: keycard.yaml and its hooks, the strategies of other targets,
Slack, the payload key, single sign-on and PagerDuty."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from keycard.codec import KEY_ENV, PayloadKeyError, PayloadKeys
from keycard.config import (
    ConfigError,
    KeycardConfig,
    load_config,
    unset_environment,
)
from keycard.settings import SlackSettings
from keycard.strategies import STRATEGIES
from starter.doctor.report import (
    CONNECT_TIMEOUT,
    STRATEGY_CHECK_TIMEOUT,
    Report,
    short,
)


def check_config(report: Report, path: Path) -> KeycardConfig | None:
    try:
        config = load_config(path)
    except ConfigError as err:
        report.fail(
            "keycard.yaml",
            f"{err.source} is not valid: {'; '.join(err.problems)}. Fix it; "
            f"`keycard flows validate {path}` shows each problem with its location.",
        )
        return None
    targets = sum(len(flow.targets) for flow in config.flows)
    report.ok("keycard.yaml", f"{path} is valid: {len(config.flows)} flows, {targets} targets.")
    for problem in unset_environment(config):
        report.fail("environment", f"{problem}.")
    check_hooks(report, config)
    return config


def check_hooks(report: Report, config: KeycardConfig) -> None:
    """Import each hooks file the flows name, as the worker will; report what it would reject."""
    from keycard.sdk.loader import load_hooks_file

    files = dict.fromkeys(flow.hooks for flow in config.flows if flow.hooks)
    for name in files:
        hooks = load_hooks_file(config.base_dir / name)
        if hooks.ok:
            found = ", ".join(sorted(hooks.functions)) or "no hooks"
            report.ok("hooks", f"{name} loads ({found}).")
        else:
            report.fail(
                "hooks",
                f"{name} cannot be used: {'; '.join(hooks.problems)}. Fix it and check it with "
                f"`keycard hooks check {name}`.",
            )


async def check_strategies(report: Report, config: KeycardConfig, env: Mapping[str, str]) -> None:
    """Each flow of a strategy other than AWS's: its strategy loads, and its own `check` (Okta:
    each group exists; http: its secret and header variables are set) finds nothing wrong."""
    from activities.registry import StrategyContext, strategy_for_flow

    context = StrategyContext(config, None, config.base_dir, env)
    for flow in config.flows:
        if STRATEGIES[flow.strategy].aws:
            continue
        check = f"flow {flow.name} ({flow.strategy})"
        try:
            strategy = strategy_for_flow(flow, context)
            targets = {t.name: t.spec_settings() for t in flow.targets}
            problems = await asyncio.wait_for(strategy.check(targets), STRATEGY_CHECK_TIMEOUT)
        except Exception as err:  # the strategy's own code: whatever it raises is the finding
            report.fail(check, f"cannot be checked: {short(err)}.")
            continue
        if problems:
            report.fail(check, "; ".join(problems) + ".")
        else:
            report.ok(check, f"{len(flow.targets)} target(s) check out.")


async def check_slack(report: Report, env: Mapping[str, str]) -> None:
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    slack = SlackSettings.from_env(dict(env))  # the settings the worker and the API read
    if not slack.enabled:
        report.ok(
            "slack",
            "not configured (SLACK_BOT_TOKEN is unset): notifications go to the worker's log.",
        )
        return
    base_url = slack.api_url.rstrip("/") + "/"
    web = AsyncWebClient(token=slack.bot_token, base_url=base_url, timeout=10)
    try:
        answer = await web.auth_test()
    except SlackApiError as err:
        error = err.response.get("error", "error")
        report.fail(
            "slack",
            f"Slack rejected SLACK_BOT_TOKEN ({error}). Copy the Bot User OAuth Token (xoxb-...) "
            "from your Slack app's OAuth & Permissions page, and reinstall the app if it was "
            "revoked.",
        )
        return
    except Exception as err:
        report.fail("slack", f"cannot reach Slack at {base_url} ({short(err)}).")
        return
    report.ok("slack", f"token works: bot {answer.get('user')} in team {answer.get('team')}.")
    if not slack.signing_secret and not slack.socket_mode:
        report.warn(
            "slack",
            "SLACK_SIGNING_SECRET is unset, so the API cannot verify requests from Slack; copy "
            "it from your Slack app's Basic Information page (or use Socket Mode: "
            "SLACK_APP_TOKEN).",
        )


def check_payload_key(report: Report, env: Mapping[str, str]) -> None:
    try:
        keys = PayloadKeys.from_env(env)
    except PayloadKeyError as err:
        report.fail("payload key", f"{err}.")
        return
    if keys is None:
        report.ok(
            "payload key",
            f"not set: reasons, emails and fields are plain text in Temporal ({KEY_ENV}, "
            "docs/deployment.md).",
        )
        return
    older = len(keys.by_id) - 1
    report.ok(
        "payload key",
        f"payloads are encrypted with key {keys.current!r}"
        + (f"; {older} older key(s) still decrypt." if older else "."),
    )


async def check_sso(report: Report, env: Mapping[str, str]) -> None:
    from starter.sso import SsoSettings, SsoSettingsError, public_url

    try:
        sso = SsoSettings.from_env(env)
        public_url(env)
    except SsoSettingsError as err:
        report.fail("single sign-on", f"{err}.")
        return
    if sso is None:
        report.ok("single sign-on", "not configured: the console signs people in with tokens.")
        return
    metadata_url = f"{sso.issuer}/.well-known/openid-configuration"
    try:
        async with httpx.AsyncClient(timeout=CONNECT_TIMEOUT) as http:
            answer = await http.get(metadata_url)
            answer.raise_for_status()
            metadata = answer.json()
    except (httpx.HTTPError, ValueError) as err:
        report.fail(
            "single sign-on", f"{metadata_url} did not answer with metadata ({short(err)})."
        )
        return
    if metadata.get("issuer", "").rstrip("/") != sso.issuer:
        report.fail(
            "single sign-on",
            f"the provider calls itself {metadata.get('issuer')!r}, not {sso.issuer!r}: set "
            "KEYCARD_OIDC_ISSUER to exactly that.",
        )
        return
    report.ok("single sign-on", f"{sso.issuer} answers; client {sso.client_id}.")


def check_pagerduty(
    report: Report, env: Mapping[str, str], config: KeycardConfig | None, verify: Any = True
) -> None:
    from activities.pagerduty import PagerDutyDirectory, settings_problem

    wanted = config is not None and any(
        flow.hooks or (flow.auto_approve and flow.auto_approve.pagerduty_on_call)
        for flow in config.flows
    )
    if not env.get("PAGERDUTY_API_KEY"):
        message = "not configured (PAGERDUTY_API_KEY is unset)"
        if wanted:
            report.warn("pagerduty", f"{message}: on-call rules and hooks that ask it decide no.")
        else:
            report.ok("pagerduty", f"{message}.")
        return
    problem = settings_problem(env)
    if problem:
        report.fail("pagerduty", f"{problem}.")
        return
    directory = PagerDutyDirectory.from_env(env, verify=verify)
    assert directory is not None
    try:
        directory.user_id("keycard-doctor@invalid.example")  # any answer proves the key works
    except Exception as err:
        report.fail(
            "pagerduty",
            f"PagerDuty refused or did not answer ({short(err)}); check PAGERDUTY_API_KEY (a "
            "REST API key) and PAGERDUTY_API_URL.",
        )
        return
    report.ok("pagerduty", "the API key works.")
