"""The audit trail as a chain that shows tampering.

Each event a request records carries the hash of the request's previous event (`prev_hash`) and
its own (`hash`: sha256 of the event's canonical JSON, every field but `hash`), so an event
altered, removed or moved is seen from the events around it: the altered one no longer matches its
hash, and the one after a removed or moved event names a predecessor that is not before it.
`keycard audit verify FILE` checks a stored trail this way, and against Temporal's history, which
also catches events removed from the end.

Events made outside the request (a grant audits the end of a lease it had to drop; the drift
sweep, what it found and had removed) carry no chain, and requests started before keycard-v13 have
none either; verify finds them in the history of the workflow that wrote them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from keycard.provenance import canonical_json, digest_of

SEQUENCE = re.compile(r"/(\d+)$")


def event_hash(event: Mapping[str, Any]) -> str:
    """The hash an event carries: of its canonical JSON, every field but `hash` itself."""
    return digest_of({key: value for key, value in event.items() if key != "hash"})


@dataclass
class Finding:
    """The first thing wrong with one request's events in a trail."""

    request_id: str
    event_id: str
    problem: str  # "altered", "missing", "reordered", "unchained", "not in history"
    detail: str

    def __str__(self) -> str:
        return f"{self.request_id}: {self.problem}: {self.event_id}: {self.detail}"


@dataclass
class Verdict:
    requests: int = 0
    events: int = 0
    chained: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings


