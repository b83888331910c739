"""A request's record: its state, the view every front door reads, its lifecycle events and
where each destination is in them, and the Temporal UI's columns. The first layer of
AccessRequestWorkflow (workflows/access_request.py); the layers above only call down."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate

from workflows.calls import count, local_call

with workflow.unsafe.imports_passed_through():
    from keycard import policy
    from keycard import temporal as names
    from keycard.audit_chain import event_hash
    from keycard.config import Flow, Target
    from keycard.models import (
        AccessRequestInput,
        AccessRequestState,
        Actor,
        AssignmentSpec,
        EventType,
        LeaseDropNotice,
        LifecycleEvent,
        RequestState,
        RequestView,
        ResolvedAssignment,
        TargetRef,
        TargetStatus,
    )
    from keycard.strategies import STRATEGIES, strategy_options


class RequestRecord:
    """The request's state and events; the workflow's first layer."""

    _s: AccessRequestState
    _v6: bool
    _v7: bool
    _v8: bool
    _v10: bool
    _v13: bool
    _multi: bool
    _round_in_flight: bool

    def _patched(self, patch: str) -> bool:
        """workflow.patched, for the patches PATCH_V6 implies."""
        return self._v6 or workflow.patched(patch)

    @property
    def _state(self) -> RequestState:
        return self._s.view.state

    @property
    def _flow(self) -> Flow:
        return self._s.input.flow

    def _total_duration(self) -> timedelta:
        view = self._s.view
        return view.duration + sum((e.duration for e in view.extensions), timedelta(0))

    def _set_state(self, state: RequestState) -> None:
        self._s.view.state = state
        self._publish()

    def _finish(self, state: RequestState, reason: str) -> None:
        self._s.view.ended_at = workflow.now()
        self._s.view.end_reason = reason
        self._set_state(state)

    def _publish(self) -> None:
        """Keep the Temporal UI's columns and details current."""
        view = self._s.view
        pairs = names.request_search_attributes(
            requester=view.requester.email,
            flow=view.flow,
            target=view.target,
            state=view.state.value,
            approvers=view.approvers if self._v6 else None,
        )
        updates: list[SearchAttributeUpdate[Any]] = [p.key.value_set(p.value) for p in pairs]
        if self._v6:  # only what changed: the start set them all, and each write is an event
            current = workflow.info().typed_search_attributes
            # An empty list is how Temporal keeps "none": the same as never set.
            updates = [u for u in updates if (current.get(u.key) or None) != (u.value or None)]
        if updates:
            workflow.upsert_search_attributes(updates)
        workflow.set_current_details(ui_details(view))

    def _emit(
        self, type: EventType, actor: Actor | None, on: TargetStatus | None = None, **detail: Any
    ) -> None:
        """Record a lifecycle event; `on`: the one target it is about, of a request naming
        several (its `target`; otherwise the request's)."""
        self._s.event_seq += 1
        event = self._event(str(self._s.event_seq), type, actor, on=on, **detail)
        if self._v13:  # chained to the request's previous event, so tampering shows
            event.prev_hash = self._s.last_hash
            event.hash = event_hash(event.model_dump(mode="json"))
            self._s.last_hash = event.hash
        self._s.outbox.append(event)
        self._s.views.append(self._s.view.model_copy(deep=True))
        count(names.METRIC_EVENTS, "Keycard audit events made", type=type, flow=event.flow)
        # Into the history now, whatever any audit destination is doing: `keycard audit export`.
        # An idle round with a lane in it starts in this very task with this event in its input,
        # which history keeps: then that is the record, and a memo would only repeat it.
        if not (self._v6 and not self._round_in_flight and self._in_rounds()):
            workflow.upsert_memo({names.AUDIT_MEMO_KEY: event})

    def _event(
        self,
        sequence: str,
        type: EventType,
        actor: Actor | None,
        on: TargetStatus | None = None,
        **detail: Any,
    ) -> LifecycleEvent:
        view = self._s.view
        info = workflow.info()
        target = TargetRef(
            name=view.target,
            label=view.target_label,
            strategy=view.strategy,
            settings=view.target_settings,
        )
        if on is not None:
            target = TargetRef(
                name=on.name, label=on.label, strategy=view.strategy, settings=on.settings
            )
        return LifecycleEvent(
            id=f"{info.workflow_id}/{sequence}",
            type=type,
            time=workflow.now(),
            request_id=view.id,
            workflow_id=info.workflow_id,
            run_id=info.run_id,
            actor=actor,
            requester=view.requester,
            flow=view.flow,
            target=target,
            duration=view.duration,
            reason=view.reason,
            fields=view.fields,
            state=view.state,
            detail=detail,
        )

    def _lease_drop_notice(self, assignment: ResolvedAssignment | None = None) -> LeaseDropNotice:
        """The `access.ended` the grant reports for this request if it must drop the lease (the
        request terminated): made here, where the request's context is, with an id of its own
        (one per target, for a request naming several)."""
        on = self._target_of(assignment)
        sequence = "lease-dropped" if on is None else f"lease-dropped:{on.name}"
        event = self._event(sequence, "access.ended", None, on=on)
        return LeaseDropNotice(
            event=event.model_copy(update={"state": RequestState.ENDED}),
            destinations=list(self._s.input.audit_destinations),
        )

    def _target_of(self, assignment: ResolvedAssignment | None) -> TargetStatus | None:
        """The target an assignment grants, of a request naming several (None: the only one)."""
        if assignment is None:
            return None
        for status in self._s.view.targets:
            if self._s.assignments.get(status.name) == assignment:
                return status
        return None

    async def _short_call(self, activity: str, arg: Any, **options: Any) -> Any:
        """A short call (an AWS lookup, a signal handed to Temporal) as a local activity: it runs in
        the workflow task that asks for it, sparing a round trip through the task queue and five
        history events. Requests started before run it as an activity, as their histories say."""
        if self._patched(names.PATCH_LOCAL_CALLS):
            return await local_call(activity, arg, **options)
        return await workflow.execute_activity(activity, arg, **options)

    def _steps_detail(self) -> dict[str, Any]:
        """The approval steps for an audit event: each with who may approve and who counts."""
        steps = self._s.view.approval_steps
        if not steps:
            return {}
        return {"approval_steps": [step.model_dump(mode="json") for step in steps]}

    def _cursor(self, lane: str) -> int:
        if lane == names.NOTIFY_LANE:
            return self._s.notified
        return self._s.audit_sent.get(lane, 0)

    def _advance(self, lane: str, sent: int) -> None:
        if lane == names.NOTIFY_LANE:
            self._s.notified = sent
        else:
            self._s.audit_sent[lane] = sent

    def _in_rounds(self) -> list[str]:
        lanes = [*self._s.input.audit_destinations, names.NOTIFY_LANE]
        return [lane for lane in lanes if lane not in self._s.lagging]

    def _behind_in_rounds(self) -> list[str]:
        return [lane for lane in self._in_rounds() if self._cursor(lane) < len(self._s.outbox)]

    def _delivered(self) -> bool:
        events = len(self._s.outbox)
        observed = self._s.observed == events or not self._flow.hooks
        return (
            self._s.notified == events
            and observed
            and all(
                self._s.audit_sent.get(d, 0) == events for d in self._s.input.audit_destinations
            )
        )


