"""The documentation says what the product does: every audit event type is documented, and the
README's audit example is a trail the product writes (every line a valid event, in its order)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import get_args

from keycard.audit_chain import verify_chain
from keycard.models import EventType, LifecycleEvent

ROOT = Path(__file__).resolve().parents[1]


def test_every_event_type_the_product_emits_is_documented():
    table = (ROOT / "docs" / "audit.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|", table, flags=re.MULTILINE))
    emitted = set(get_args(EventType))
    assert emitted - documented == set(), "emitted but missing from docs/audit.md's Types table"
    assert documented - emitted == set(), "documented in docs/audit.md but never emitted"


def test_the_readme_audit_example_is_a_trail_the_product_writes():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = [line for line in readme.splitlines() if line.startswith('{"schema_version":')]
    events = [LifecycleEvent.model_validate(json.loads(line)) for line in lines]

    # A refused self-approval, an approval, the grant, the expiry and the sessions' end: the
    # sequence tests/workflows/test_audit_trail.py holds the product to.
    assert [e.type for e in events] == [
        "request.created",
        "request.pending",
        "decision.refused",
        "request.approved",
        "access.granted",
        "access.ended",
        "access.sessions_ended",
    ]
    request_id = events[0].request_id
    assert [e.id for e in events] == [f"{request_id}/{n}" for n in range(1, len(events) + 1)]
    assert [e.time for e in events] == sorted(e.time for e in events)
    assert [e.state.value for e in events] == [
        "PENDING", "PENDING", "PENDING", "GRANTING", "ACTIVE", "ENDED", "ENDED",
    ]  # fmt: skip
    # A chain the product would write: each event names the one before it, and its own hash.
    assert verify_chain(json.loads(line) for line in lines).ok
    assert events[0].prev_hash is None and all(e.hash for e in events)
    assert events[-1].detail.keys() == {
        "permission_set_arn",
        "account_id",
        "denied_before",
        "seconds",
    }