def by_request(events: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """The trail's events per request, each request's in the trail's order."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        grouped.setdefault(str(event.get("request_id")), []).append(event)
    return grouped


def drop_redelivered(
    events: Iterable[Mapping[str, Any]],
) -> tuple[list[Mapping[str, Any]], int, list[Finding]]:
    """The trail with each event once: a destination may be handed an event again (delivery is
    at least once; ids are stable for this), so a later copy identical to the first is set aside
    and counted; one that differs is a finding (`altered`). Returns the events, the copies set
    aside, and the findings."""
    first: dict[str, Mapping[str, Any]] = {}
    kept, copies, findings = [], 0, []
    for event in events:
        event_id = str(event.get("id"))
        earlier = first.get(event_id)
        if earlier is None:
            first[event_id] = event
            kept.append(event)
        elif canonical_json(dict(earlier)) == canonical_json(dict(event)):
            copies += 1
        else:
            findings.append(
                Finding(
                    str(event.get("request_id")),
                    event_id,
                    "altered",
                    "the trail has two copies of it that differ",
                )
            )
    return kept, copies, findings


def verify_chain(events: Iterable[Mapping[str, Any]]) -> Verdict:
    """Check each request's chained events in the trail's order; one finding per request: the
    first event altered, missing before it, or out of its place."""
    verdict = Verdict()
    for request_id, own in by_request(events).items():
        verdict.requests += 1
        verdict.events += len(own)
        chained = [e for e in own if e.get("hash")]
        verdict.chained += len(chained)
        finding = _first_break(request_id, chained)
        if finding is not None:
            verdict.findings.append(finding)
    return verdict


def _first_break(request_id: str, chained: list[Mapping[str, Any]]) -> Finding | None:
    hashes = {e["hash"]: n for n, e in enumerate(chained)}
    previous: Mapping[str, Any] | None = None
    for place, event in enumerate(chained):
        event_id = str(event.get("id"))
        if event_hash(event) != event["hash"]:
            return Finding(request_id, event_id, "altered", "its content does not match its hash")
        expected = previous["hash"] if previous is not None else None
        named = event.get("prev_hash")
        if previous is None and named is not None and _sequence(event) == 1:
            return Finding(request_id, event_id, "altered", "the first event names a predecessor")
        if previous is not None and named != expected:
            later = hashes.get(named) if named is not None else None
            if later is not None and later > place:
                moved = str(chained[later].get("id"))
                return Finding(
                    request_id, event_id, "reordered", f"it follows {moved}, which comes after it"
                )
            return _missing_before(request_id, previous, event)
        previous = event
    return None


def compare_with_history(
    trail: Iterable[Mapping[str, Any]],
    history: Mapping[str, list[Mapping[str, Any]]],
    elsewhere: Mapping[str, list[Mapping[str, Any]]] | None = None,
) -> list[Finding]:
    """Each request's events in the trail against those its Temporal history recorded (`history`,
    by request id, in order): the first one missing, altered or out of order, per request.
    `elsewhere`: events made for a request (or a drift sweep) that another workflow wrote, a grant
    (`access.ended` for a lease it dropped, `drift.removed`); their order among the request's own
    is the order they happened to be delivered in, so they are checked for being there and
    unaltered, not for their place.

    A trail is a window (an export's --since and --until, or a sink file up to now): history's
    events before a request's first one in the trail, or later than the trail's last event of any
    request, are outside it; every other one must be there."""
    trail = list(trail)
    elsewhere = elsewhere or {}
    end = max((event_time(e) for e in trail), default=datetime.min.replace(tzinfo=UTC))
    findings = []
    for request_id, own in by_request(trail).items():
        recorded, written_elsewhere = history.get(request_id), elsewhere.get(request_id, [])
        if recorded is None and not written_elsewhere:
            first = str(own[0].get("id"))
            findings.append(
                Finding(request_id, first, "not in history", "Temporal has no such request")
            )
            continue
        finding = _against(request_id, own, recorded or [], written_elsewhere, end)
        if finding is not None:
            findings.append(finding)
    return findings


def _against(
    request_id: str,
    own: list[Mapping[str, Any]],
    recorded: list[Mapping[str, Any]],
    elsewhere: list[Mapping[str, Any]],
    end: datetime,
) -> Finding | None:
    kept = {str(e.get("id")): e for e in [*recorded, *elsewhere]}
    ids = [str(e.get("id")) for e in own]
    for event in own:
        event_id = str(event.get("id"))
        truth = kept.get(event_id)
        if truth is None:
            return Finding(request_id, event_id, "not in history", "history has no such event")
        if canonical_json(dict(truth)) != canonical_json(dict(event)):
            return Finding(request_id, event_id, "altered", "it differs from the history's")
    in_trail = set(ids)
    in_history = {str(e.get("id")) for e in recorded}
    in_order = [str(e.get("id")) for e in recorded if str(e.get("id")) in in_trail]
    mine = [event_id for event_id in ids if event_id in in_history]
    for event_id, theirs in zip(mine, in_order, strict=True):
        if event_id != theirs:
            return Finding(request_id, event_id, "reordered", f"history has {theirs} in its place")
    later: list[Mapping[str, Any]] = []
    if mine:
        first = next(n for n, e in enumerate(recorded) if str(e.get("id")) == mine[0])
        later = recorded[first:]
    since = event_time(own[0])
    later += [e for e in elsewhere if event_time(e) >= since]
    for event in later:
        if str(event.get("id")) not in in_trail and event_time(event) <= end:
            return Finding(
                request_id, str(event.get("id")), "missing", "history has it; the trail does not"
            )
    return None


def event_time(event: Mapping[str, Any]) -> datetime:
    """An event's time (UTC if it names no zone; the earliest time if it has none)."""
    try:
        moment = datetime.fromisoformat(str(event.get("time")))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sequence(event: Mapping[str, Any]) -> int | None:
    match = SEQUENCE.search(str(event.get("id", "")))
    return int(match.group(1)) if match else None


def _missing_before(
    request_id: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> Finding:
    """The chain breaks between `before` and `after`: name the first event missing there."""
    first, last = _sequence(before), _sequence(after)
    if first is not None and last is not None and last > first + 1:
        missing = f"{request_id}/{first + 1}"
        more = f" (and {last - first - 2} more)" if last - first > 2 else ""
        return Finding(
            request_id,
            missing,
            "missing",
            f"between {before.get('id')} and {after.get('id')}{more}",
        )
    return Finding(
        request_id,
        str(after.get("id")),
        "missing",
        f"the event chained before it is not in the trail (after {before.get('id')})",
    )
