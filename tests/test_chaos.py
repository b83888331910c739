"""The chaos run (tests/chaos.py), short: real worker processes SIGKILLed at random, a Temporal
restart, AWS failing on purpose and then down for a while; every promise about access checked."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from keycard.models import RequestState, RequestView, TargetStatus
from tests.chaos import (
    STANDING,
    Planned,
    active_window,
    appearances,
    gaps_while_active,
    late_by,
    lease_groups,
    run_chaos,
    sampled_groups,
)

pytestmark = pytest.mark.e2e


async def test_a_short_chaos_run_keeps_every_promise(tmp_path):
    report = await run_chaos(seed=11, requests=16, kills=5, span=40, root=tmp_path, settle=150)
    report.print()
    assert not report.problems, "\n".join(report.problems)


def test_the_checks_see_a_moment_without_access_and_count_lease_groups():
    """The chaos checks must be able to fail: a sample without the assignment inside an ACTIVE
    window is a gap, and two overlapping leases are one group but two apart are two."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = [t0 + timedelta(seconds=s) for s in range(12)]
    held = frozenset({"alice@example.com", STANDING})
    only_standing = frozenset({STANDING})
    samples = [(at[0], only_standing), (at[1], held), (at[2], held), (at[3], only_standing)]
    samples += [(at[4], held), (at[9], only_standing)]
    assert appearances(samples, "alice@example.com") == 2
    assert appearances(samples, STANDING) == 1
    assert lease_groups([(at[1], at[5]), (at[4], at[8])]) == 1
    assert lease_groups([(at[1], at[2]), (at[4], at[8])]) == 2

    item = Planned(
        index=0, person="alice@example.com", duration="20s", start_after=0, action="approve"
    )
    item.request_id = "req-chaos-000"
    item.final = RequestView.model_construct(
        state=RequestState.ENDED, granted_at=at[1], expires_at=at[6], ended_at=at[7]
    )
    [gap] = gaps_while_active([item], samples)
    assert "alice@example.com lacked the assignment" in gap and "req-chaos-000" in gap
    item.final = RequestView.model_construct(
        state=RequestState.ENDED, granted_at=at[4], expires_at=at[8], ended_at=at[9]
    )
    assert gaps_while_active([item], samples) == []


def test_lateness_ends_where_the_access_went_or_a_new_lease_took_it_over():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = [t0 + timedelta(seconds=s) for s in range(40)]
    alice = "alice@example.com"
    held, gone = frozenset({alice}), frozenset()
    samples = [(at[s], held) for s in range(0, 30)] + [(at[31], gone)]
    # Removed a second after the only group ended.
    assert late_by([(at[1], at[30])], samples, alice) == [(at[30], 1.0)]
    # The first group ended at 10 s; a second began at 18 s while the access was still there.
    assert late_by([(at[1], at[10]), (at[18], at[30])], samples, alice) == [
        (at[10], 8.0),
        (at[30], 1.0),
    ]


def test_the_checks_hold_each_target_of_a_request_naming_several_to_its_own_grant():
    """A request naming both targets: each target's window starts at its own grant, a target
    never granted has none, and a sample without the access in dr is a gap there only."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    at = [t0 + timedelta(seconds=s) for s in range(12)]
    alice = "alice@example.com"
    item = Planned(
        index=0, person=alice, duration="20s", start_after=0, action="approve",
        targets=("prod", "dr"),
    )  # fmt: skip
    item.request_id = "req-chaos-001"
    item.final = RequestView.model_construct(
        state=RequestState.ENDED,
        granted_at=at[1],
        expires_at=at[6],
        ended_at=at[7],
        targets=[
            TargetStatus(name="prod", label="prod", state="ended", granted_at=at[1]),
            TargetStatus(name="dr", label="dr", state="ended", granted_at=at[2]),
        ],
    )
    assert active_window(item, "prod") == (at[1], at[6])
    assert active_window(item, "dr") == (at[2], at[6])
    held, gone = frozenset({alice}), frozenset()
    dr = [(at[2], held), (at[3], gone), (at[4], held), (at[8], gone)]
    [gap] = gaps_while_active([item], dr, "dr")
    assert "lacked the assignment in dr at" in gap
    single = Planned(index=1, person=alice, duration="20s", start_after=0, action="approve")
    single.final = item.final
    assert active_window(single, "dr") is None  # it never named dr
    item.final.targets[1] = TargetStatus(name="dr", label="dr", state="failed", error="no")
    assert active_window(item, "dr") is None and gaps_while_active([item], dr, "dr") == []


def test_a_lease_group_no_sample_fell_in_need_not_be_seen_but_one_sampled_must():
    """Granted and revoked between two samples: the samples cannot show it. The check then asks
    only for the groups a sample fell inside, and still refuses more appearances than groups."""
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    ms = [t0 + timedelta(milliseconds=100 * n) for n in range(40)]
    samples = [(ms[0], frozenset()), (ms[5], frozenset()), (ms[10], frozenset())]
    brief = (ms[1], ms[3])  # between the samples at 0 and 500 ms
    long = (ms[6], ms[20])  # the sample at 1000 ms falls inside
    assert sampled_groups([brief], samples) == 0
    assert sampled_groups([brief, long], samples) == 1
    assert lease_groups([brief, long]) == 2