def requester_actor(input: AccessRequestInput) -> Actor:
    return Actor(
        email=input.requester.email,
        via=input.via,
        slack_user_id=input.requester.slack_user_id,
        name=input.requester.name,
    )


def target_status(target: Target) -> TargetStatus:
    return TargetStatus(
        name=target.name, label=target.display, settings=policy.target_settings(target)
    )


def assignment_spec(input: AccessRequestInput, target: Target | None = None) -> AssignmentSpec:
    target = target or input.target
    settings = policy.target_settings(target)
    spec = AssignmentSpec(
        strategy=input.flow.strategy,
        principal_email=input.requester.email,
        account_id=settings.get("account_id"),
        permission_set=settings.get("permission_set"),
        group=settings.get("group"),
    )
    if not STRATEGIES[spec.strategy].aws:  # the target and the flow's settings, as they are
        spec.target, spec.settings = target.name, settings
        spec.options = strategy_options(input.flow)
    return spec


def ui_details(view: RequestView) -> str:
    lines = [f"**{view.state.value}** — {view.summary}"]
    if view.approvals:
        who = ", ".join(a.actor.display for a in view.approvals)
        lines.append(f"Approvals: {len(view.approvals)} of {view.approvals_required} ({who})")
    elif view.state is RequestState.PENDING:
        lines.append(
            f"Waiting for {view.approvals_required} approval(s) from: "
            + (", ".join(view.approvers) or "an admin")
        )
    for step in view.approval_steps:
        met = f"met by {', '.join(step.approved_by)}" if step.satisfied else "open"
        lines.append(f"Step {step.name}: {len(step.approved_by)} of {step.count}, {met}")
    for target in view.targets:
        why = f": {target.error}" if target.error else ""
        lines.append(f"Target {target.label}: {target.state}{why}")
    if view.expires_at and not view.state.finished:
        lines.append(f"Access until {view.expires_at:%Y-%m-%d %H:%M:%S} UTC")
    if view.end_reason:
        lines.append(f"Ended: {view.end_reason}")
    if view.break_glass:
        lines.append("**BREAK-GLASS**: the requester approved their own request; review it")
    lines.extend(f"Note: {note}" for note in view.notes)
    return "\n".join(lines)
