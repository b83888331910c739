"""KeycardClient: requests reached through Temporal, for the HTTP API, Slack, the console and
operators. Its shape is starter/protocol.py's `Keycard`, which the HTTP API's client shares.

One class with a verb per method, and the Temporal calls each needs (update-with-start, updates
retried while a request is not ready, visibility queries with sealed page tokens): longer than
most modules because every door's traffic to Temporal goes through here, and nowhere else.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import uuid
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecution,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.envconfig import ClientConfig
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.runtime import Runtime
from temporalio.service import RPCError, RPCStatusCode

from keycard import policy
from keycard import temporal as names
from keycard.codec import data_converter_from_env
from keycard.config import KeycardConfig
from keycard.models import (
    AccessRequestInput,
    Actor,
    ApproveInput,
    CancelInput,
    DenyInput,
    ExtendInput,
    RefusedInput,
    Requester,
    RequestState,
    RequestView,
    ReviewFinding,
    ReviewInput,
    RevokeInput,
    Role,
    summary_line,
)
from keycard.policy import DecisionRefused, PolicyError, Refusal, RequestInvalid
from keycard.redact import scrub_text
from starter.dev_state import dev_temporal_address
from starter.pages import RequestPage, RequestSummary
from starter.protocol import WAIT_TIMEOUT, Ask
from starter.telemetry import tracing_interceptors

log = structlog.get_logger(__name__)

# `wait` re-reads a request after these pauses (seconds): quick at first, then at a steady pace.
WAIT_FIRST_PAUSE = 0.1
WAIT_MAX_PAUSE = 1.0

__all__ = [
    "DecisionRefused",
    "KeycardClient",
    "PolicyError",
    "RequestInvalid",
    "RequestNotFound",
    "RequestPage",
    "RequestRejected",
    "RequestSummary",
    "connect_temporal",
]


def _readable_by(reader: Actor) -> list[str]:
    """Visibility clauses for policy.may_read. Requests started before KeycardApprovers and
    KeycardSubmittedBy existed lack them: only their requester and admins list those."""
    if reader.role is Role.ADMIN:
        return []
    email = _quote((reader.email or "").lower())
    if reader.role is Role.SERVICE:
        return [f"{names.SA_SUBMITTED_BY.name} = {email}"]
    return [f"({names.SA_REQUESTER.name} = {email} OR {names.SA_APPROVERS.name} = {email})"]


class RequestNotFound(PolicyError):
    def __init__(self, request_id: str):
        shown = request_id if len(request_id) <= 80 else request_id[:60] + "..."
        super().__init__("NotFound", f"there is no request {shown}", Refusal.INVALID)
        self.request_id = request_id


# What a request id can look like (ours are req-...; callers may choose their own): anything else
# is no request, answered without asking Temporal.
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")


def _request_id(request_id: str) -> str:
    if not REQUEST_ID.match(request_id):
        raise RequestNotFound(request_id)
    return request_id


class RequestRejected(PolicyError):
    """The request was started but failed its checks against AWS (no such user, and so on)."""

    def __init__(self, code: str, message: str, view: RequestView | None = None):
        super().__init__(code, message, Refusal.INVALID)
        self.view = view


# How long a decision keeps trying while Temporal says the request is not ready for it.
UPDATE_NOT_READY_WAIT = timedelta(seconds=30)


async def connect_temporal(
    profile: str | None = None,
    env: Mapping[str, str] | None = None,
    runtime: Runtime | None = None,
) -> Client:
    """Connect with Temporal's own environment configuration (TEMPORAL_ADDRESS, _NAMESPACE,
    _API_KEY, TLS settings, or a profile in temporal.toml), so Temporal Cloud works unchanged.
    When none of them names an address, a `keycard dev` running from this directory is used
    (its address is in .keycard/dev.json, whatever --port it was given), else localhost:7233.

    Payloads are encrypted when KEYCARD_PAYLOAD_KEY is set (keycard/codec.py); a malformed key
    raises PayloadKeyError, whose message says what to fix. `runtime` serves metrics (a
    worker's, starter/telemetry.py); OTEL_* variables add tracing to every call."""
    config = ClientConfig.load_client_connect_config(profile=profile, override_env_vars=env)
    if not config.get("target_host"):
        config["target_host"] = dev_temporal_address() or "localhost:7233"
    return await Client.connect(
        **config,
        data_converter=data_converter_from_env(),
        interceptors=tracing_interceptors(),
        runtime=runtime,
    )


class KeycardClient:
    """Request, decide on and read access requests. Refusals raise PolicyError subclasses whose
    `code` callers match and whose message is written for the person who asked."""

    def __init__(self, client: Client, config: KeycardConfig, task_queue: str | None = None):
        self.temporal = client
        self.config = config
        self.task_queue = task_queue or names.task_queue()

    # --- asking --------------------------------------------------------------------------------

    def prepare(
        self,
        ask: Ask,
        *,
        submitted_by: Actor | None = None,
        request_id: str | None = None,
        via: str = "cli",
    ) -> AccessRequestInput:
        """Check a request against its flow without starting anything; raises RequestInvalid.

        `submitted_by`: a service that asks on the requester's behalf. `request_id`: the id to
        start it under (default: a new one); the same id twice starts one request. `via`: the
        front door, for the audit."""
        if ask.requester is None:
            raise RequestInvalid(
                "RequesterRequired", "say who the access is for: set `requester` to their email"
            )
        flow_def = policy.find_flow(self.config, ask.flow)
        targets = policy.find_targets(flow_def, ask.target)
        policy.check_requester(flow_def, ask.requester.email, self.config.approver_groups)
        return AccessRequestInput(
            request_id=request_id or names.new_request_id(),
            requester=ask.requester,
            flow=flow_def,
            target=targets[0],
            targets=targets if len(targets) > 1 else [],
            approver_groups=policy.referenced_groups(flow_def, self.config.approver_groups),
            duration=policy.choose_duration(flow_def, ask.duration),
            reason=policy.check_reason(flow_def, ask.reason),
            fields=policy.check_fields(flow_def, dict(ask.fields)),
            start_at=policy.check_start_at(flow_def, ask.start_at, datetime.now(UTC)),
            submitted_by=submitted_by,
            via=via,
            audit_destinations=self.config.audit.destination_names,
            policy=self.config.policy_of(flow_def),
        )

    async def request(
        self,
        *,
        flow: str,
        target: str | Sequence[str],
        requester: Requester | None = None,
        duration: str | timedelta | None = None,
        reason: str | None = None,
        fields: Mapping[str, Any] | None = None,
        start_at: datetime | None = None,
        submitted_by: Actor | None = None,
        request_id: str | None = None,
        via: str = "cli",
    ) -> RequestView:
        """Start a request and return it once checked against AWS (PENDING, or decided by a rule).

        The same `request_id` twice returns the first request instead of starting a second,
        which is what makes retries and idempotency keys safe. See `prepare` for the rest.
        """
        ask = Ask(
            flow=flow,
            target=target if isinstance(target, str) else tuple(target),
            requester=requester,
            duration=duration,
            reason=reason,
            fields=dict(fields or {}),
            start_at=start_at,
        )
        return await self.start(
            self.prepare(ask, submitted_by=submitted_by, request_id=request_id, via=via)
        )

    async def start(self, input: AccessRequestInput) -> RequestView:
        """Start a request `prepare` checked; answer as `request` does."""
        start = WithStartWorkflowOperation(
            names.ACCESS_REQUEST_WORKFLOW,
            input,
            id=input.request_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            # A finished request's id is never reused: asking again with it gets that request.
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=TypedSearchAttributes(
                names.request_search_attributes(
                    requester=input.requester.email,
                    flow=input.flow.name,
                    target=input.target.name,
                    state=RequestState.PENDING.value,
                    approvers=policy.approvers_of(input.flow, input.approver_groups),
                    submitted_by=(input.submitted_by or input.requester).email,
                )
            ),
            static_summary=summary_line(
                input.requester.email,
                ", ".join(t.display for t in input.targets or [input.target]),
                input.flow.display,
                input.duration,
                input.reason,
            ),
            static_details=f"Requested by {input.requester.email}"
            + (f" via {input.submitted_by.display}" if input.submitted_by else ""),
        )
        try:
            result = await self.temporal.execute_update_with_start_workflow(
                names.REQUEST_SUBMITTED,
                start_workflow_operation=start,
                result_type=RequestView,
            )
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                raise RequestRejected(cause.type or "RequestFailed", cause.message) from None
            raise
        except WorkflowAlreadyStartedError:
            _claim_start_outcome(start)
            return await self.get(input.request_id)  # that id's request has already ended
        except BaseException:
            _claim_start_outcome(start)
            raise
        log.info("request.started", request_id=input.request_id, flow=input.flow.name)
        return result

    # --- deciding ------------------------------------------------------------------------------

    async def approve(
        self, request_id: str, actor: Actor, comment: str = "", *, update_id: str | None = None
    ) -> RequestView:
        return await self._decide(
            request_id, "approved", "approve",
            ApproveInput(actor=actor, comment=scrub_text(comment)), update_id,
        )  # fmt: skip

    async def break_glass(
        self, request_id: str, actor: Actor, justification: str, *, update_id: str | None = None
    ) -> RequestView:
        """The requester approves their own request in an emergency (flows with `break_glass`).
        Access starts at once; the request is marked and announced for review."""
        return await self._decide(
            request_id, "approved", "approve",
            ApproveInput(actor=actor, comment=scrub_text(justification), break_glass=True), update_id,
        )  # fmt: skip

    async def deny(
        self, request_id: str, actor: Actor, comment: str = "", *, update_id: str | None = None
    ) -> RequestView:
        return await self._decide(
            request_id, "denied", "deny",
            DenyInput(actor=actor, comment=scrub_text(comment)), update_id,
        )  # fmt: skip

    async def cancel(
        self, request_id: str, actor: Actor, comment: str = "", *, update_id: str | None = None
    ) -> RequestView:
        return await self._decide(
            request_id, "cancelled", "cancel",
            CancelInput(actor=actor, comment=scrub_text(comment)), update_id,
        )  # fmt: skip

    async def revoke(
        self, request_id: str, actor: Actor, comment: str = "", *, update_id: str | None = None
    ) -> RequestView:
        return await self._decide(
            request_id, "revoked", "revoke",
            RevokeInput(actor=actor, comment=scrub_text(comment)), update_id,
        )  # fmt: skip

    async def review(
        self,
        request_id: str,
        actor: Actor,
        finding: ReviewFinding = "justified",
        comment: str = "",
        *,
        update_id: str | None = None,
    ) -> RequestView:
        """An approver's review of a break-glass use, afterwards (`break_glass.reviewed`)."""
        input = ReviewInput(actor=actor, finding=finding, comment=scrub_text(comment))
        try:
            return await self._decide(request_id, "reviewed", "review", input, update_id)
        except DecisionRefused as refusal:
            if refusal.code != "WrongState":
                raise
            raise _why_not_reviewable(await self.get(request_id)) from None

    async def extend(
        self,
        request_id: str,
        actor: Actor,
        duration: str | timedelta,
        comment: str = "",
        *,
        update_id: str | None = None,
    ) -> RequestView:
        try:
            extra = ExtendInput(actor=actor, duration=duration, comment=scrub_text(comment))
        except ValueError as err:
            raise RequestInvalid("InvalidDuration", _first_error(err)) from None
        return await self._decide(request_id, "extended", "extend", extra, update_id)

    async def _decide(
        self, request_id: str, verb: str, update: str, input: Any, update_id: str | None
    ) -> RequestView:
        handle = self.temporal.get_workflow_handle(_request_id(request_id))
        try:
            view = await _update_when_ready(handle, update, input, update_id)
        except WorkflowUpdateFailedError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError):
                kind = Refusal(cause.details[0]) if cause.details else Refusal.CONFLICT
                refusal = DecisionRefused(cause.type or "Refused", cause.message, kind)
                if names.REFUSAL_AUDITED not in cause.details[1:]:
                    await self._audit_refusal(handle, update, input, refusal)
                raise refusal from None
            raise
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # Finished workflows take no updates; say what state the request ended in.
            current = await self.get(request_id)
            raise DecisionRefused(
                "WrongState",
                f"request {request_id} is {current.state.value}; it can no longer be {verb}",
                Refusal.CONFLICT,
            ) from None
        log.info(f"request.{verb}", request_id=request_id, actor=input.actor.display)
        return view

    async def _audit_refusal(
        self, handle: Any, decision: str, input: Any, refusal: DecisionRefused
    ) -> None:
        """A validator's refusal leaves no history; tell the workflow so the attempt is audited.

        Best effort: the person still gets the refusal if this fails, and the log keeps a record.
        """
        log.info(
            "decision.refused",
            request_id=handle.id,
            decision=decision,
            actor=input.actor.display,
            code=refusal.code,
        )
        try:
            await handle.signal(
                names.REQUEST_REFUSED,
                RefusedInput(
                    actor=input.actor,
                    decision=decision,
                    code=refusal.code,
                    reason=refusal.message,
                    comment=input.comment,
                    duration=getattr(input, "duration", None),
                ),
            )
        except RPCError as err:
            # A request that has just closed takes no signals; the log line above remains.
            log.warning("decision.refused.unrecorded", request_id=handle.id, error=err.message)

    # --- reading -------------------------------------------------------------------------------

    async def get(self, request_id: str) -> RequestView:
        handle = self.temporal.get_workflow_handle(_request_id(request_id))
        try:
            return await handle.query(names.REQUEST_STATUS, result_type=RequestView)
        except RPCError as err:
            if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.INVALID_ARGUMENT):
                raise RequestNotFound(request_id) from None
            raise
        except WorkflowQueryFailedError as err:
            raise RequestNotFound(request_id) from err

    async def wait(
        self,
        request_id: str,
        *,
        until: Collection[RequestState] = (RequestState.ACTIVE,),
        timeout: timedelta = WAIT_TIMEOUT,
    ) -> RequestView:
        """The request once it is in one of `until` or finished, or as it is when `timeout` ends.

        Reads the `status` query with a short, growing pause: a query leaves no trace in the
        workflow's history, where a blocking update would add events for every waiting script.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout.total_seconds()
        pause = WAIT_FIRST_PAUSE
        while True:
            view = await self.get(request_id)
            left = deadline - loop.time()
            if view.state in until or view.state.finished or left <= 0:
                return view
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, WAIT_MAX_PAUSE)

    async def list(
        self,
        *,
        state: RequestState | str | None = None,
        flow: str | None = None,
        requester: str | None = None,
        target: str | None = None,
        limit: int = 50,
        page_token: str | None = None,
        reader: Actor | None = None,
        details: bool = True,
    ) -> RequestPage:
        """Newest first by start time, whatever the state, from Temporal visibility on Keycard's
        search attributes. Given a `reader`, only the requests policy.may_read lets them read
        (None: all, for callers with Temporal access themselves: the CLI, Slack's own list of a
        person's requests). `page_token` continues after the last row of the previous page.
        `details` adds each row's summary, expiry and decider (a call per row; callers that read
        each request anyway pass False)."""
        clauses = [f"WorkflowType = '{names.ACCESS_REQUEST_WORKFLOW}'"]
        if reader is not None:
            clauses.extend(_readable_by(reader))
        for key, value in (
            (names.SA_STATE, RequestState(state).value if state else None),
            (names.SA_FLOW, flow),
            (names.SA_REQUESTER, requester.lower() if requester else None),
            (names.SA_TARGET, target),
        ):
            if value:
                clauses.append(f"{key.name} = {_quote(value)}")
        limit = max(1, min(limit, 1000))
        after = _PageCursor.decode(page_token) if page_token else None
        executions = await self._newest(" AND ".join(clauses), limit + 1, after)
        more = len(executions) > limit
        executions = executions[:limit]
        rows = [self._row(e) for e in executions]
        if details:
            await self._add_details(rows, executions)
        last = executions[-1] if more else None
        return RequestPage(
            requests=rows,
            next_page_token=_PageCursor(start=last.start_time, id=last.id).encode()
            if last
            else None,
        )

    async def _newest(
        self, query: str, want: int, after: _PageCursor | None
    ) -> list[WorkflowExecution]:
        """The `want` newest executions started before `after`, sorted newest first.

        Temporal's SQL visibility (the dev server's, Postgres, MySQL) cannot ORDER BY, and lists
        open workflows before closed ones. So this counts back from the cursor in widening
        windows of start time until one holds `want` (or everything), fetches that window, and
        sorts it here: keyset pagination on (start time, id), stable while requests come in.
        Where everything left fits in one fetch (most namespaces), it is one count and one fetch."""
        upper = after.start + timedelta(microseconds=1) if after else None
        bounded = f"{query} AND StartTime < '{_rfc3339(upper)}'" if upper else query
        span, found = _FIRST_WINDOW, None
        if (await self.temporal.count_workflows(bounded)).count <= _FETCH_ALL:
            span = _WIDEST_WINDOW * 2  # no windows: fetch it all
        while span <= _WIDEST_WINDOW:
            lower = (upper or datetime.now(UTC) + timedelta(minutes=1)) - span
            windowed = f"{bounded} AND StartTime >= '{_rfc3339(lower)}'"
            count = (await self.temporal.count_workflows(windowed)).count
            if count >= want:
                found = windowed
                break
            span *= 8
        rows = [
            execution
            async for execution in self.temporal.list_workflows(found or bounded, page_size=1000)
        ]
        if after is not None:
            rows = [r for r in rows if (r.start_time, r.id) < (after.start, after.id)]
        rows.sort(key=lambda r: (r.start_time, r.id), reverse=True)
        return rows[:want]

    def _row(self, execution: WorkflowExecution) -> RequestSummary:
        """A list row from visibility's attributes alone."""
        attrs = execution.typed_search_attributes
        state_value = attrs.get(names.SA_STATE)
        email = attrs.get(names.SA_REQUESTER)
        return RequestSummary(
            id=execution.id,
            state=RequestState(state_value) if state_value else None,
            requester=Requester(email=email) if email else None,
            flow=attrs.get(names.SA_FLOW),
            target=attrs.get(names.SA_TARGET),
            started_at=execution.start_time,
            closed_at=execution.close_time
            if execution.status != WorkflowExecutionStatus.RUNNING
            else None,
        )

    async def _add_details(
        self, rows: list[RequestSummary], executions: list[WorkflowExecution]
    ) -> None:
        """Each row's summary, expiry and decider, ROW_CALLS at a time, within ROW_TIMEOUT for
        the whole page: a request whose worker is busy or gone leaves its row without them,
        and never holds the page longer than that."""
        calls = asyncio.Semaphore(ROW_CALLS)
        tasks = [
            asyncio.ensure_future(self._details(row, execution, calls))
            for row, execution in zip(rows, executions, strict=True)
        ]
        if not tasks:
            return
        _, late = await asyncio.wait(tasks, timeout=ROW_TIMEOUT.total_seconds())
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _details(
        self, row: RequestSummary, execution: WorkflowExecution, calls: asyncio.Semaphore
    ) -> None:
        """The one-line summary the request started with, and from the request itself (its
        answer to a query while it runs, its result once closed) when its access ends or ended
        and who decided it. Fills `row` as answers come."""
        handle = self.temporal.get_workflow_handle(
            execution.id, run_id=execution.run_id, result_type=RequestView
        )
        view = None
        async with calls:
            with contextlib.suppress(RPCError):
                row.summary = await (await handle.describe()).static_summary()
            with contextlib.suppress(RPCError, WorkflowQueryFailedError, WorkflowFailureError):
                if execution.status == WorkflowExecutionStatus.RUNNING:
                    if row.state in (None, RequestState.PENDING):
                        return  # undecided: no decider, no expiry to tell
                    # Only the request knows its expiry (or, still closing, who decided).
                    view = await handle.query(
                        names.REQUEST_STATUS, result_type=RequestView, rpc_timeout=ROW_TIMEOUT
                    )
                elif execution.status == WorkflowExecutionStatus.COMPLETED:
                    view = await handle.result(follow_runs=False, rpc_timeout=ROW_TIMEOUT)
        if view is not None:
            row.expires_at = view.expires_at
            row.decided_by = view.decided_by.display if view.decided_by else None


