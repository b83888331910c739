"""After the access (PATCH_V14): what was done with it, and the review of a break-glass use.

Once a request's grants have ended and CloudTrail has had the flow's `activity.delay` to deliver
their events, one `aws.activity` call per grant reads them and the request records
`access.activity` (flows with `activity`). A break-glass request then waits for an approver's
review (`break_glass.reviewed`) until the flow's review window closes
(`break_glass.review_overdue`). The request stays open, in its final state, until then; nothing
here touches access, which is already gone."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError

from workflows.request import calls
from workflows.request.granting import Granting
from workflows.waiting import wait_until

with workflow.unsafe.imports_passed_through():
    from keycard import temporal as names
    from keycard.durations import format_duration
    from keycard.failures import root_message
    from keycard.models import (
        AccessActivity,
        ActivityQuery,
        RequestState,
        ResolvedAssignment,
        TargetStatus,
    )


class Afterwards(Granting):
    def _reads_activity(self) -> bool:
        """A flow with `activity` whose request held access (only such requests ask the patch,
        and no request before it has the setting)."""
        return (
            self._flow.activity is not None
            and self._state is RequestState.ENDED
            and bool(self._ended_grants())
            and workflow.patched(names.PATCH_V14)
        )

    async def _read_activity(self) -> None:
        settings = self._flow.activity
        ended_at = self._s.view.ended_at
        assert settings is not None and ended_at is not None
        wait = ended_at + settings.delay - workflow.now()

        def cancelled() -> bool:
            return self._s.waits_cancelled is not None

        with contextlib.suppress(TimeoutError):  # the delay is up
            await wait_until(cancelled, timeout=max(wait, timedelta(0)))
        grants = self._ended_grants()
        queries = [
            ActivityQuery(
                target=name, assignment=assignment, settings=settings, since=since, until=ended_at
            )
            for name, assignment, since, _ in grants
        ]
        summaries = await asyncio.gather(*(self._read_one(query) for query in queries))
        for (_, _, _, status), summary in zip(grants, summaries, strict=True):
            self._s.view.activity.append(summary)
            detail = summary.model_dump(mode="json", exclude={"target"})
            self._emit("access.activity", None, on=status, summary=summary.line, **detail)

    def _awaits_review(self) -> bool:
        """A break-glass request, which waits for its review if it has none yet (only those ask
        the patch)."""
        return self._s.view.break_glass and workflow.patched(names.PATCH_V14)

    async def _await_review(self) -> None:
        view = self._s.view
        within = self._flow.review_within
        due = (view.decided_at or workflow.now()) + within
        if view.review is None:
            view.review_due = due
            self._publish()

        def reviewed_or_cancelled() -> bool:
            return view.review is not None or self._s.waits_cancelled is not None

        with contextlib.suppress(TimeoutError):  # the review window closed
            await wait_until(reviewed_or_cancelled, timeout=max(due - workflow.now(), timedelta(0)))
        if view.review is None:
            why = self._s.waits_cancelled or f"not reviewed within {format_duration(within)}"
            self._emit("break_glass.review_overdue", None, due=due.isoformat(), reason=why)

    async def _read_one(self, query: ActivityQuery) -> AccessActivity:
        if self._s.waits_cancelled is not None:
            return AccessActivity.not_read(query, self._s.waits_cancelled)
        try:
            return await calls.read_activity(query)
        except ActivityError as err:
            return AccessActivity.not_read(query, root_message(err))

    def _ended_grants(
        self,
    ) -> list[tuple[str, ResolvedAssignment, datetime, TargetStatus | None]]:
        """(target, assignment, granted at, its status) of every grant the request held."""
        view = self._s.view
        if self._multi:
            return [
                (t.name, self._s.assignments[t.name], t.granted_at, t)
                for t in view.targets
                if t.granted_at is not None and t.name in self._s.assignments
            ]
        if self._s.assignment is None or view.granted_at is None:
            return []
        return [(view.target, self._s.assignment, view.granted_at, None)]
