"""`keycard dev` as a newcomer runs it: start, ask, approve, see the grant, Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import shutil
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

from starter.run.dev import check_ports_free

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


# --- the README's console blocks, run as written on a fresh `keycard dev` ------------------------

README_ID = "req-3k3frn88hz"  # the request id the README shows
README_TIME = re.compile(r"2026-11-21 \d\d:\d\d:\d\d UTC")  # the README's times
README_COMMIT = "commit f86f312"  # the commit the README's policy lines name


@dataclass
class Step:
    command: str  # as the README writes it, after `$ `
    expected: list[str]  # the output lines it shows
    after_a_wait: bool  # a `# ... later` line came before it


def readme_console_steps() -> list[Step]:
    """The `$ keycard ...` commands of the README's console blocks about `keycard dev`, with the
    output it shows for each."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```console\n(.*?)```", text, re.DOTALL)
    steps: list[Step] = []
    waiting = False
    for block in blocks:
        if not re.search(r"^\$ (keycard (request|drift)|grep|jq) ", block, re.MULTILINE):
            continue  # not a session with `keycard dev` (the API's curl demo has its own test)
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:], [], waiting))
                waiting = False
            elif line.startswith("# ") and "later" in line:
                waiting = True
            elif steps:
                steps[-1].expected.append(line)
    return steps


def shape(line: str) -> str:
    """A README output line as a pattern: any request id, any timestamp, any commit (a request's
    policy names the checkout's), the rest as written."""
    return r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC".join(
        re.escape(part)
        .replace(re.escape(README_ID), r"req-[a-z0-9]+")
        .replace(re.escape(README_COMMIT), r"commit [0-9a-f]{7}")
        for part in README_TIME.split(line)
    )


def run_step(step: Step, request_id: str | None, env: dict, cwd: Path) -> list[str]:
    command = step.command.replace(README_ID, request_id or README_ID)
    ran = subprocess.run(
        ["bash", "-c", command + " 2>&1"], env=env, cwd=cwd, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    return ran.stdout.rstrip("\n").split("\n") if ran.stdout.strip() else []


ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
GIT_COMMIT = re.compile(r"^[0-9a-f]{40}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def json_shape(value, request_id: str):
    """A JSON value with what differs from run to run (times, ids, durations measured) made
    generic; everything else, keys and values, as it is."""
    if isinstance(value, dict):
        return {k: json_shape(v, request_id) for k, v in value.items()}
    if isinstance(value, list):
        return [json_shape(v, request_id) for v in value]
    if isinstance(value, float):
        return "<number>"
    if isinstance(value, str):
        value = value.replace(request_id, "<request>")
        value = ISO_TIME.sub("<time>", UUID.sub("<uuid>", value))
        value = GIT_COMMIT.sub("<commit>", value)  # the checkout's: a request's policy names it
        value = DIGEST.sub("<digest>", value)  # the audit chain's hashes, over times and ids
        return re.sub(r"/ssoins-\w+/ps-\w+$", "/<instance>/<ps>", value)
    return value


def line_matches(want: str, have: str, request_id: str) -> bool:
    if want.startswith("{"):
        try:
            got = json.loads(have)
        except ValueError:
            return False
        return json_shape(json.loads(want), README_ID) == json_shape(got, request_id)
    return re.fullmatch(shape(want), have) is not None


def mismatch(expected: list[str], got: list[str], request_id: str) -> str | None:
    expected = list(expected)
    while expected and not expected[-1].strip():
        expected.pop()
    if len(expected) != len(got) or not all(
        line_matches(want, have, request_id) for want, have in zip(expected, got, strict=True)
    ):
        return "expected:\n" + "\n".join(expected) + "\ngot:\n" + "\n".join(got)
    return None


@pytest.mark.e2e
def test_the_readme_console_blocks_work_as_written(tmp_path: Path):
    """A newcomer's session: `keycard dev` in one terminal (any ports), the README's commands in
    another from the same directory, with no settings of their own; each prints what the README
    shows, request ids and times aside."""
    assert shutil.which("jq"), "the README's audit example uses jq (apt-get install jq)"
    steps = readme_console_steps()
    assert [s.command.split()[1] for s in steps][:3] == ["request", "approve", "approve"]
    assert [s.command.split()[0] for s in steps][-2:] == ["grep", "jq"]  # the audit example
    with keycard_dev(tmp_path) as dev:
        assert f"http://localhost:{dev.ui_port}" in dev.banner
        assert steps[0].command in dev.banner.replace("\\\n      ", "")
        # A second terminal: the virtualenv on PATH, nothing else (the address is in dev.json).
        shell = {
            k: v for k, v in dev.env.items() if k not in ("TEMPORAL_ADDRESS", "KEYCARD_DEMO_AWS")
        }
        shell["PATH"] = f"{Path(KEYCARD).parent}:{shell['PATH']}"
        request_id = None
        for step in steps:
            words = step.command.split()
            read_only = words[0] in ("grep", "jq") or words[1] in ("status", "demo-access", "drift")
            # Time passes in the README only where it says so; a read may need a moment (the
            # grant is being made) and is asked again, a decision never is.
            deadline = time.monotonic() + (120 if step.after_a_wait else 20)
            while True:
                got = run_step(step, request_id, shell, tmp_path)
                problem = mismatch(step.expected, got, request_id or README_ID)
                if problem is None or not read_only or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert problem is None, f"$ {step.command}\n{problem}\n{dev.log.read_text()[-3000:]}"
            if request_id is None:
                request_id = got[0].split()[0]

        # doctor, from the same directory and with no settings of its own, checks this dev
        doctor = cli(shell, tmp_path, "doctor")
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert re.search(r"^OK\s+keycard dev\s+running here", doctor.stdout, re.MULTILINE)
        assert re.search(r"^OK\s+aws credentials", doctor.stdout, re.MULTILINE), doctor.stdout
        assert re.search(r"^OK\s+workers\s+1 worker", doctor.stdout, re.MULTILINE)
    output = dev.log.read_text(errors="replace")
    assert dev.process.returncode == 0, output
    assert "Keycard dev stopped" in output and "demo-aws.jsonl" in output
    assert (tmp_path / ".keycard" / "temporal.sqlite").exists()  # requests survive a restart


def test_what_keycard_dev_keeps_is_readable_by_this_user_only(tmp_path):
    import stat

    from starter.run.dev import keep_private

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