# How long a page of `list` waits for its rows' answers (a busy or stopped worker leaves a row
# without them), and how many rows ask at once.
ROW_TIMEOUT = timedelta(seconds=3)
ROW_CALLS = 8
# Windows of start time `list` counts back through: an hour, then 8 h, 64 h, ... about 30 years.
_FIRST_WINDOW = timedelta(hours=1)
_WIDEST_WINDOW = timedelta(days=366 * 30)
# Up to this many matching requests are fetched and sorted at once, without counting windows.
_FETCH_ALL = 1000


class _PageCursor(BaseModel):
    """Where a page of `list` ended: the last row's start time and id."""

    start: datetime
    id: str

    def encode(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode()

    @classmethod
    def decode(cls, token: str) -> _PageCursor:
        try:
            return cls.model_validate_json(base64.urlsafe_b64decode(token))
        except (ValueError, TypeError) as err:
            raise ValueError(f"not a page token of `list`: {err}") from None


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _claim_start_outcome(start: WithStartWorkflowOperation) -> None:
    """When update-with-start fails before the start (timeout, cancellation, RPC error), the SDK
    also leaves that failure on the start operation; read it, or asyncio logs it as "Future
    exception was never retrieved" each time (an API call bounded by a timeout, say)."""
    claim = asyncio.ensure_future(start.workflow_handle())
    claim.add_done_callback(lambda task: task.cancelled() or task.exception())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


async def _update_when_ready(
    handle: WorkflowHandle, update: str, input: Any, update_id: str | None
) -> RequestView:
    """`execute_update`, retried while Temporal answers that the workflow is not ready for it
    (its last workflow task timed out or failed and is being retried: an overloaded worker, a
    redeploy). One update id throughout, so a retry can never apply the decision twice."""
    update_id = update_id or str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UPDATE_NOT_READY_WAIT.total_seconds()
    pause = 0.2
    while True:
        try:
            return await handle.execute_update(update, input, id=update_id, result_type=RequestView)
        except RPCError as err:
            if not _not_ready(err) or loop.time() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)


