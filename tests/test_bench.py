"""The benchmarks still run: tiny sizes of bench.compare and bench.expiry, end to end (figures are
not checked, except that every grant was removed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_compare_runs_at_a_smoke_size():
    command = [sys.executable, "-m", "bench.compare", "--requests", "3", "--concurrency", "3"]
    done = subprocess.run(
        [*command, "--duration", "2"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("### uncontended: 3 lifecycles", "### contended: 3 lifecycles", "| ask p50 |"):
        assert line in done.stdout, done.stdout
    assert "AWS calls per lifecycle: Keycard" in done.stdout


def test_expiry_runs_at_a_smoke_size():
    command = [sys.executable, "-m", "bench.expiry", "--requests", "2", "--concurrency", "2"]
    done = subprocess.run(
        [*command, "--grant-seconds", "12", "--deadline", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| Keycard | 2/2 |" in done.stdout, done.stdout
    assert "| bare | 2/2 |" in done.stdout, done.stdout
