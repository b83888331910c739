"""Run users' hooks: on_request and the auto-approval rules, on_approve's veto, and the observers.

Every hook runs in a worker thread with a time limit, inside the integrations context (PagerDuty,
Slack, Identity Center clients built by worker.py). Nothing here raises for a hook's sake: a hook
that raises, times out, returns nonsense or sits in a file with problems is reported as a
HookFailure, and the workflow fails closed (no automatic approval; the request waits for people).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio import activity

from keycard import temporal as names
from keycard.config import KeycardConfig
from keycard.hooks import (
    HOOKS_FILE,
    PAGERDUTY_ON_CALL,
    ApprovalHookInput,
    ApprovalHookResult,
    AutomaticDecision,
    HookFailure,
    ObserveInput,
    ObserveResult,
    RequestHooksInput,
    RequestHooksResult,
    hook_rule,
    routing_failed,
)
from keycard.sdk.context import Integrations, using
from keycard.sdk.decision import Decision
from keycard.sdk.events import Actor, HookEvent, Person
from keycard.sdk.integrations import pagerduty
from keycard.sdk.loader import HooksFile, load_hooks_file

log = structlog.get_logger(__name__)


class HookTimedOut(Exception):
    """A hook (or importing its file) ran past the time limit; its thread is left to finish."""


class HookBusy(Exception):
    """Too many hooks are still running (some hang), so this one was not started."""


class HookActivities:
    """Loads hooks files (again when they change) and calls them with the integrations set."""

    def __init__(
        self,
        integrations: Integrations,
        base_dir: str | Path = ".",
        call_timeout: timedelta = names.HOOK_CALL_TIMEOUT,
        max_threads: int = 32,
    ):
        self._integrations = integrations
        self._base_dir = Path(base_dir)
        self._timeout = call_timeout.total_seconds()
        # Hooks get threads of their own: one that hangs cannot starve the worker's other work.
        self._max_threads = max_threads
        self._threads = threading.BoundedSemaphore(max_threads)
        self._files: dict[Path, tuple[tuple[int, int], HooksFile]] = {}

    @activity.defn(name=names.EVALUATE_REQUEST_HOOKS)
    async def evaluate_request(self, input: RequestHooksInput) -> RequestHooksResult:
        """on_request, then (if it decided nothing and nothing failed) the auto_approve rules,
        then get_approvers."""
        failures: list[HookFailure] = []
        file = await self._file(input.hooks, failures) if input.hooks else None
        decision: AutomaticDecision | None = None

        if file and (on_request := file.get("on_request")):
            value = await self._run("on_request", on_request, input.event, failures)
            decision = _decision(value, "on_request", failures)

        # A hook that failed might have denied: no rule may approve behind its back.
        on_call = input.auto_approve.pagerduty_on_call if input.auto_approve else None
        if decision is None and on_call is not None and not failures:

            def rule(event: HookEvent) -> bool:
                return pagerduty.is_on_call(
                    event.requester, on_call.schedules, on_call.escalation_policies
                )

            if await self._run(PAGERDUTY_ON_CALL, rule, input.event, failures) is True:
                where = ", ".join([*on_call.schedules, *on_call.escalation_policies])
                decision = AutomaticDecision(
                    outcome="approve",
                    reason=f"{input.event.requester.email} is on call in PagerDuty"
                    + (f" ({where})" if where else ""),
                    by=PAGERDUTY_ON_CALL,
                )

        approvers = None
        if file and (get_approvers := file.get("get_approvers")):
            value = await self._run("get_approvers", get_approvers, input.event, failures)
            approvers = _approvers(value, failures)
        if routing_failed(failures):
            approvers = []  # fail closed: nobody but an admin, rather than a guess

        return RequestHooksResult(decision=decision, approvers=approvers, failures=failures)

    @activity.defn(name=names.CHECK_APPROVAL_HOOK)
    async def check_approval(self, input: ApprovalHookInput) -> ApprovalHookResult:
        """on_approve: None lets the approval stand; Decision.deny(reason) vetoes it."""
        failures: list[HookFailure] = []
        file = await self._file(input.hooks, failures)
        if file is None:
            return ApprovalHookResult(failures=failures)
        on_approve = file.get("on_approve")
        if on_approve is None:
            return ApprovalHookResult()
        value = await self._run("on_approve", on_approve, input.event, failures)
        decision = _decision(value, "on_approve", failures)
        if decision is not None and decision.outcome == "deny":
            return ApprovalHookResult(veto=decision.reason, failures=failures)
        return ApprovalHookResult(failures=failures)

    @activity.defn(name=names.RUN_OBSERVER_HOOKS)
    async def observe(self, input: ObserveInput) -> ObserveResult:
        """after_* (and on_deny) observers; what they return is ignored."""
        failures: list[HookFailure] = []
        file = await self._file(input.hooks, failures)
        for name in input.names if file else []:
            fn = file.get(name) if file else None
            if fn is not None:
                await self._run(name, fn, input.event, failures)
        return ObserveResult(failures=failures)

    # --- loading and calling --------------------------------------------------------------------

    async def _file(self, hooks: str, failures: list[HookFailure]) -> HooksFile | None:
        """The hooks file, if it loads with no problems; a file with any problem runs nothing."""
        path = self._base_dir / hooks
        try:
            stat = os.stat(path)
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError as err:
            failures.append(HookFailure(hook=HOOKS_FILE, error=f"{path}: {err.strerror}"))
            return None
        cached = self._files.get(path)
        if cached and cached[0] == stamp:
            file = cached[1]
        else:
            try:
                file = await self._in_thread(lambda: load_hooks_file(path))
            except HookTimedOut:
                failures.append(HookFailure(hook=HOOKS_FILE, error=f"importing {path} hung"))
                return None
            except HookBusy as busy:
                failures.append(HookFailure(hook=HOOKS_FILE, error=str(busy)))
                return None
            self._files[path] = (stamp, file)
            log.info("hooks.loaded", path=str(path), hooks=sorted(file.functions), ok=file.ok)
        if not file.ok:
            failures.append(HookFailure(hook=HOOKS_FILE, error="; ".join(file.problems)))
            return None
        return file

    async def _run(
        self,
        name: str,
        fn: Callable[[HookEvent], Any],
        event: HookEvent,
        failures: list[HookFailure],
    ) -> Any:
        """Call one hook; on any failure record it and return None (which decides nothing)."""
        event = event.model_copy(update={"hook": name})
        try:
            return await self._in_thread(lambda: fn(event))
        except HookTimedOut:
            error = f"did not finish within {self._timeout:g}s"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        log.warning("hook.failed", hook=name, request_id=event.request_id, error=error)
        failures.append(HookFailure(hook=name, error=error))
        return None

    async def _in_thread(self, call: Callable[[], Any]) -> Any:
        """Run `call` in a daemon thread of its own, within the time limit. A thread that overruns
        is abandoned, not killed (Python cannot): being a daemon, it never holds up the worker's
        shutdown, and the thread cap stops hanging hooks from piling up without bound."""
        if not self._threads.acquire(blocking=False):
            raise HookBusy(f"{self._max_threads} hooks are still running; is one hanging?")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        integrations = self._integrations

        def settle(value: Any, error: BaseException | None) -> None:
            if future.done():
                return  # timed out already
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(value)

        def run() -> None:
            value, error = None, None
            try:
                with using(integrations):
                    value = call()
            except Exception as raised:
                error = raised
            except BaseException as raised:  # sys.exit() in a hook must not stop the worker
                error = RuntimeError(f"{type(raised).__name__}: {raised}")
            # Free the slot before the caller hears back, so its next hook finds it free.
            self._threads.release()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is waiting
                loop.call_soon_threadsafe(settle, value, error)

        threading.Thread(target=run, name="keycard-hook", daemon=True).start()
        try:
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            if future.done() and not future.cancelled():
                raise  # the hook itself raised TimeoutError (say, a socket timeout)
            raise HookTimedOut() from None


def _decision(value: Any, name: str, failures: list[HookFailure]) -> AutomaticDecision | None:
    if value is None:
        return None
    if not isinstance(value, Decision):
        failures.append(
            HookFailure(
                hook=name,
                error=f"returned {value!r}; return Decision.approve(reason), "
                "Decision.deny(reason) or None",
            )
        )
        return None
    default = "approved" if value.outcome == "approve" else "denied"
    return AutomaticDecision(
        outcome=value.outcome, reason=value.reason or f"{default} by {name}", by=hook_rule(name)
    )


def _approvers(value: Any, failures: list[HookFailure]) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str | Person | Actor):
        value = [value]
    if isinstance(value, Iterable):
        emails: list[str] = []
        for item in value:
            email = item if isinstance(item, str) else getattr(item, "email", None)
            if not isinstance(email, str) or "@" not in email:
                break
            if email.strip().lower() not in emails:
                emails.append(email.strip().lower())
        else:
            return emails
    failures.append(
        HookFailure(
            hook="get_approvers",
            error=f"returned {value!r}; return a list of emails or people, or None",
        )
    )
    return None


def integrations_from_env(
    session: Any, config: KeycardConfig, environ: Mapping[str, str] | None = None
) -> Integrations:
    """The clients hooks may use, from the worker's environment; absent credentials leave that
    integration unset, and a hook that needs it fails (closed) saying what to configure."""
    from slack_sdk import WebClient

    from activities.groups import IdentityCenterGroups, SlackGroups
    from activities.pagerduty import PagerDutyDirectory

    env = os.environ if environ is None else environ
    slack_token = env.get("SLACK_BOT_TOKEN")
    # The same Web API base URL as the notifier (SLACK_API_URL: a proxy, or a test's fake).
    slack_url = env.get("SLACK_API_URL") or "https://slack.com/api/"
    slack_url = slack_url if slack_url.endswith("/") else slack_url + "/"
    return Integrations(
        pagerduty=PagerDutyDirectory.from_env(env),
        slack=SlackGroups(WebClient(token=slack_token, base_url=slack_url))
        if slack_token
        else None,
        aws_sso=IdentityCenterGroups.from_session(session, config.aws.identity_store_id),
    )


def hook_activities(session: Any, config: KeycardConfig, base_dir: str | Path) -> list[Callable]:
    """The hooks activities for worker.py; hooks files are found relative to `base_dir`."""
    hooks = HookActivities(integrations_from_env(session, config), base_dir)
    return [hooks.evaluate_request, hooks.check_approval, hooks.observe]
