"""keycard/audit_chain.py on hand-made trails: redelivered copies, and events a grant wrote for a
request (found in the grant's history, not the request's)."""

from __future__ import annotations

from typing import Any

from keycard.audit_chain import compare_with_history, drop_redelivered, event_hash, verify_chain

REQUEST = "req-1"


def _chain(count: int) -> list[dict[str, Any]]:
    events, previous = [], None
    for n in range(1, count + 1):
        event: dict[str, Any] = {
            "id": f"{REQUEST}/{n}",
            "request_id": REQUEST,
            "type": "request.created" if n == 1 else "access.granted",
            "time": f"2026-12-04T10:00:0{n}+00:00",
            "prev_hash": previous,
        }
        event["hash"] = event_hash(event)
        previous = event["hash"]
        events.append(event)
    return events


def _dropped(second: int) -> dict[str, Any]:
    """The access.ended a grant writes for a terminated request's lease: unchained."""
    return {
        "id": f"{REQUEST}/lease-dropped",
        "request_id": REQUEST,
        "type": "access.ended",
        "time": f"2026-12-04T10:00:{second:02d}+00:00",
        "prev_hash": None,
        "hash": None,
    }


def test_a_redelivered_copy_is_set_aside_and_a_differing_copy_is_named():
    events = _chain(3)
    trail = [events[0], events[1], dict(events[1]), events[2]]
    kept, copies, findings = drop_redelivered(trail)
    assert (kept, copies, findings) == (events, 1, [])
    assert verify_chain(kept).ok
    # Without setting it aside, the copy would read as a break in the chain.
    assert not verify_chain(trail).ok

    forged = {**events[1], "type": "access.revoked"}
    kept, copies, findings = drop_redelivered([*events, forged])
    assert (kept, copies) == (events, 0)
    [finding] = findings
    assert (finding.event_id, finding.problem) == (f"{REQUEST}/2", "altered")
    assert "two copies" in finding.detail


def test_an_event_a_grant_wrote_is_found_in_the_grants_history():
    events, dropped = _chain(3), _dropped(30)
    trail = [*events, dropped]
    history = {REQUEST: events}

    [finding] = compare_with_history(trail, history)
    assert (finding.event_id, finding.problem) == (dropped["id"], "not in history")
    assert compare_with_history(trail, history, {REQUEST: [dropped]}) == []
    # Its place among the request's own is the order it happened to be delivered in.
    assert (
        compare_with_history([events[0], dropped, *events[1:]], history, {REQUEST: [dropped]}) == []
    )

    [finding] = compare_with_history(
        [*events, {**dropped, "detail": {"reason": "tidied"}}], history, {REQUEST: [dropped]}
    )
    assert (finding.event_id, finding.problem) == (dropped["id"], "altered")


def test_an_event_a_grant_wrote_and_the_trail_lacks_is_missing():
    events, dropped = _chain(3), _dropped(30)
    later = {
        **_chain(1)[0],
        "request_id": "req-2",
        "id": "req-2/1",
        "time": "2026-12-04T10:01:00+00:00",
    }
    history = {REQUEST: events, "req-2": [later]}
    [finding] = compare_with_history([*events, later], history, {REQUEST: [dropped]})
    assert (finding.event_id, finding.problem) == (dropped["id"], "missing")
    # A trail that ends before the grant wrote it is a window that does not reach it.
    assert compare_with_history(events, history, {REQUEST: [dropped]}) == []


def test_a_sweep_known_only_by_the_grants_that_wrote_its_removals_is_not_unknown():
    removed = {
        **_dropped(30),
        "id": "keycard-drift-sweep-1/1",
        "request_id": "keycard-drift-sweep-1",
    }
    assert compare_with_history([removed], {}, {"keycard-drift-sweep-1": [removed]}) == []
    [finding] = compare_with_history([removed], {})
    assert finding.detail == "Temporal has no such request"
