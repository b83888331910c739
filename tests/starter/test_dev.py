"""`keycard dev` as a newcomer runs it: start, ask, approve, see the grant, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from starter.dev import check_ports_free

ROOT = Path(__file__).resolve().parents[2]
KEYCARD = str(Path(sys.executable).parent / "keycard")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_taken_port_is_refused_with_what_to_do():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"port {port} is already in use.*--port"):
            check_ports_free({"--port": port})


def wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text(errors="replace") if path.exists() else ""
        if text in content:
            return content
        if process.poll() is not None:
            raise AssertionError(f"keycard dev exited {process.returncode}:\n{content}")
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never appeared:\n{path.read_text(errors='replace')}")


@dataclass
class DevRun:
    """A `keycard dev` started as after `make dev` (no KEYCARD_CONFIG, demo AWS, free ports)."""

    process: subprocess.Popen
    env: dict[str, str]
    cwd: Path
    log: Path
    banner: str
    ui_port: int


@contextmanager
def keycard_dev(cwd: Path) -> Iterator[DevRun]:
    """Run `keycard dev` in `cwd` until its worker has started; Ctrl-C (SIGINT) it afterwards."""
    port, ui_port, api_port = free_port(), free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "SLACK_", "KEYCARD_", "TEMPORAL_"))
    }
    env.update(TEMPORAL_ADDRESS=f"127.0.0.1:{port}", KEYCARD_DEMO_AWS="1")
    log = cwd / "dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [KEYCARD, "dev", "--config", str(ROOT / "keycard.example.yaml"), "--port", str(port),
             "--ui-port", str(ui_port), "--api-port", str(api_port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
        )  # fmt: skip
    try:
        banner = wait_for_line(log, "worker.started", process)
        yield DevRun(process, env, cwd, log, banner, ui_port)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)


def cli(env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [KEYCARD, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.e2e
def test_keycard_dev_session(tmp_path: Path):
    state = tmp_path / ".keycard"
    with keycard_dev(tmp_path) as dev:
        env, banner = dev.env, dev.banner
        assert f"http://localhost:{dev.ui_port}" in banner
        assert "keycard request prod-power-user --target prod --duration 1m" in banner

        asked = cli(env, tmp_path, "request", "prod-power-user", "--target", "prod", "--duration", "1m",
                    "--reason", "incident 4312", "--as", "alice@example.com")  # fmt: skip
        assert asked.returncode == 0, asked.stderr
        request_id = asked.stdout.split()[0]
        assert request_id.startswith("req-") and "PENDING" in asked.stdout

        own = cli(env, tmp_path, "approve", request_id, "--as", "alice@example.com")
        assert own.returncode == 1 and "cannot approve their own request" in own.stderr
        approved = cli(env, tmp_path, "approve", request_id, "--as", "bob@example.com")
        assert approved.returncode == 0, approved.stderr

        deadline = time.monotonic() + 30
        while "ACTIVE" not in (status := cli(env, tmp_path, "status", request_id)).stdout:
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.3)
        assert "expires:" in status.stdout
        held = cli(env, tmp_path, "demo-access", "alice@example.com")
        assert "permission set PowerUserAccess in account 111111111111" in held.stdout
        listed = cli(env, tmp_path, "list")
        assert request_id in listed.stdout and "ACTIVE" in listed.stdout

        # doctor, from the same directory and with no settings of its own, checks this dev
        bare = {k: v for k, v in env.items() if k not in ("TEMPORAL_ADDRESS", "KEYCARD_DEMO_AWS")}
        doctor = cli(bare, tmp_path, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert re.search(r"^OK\s+keycard dev\s+running here", doctor.stdout, re.MULTILINE)
        assert re.search(r"^OK\s+aws credentials", doctor.stdout, re.MULTILINE), doctor.stdout
        assert re.search(r"^OK\s+workers\s+1 worker", doctor.stdout, re.MULTILINE)

        # Access ended early: the assignment is gone, and so are the sessions it allowed
        # (end_sessions); the drift sweep runs here too, on its schedule or on demand.
        revoked = cli(env, tmp_path, "revoke", request_id, "--as", "alice@example.com")
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 30
        while "ENDED" not in (status := cli(env, tmp_path, "status", request_id)).stdout:
            assert time.monotonic() < deadline, status.stdout + status.stderr
            time.sleep(0.3)
        held = cli(env, tmp_path, "demo-access", "alice@example.com")
        assert "alice@example.com holds no access in the demo AWS." in held.stdout
        assert re.search(
            r"sessions of PowerUserAccess in account 111111111111 issued before "
            r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC are denied \(end_sessions\)",
            held.stdout,
        ), held.stdout
        drift = cli(env, tmp_path, "drift", "--now")
        assert drift.returncode == 0, drift.stdout + drift.stderr
        assert "Drift sweep: sweeps every 15m" in drift.stdout
        assert "Last sweep finished" in drift.stdout and "ERROR" not in drift.stdout
    output = dev.log.read_text(errors="replace")
    assert dev.process.returncode == 0, output
    assert "Keycard dev stopped" in output
    assert (state / "temporal.sqlite").exists()  # requests survive a restart


def test_what_keycard_dev_keeps_is_readable_by_this_user_only(tmp_path):
    import stat

    from starter.dev import keep_private

    state = tmp_path / ".keycard"
    state.mkdir(mode=0o755)
    (state / "audit.jsonl").write_text("{}\n")
    (state / "audit.jsonl").chmod(0o644)
    previous = os.umask(0o022)
    try:
        keep_private(state)
        (state / "temporal.sqlite").write_bytes(b"")  # as a child process would, under our umask
    finally:
        os.umask(previous)

    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for name in ("audit.jsonl", "temporal.sqlite"):
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600, name