def _not_ready(err: RPCError) -> bool:
    status = err.grpc_status
    return err.status == RPCStatusCode.FAILED_PRECONDITION and any(
        detail.type_url.endswith("WorkflowNotReadyFailure") for detail in status.details
    )


def _first_error(err: Exception) -> str:
    errors = getattr(err, "errors", None)
    if callable(errors):
        first = errors()[0]
        return str(first.get("msg", err)).removeprefix("Value error, ")
    return str(err)


def _why_not_reviewable(view: RequestView) -> DecisionRefused:
    """Why a closed request takes no review: it was not break-glass, was reviewed, or its review
    window closed without one."""
    if not view.break_glass:
        return DecisionRefused(
            "NotBreakGlass",
            f"request {view.id} was not approved with break-glass; only a break-glass use is "
            "reviewed afterwards",
            Refusal.CONFLICT,
        )
    if view.review is not None:
        return DecisionRefused(
            "AlreadyReviewed",
            f"request {view.id} was reviewed by {view.review.by.display} ({view.review.finding})",
            Refusal.CONFLICT,
        )
    closed = f" on {view.review_due:%Y-%m-%d %H:%M} UTC" if view.review_due else ""
    return DecisionRefused(
        "ReviewClosed",
        f"request {view.id}'s review window closed{closed} without a review (audited as "
        "break_glass.review_overdue); Keycard takes no review after that",
        Refusal.CONFLICT,
    )
