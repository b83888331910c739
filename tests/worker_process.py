"""A real `keycard worker` process whose cloud is a directory, for tests that kill workers.

Run as `python -m tests.worker_process DIR`. It serves the real workflows through the same code
path as `keycard worker` (starter.run.health.serve_worker: signals, draining, health endpoint, JSON
logs), with the strategy activities replaced by `FileCloud`, which keeps its state in DIR so that
it survives the process and several workers share it:

    DIR/grant-calls.log    one line per grant attempt: "<pid> <attempt>"
    DIR/grant-applied.log  one line each time an assignment was actually created: "<pid> <key>"
    DIR/assigned/<key>     the assignments that exist now
    DIR/release            created by the test; until then a grant blocks after applying

Temporal settings come from TEMPORAL_* as in production; KEYCARD_TEST_HEARTBEAT (seconds)
shortens the grant and lease heartbeat timeouts so a killed worker's attempt is retried within the test.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.audit import AuditActivities, StdoutSink
from activities.leases import LeaseActivities
from activities.notify import ConsoleNotifier
from keycard import session_policy
from keycard import temporal as names
from keycard.config import parse_config
from keycard.logging import configure_logging
from keycard.models import (
    ResolvedAssignment,
    ResolveInput,
    SessionPolicyResult,
    SessionPolicyWrite,
)
from keycard.settings import Settings
from starter.client import connect_temporal
from starter.run.health import serve_worker
from tests.fakes import KNOWN_USERS
from tests.harness import CONFIG
from worker import run_worker

POLL = 0.05
SESSION = timedelta(hours=1)  # the fake permission set's session duration


class FileCloud:
    """The aws_sso strategy's four activities over a shared directory."""

    def __init__(self, root: Path):
        self.root = root
        (root / "assigned").mkdir(parents=True, exist_ok=True)

    def _append(self, name: str, line: str) -> None:
        with (self.root / name).open("a") as out:
            out.write(line + "\n")
            out.flush()
            os.fsync(out.fileno())

    @staticmethod
    def key(input: ResolvedAssignment) -> str:
        spec = input.spec
        text = f"{spec.account_id}:{spec.permission_set}:{spec.principal_email}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def activities(self) -> list:
        @activity.defn(name="aws_sso.resolve")
        async def resolve(input: ResolveInput) -> ResolvedAssignment:
            if input.spec.principal_email not in KNOWN_USERS:
                raise ApplicationError("no such user", type="NoSuchUser", non_retryable=True)
            return ResolvedAssignment(
                spec=input.spec,
                principal_id="u-" + input.spec.principal_email.split("@")[0],
                permission_set_arn="arn:aws:sso:::permissionSet/ssoins-1/ps-1",
            )

        @activity.defn(name="aws_sso.exists")
        async def exists(input: ResolvedAssignment) -> bool:
            return (self.root / "assigned" / self.key(input)).exists()

        @activity.defn(name="aws_sso.grant")
        async def grant(input: ResolvedAssignment) -> None:
            # Like the real strategy: look before acting, so a retried attempt changes nothing.
            self._append("grant-calls.log", f"{os.getpid()} {activity.info().attempt}")
            marker = self.root / "assigned" / self.key(input)
            if not marker.exists():
                marker.touch()
                self._append("grant-applied.log", f"{os.getpid()} {self.key(input)}")
            # A slow cloud: the call stays in flight until the test lets it return.
            while not (self.root / "release").exists():
                activity.heartbeat()
                await asyncio.sleep(POLL)

        @activity.defn(name="aws_sso.revoke")
        async def revoke(input: ResolvedAssignment) -> None:
            self._append("revoke-calls.log", f"{os.getpid()} {activity.info().attempt}")
            (self.root / "assigned" / self.key(input)).unlink(missing_ok=True)

        return [resolve, exists, grant, revoke]

    def session_activities(self) -> list:
        """aws_sso.end_sessions and aws_sso.prune_sessions over DIR/policies/<hash>.json."""
        policies = self.root / "policies"
        policies.mkdir(exist_ok=True)

        def path(input: SessionPolicyWrite) -> Path:
            return policies / (hashlib.sha256(input.permission_set_arn.encode()).hexdigest()[:16])

        def result(policy: str | None) -> SessionPolicyResult:
            denied = session_policy.entries(policy)
            return SessionPolicyResult(
                session_duration=SESSION,
                denied={f"{user}:{account}": at for (user, account), at in denied.items()},
            )

        @activity.defn(name=names.END_SESSIONS)
        async def end_sessions(input: SessionPolicyWrite) -> SessionPolicyResult:
            file = path(input)
            policy = session_policy.merge(
                file.read_text() if file.exists() else None,
                {(r.user_id, r.account_id): r.denied_before for r in input.revocations},
                now=datetime.now(UTC),
                max_session=SESSION,
            )
            file.write_text(policy)
            return result(policy)

        @activity.defn(name=names.PRUNE_SESSIONS)
        async def prune_sessions(input: SessionPolicyWrite) -> SessionPolicyResult:
            file = path(input)
            policy = session_policy.prune(
                file.read_text() if file.exists() else None,
                now=datetime.now(UTC),
                max_session=SESSION,
            )
            if policy is None:
                file.unlink(missing_ok=True)
            else:
                file.write_text(policy)
            return result(policy)

        return [end_sessions, prune_sessions]


async def main(root: Path) -> None:
    heartbeat = os.environ.get("KEYCARD_TEST_HEARTBEAT")
    if heartbeat:
        # Workflows read these when they schedule the grant and lease calls, so a dead worker's
        # attempts time out in seconds instead of production's 30s.
        names.GRANT_HEARTBEAT = timedelta(seconds=float(heartbeat))
        names.LEASE_HEARTBEAT = timedelta(seconds=float(heartbeat))
    settings = Settings.from_env()
    client = await connect_temporal()
    leases = LeaseActivities(client, settings.task_queue)
    activities = [
        *FileCloud(root).activities(),
        *FileCloud(root).session_activities(),
        leases.take_lease,
        leases.acquire_lease,
        leases.release_lease,
        leases.request_end_sessions,
        AuditActivities([StdoutSink()]).deliver,
        ConsoleNotifier().send,
    ]
    config = CONFIG.replace(
        "111111111111", os.environ.get("KEYCARD_TEST_ACCOUNT_ID", "111111111111")
    )
    await serve_worker(client, parse_config(config), settings, run_worker, activities=activities)


if __name__ == "__main__":
    configure_logging()
    asyncio.run(main(Path(sys.argv[1])))
    # As main.main (starter.cli.main) does for `keycard worker`: skip the interpreter teardown that Temporal's
    # native threads can abort (temporalio/sdk-python#300), so a clean drain exits 0.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
