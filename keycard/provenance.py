"""Which policy decided a request: the digest of its flow as loaded, and the commit it came from.

A flow's digest is the sha256 of its canonical JSON (keys sorted, no spaces; secrets appear as
their `${VAR}` names, never their values), so it is the same across restarts and changes with any
edit to the flow. When keycard.yaml lives in a git work tree, the commit and the file's path in
the repository say where to read it; elsewhere (a mounted file in a container), the deployment
can say with KEYCARD_CONFIG_COMMIT. An auditor goes from a request to the pull request that made
its rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

COMMIT_ENV = "KEYCARD_CONFIG_COMMIT"
GIT_TIMEOUT = 5.0  # seconds; a slow or broken git leaves the commit unknown, never the load stuck


class ConfigSource(BaseModel):
    """Where a keycard.yaml came from: its commit, its path in the repository, and whether the
    file differs from that commit (an edit not yet committed)."""

    model_config = ConfigDict(frozen=True)

    commit: str | None = None
    path: str | None = None
    dirty: bool = False


class PolicyRef(BaseModel):
    """The policy a request was decided under: its flow's digest, and the file's source."""

    model_config = ConfigDict(frozen=True)

    digest: str = Field(description="sha256 of the flow's canonical JSON, as `sha256:<hex>`")
    commit: str | None = Field(default=None, description="the git commit keycard.yaml came from")
    path: str | None = Field(default=None, description="keycard.yaml's path in that repository")
    dirty: bool = Field(default=False, description="the file differed from that commit")

    @property
    def short(self) -> str:
        """One line for people: sha256:1a2b3c4d5e6f (commit 0123abc, deploy/keycard.yaml)."""
        where = [f"commit {self.commit[:7]}" if self.commit else "no commit"]
        if self.path:
            where.append(self.path)
        if self.dirty:
            where.append("with uncommitted changes")
        return f"{self.digest[:19]} ({', '.join(where)})"


class ConfigPolicy(BaseModel):
    """What one loaded keycard.yaml decides: the digest of the whole file as loaded, each flow's,
    and where the file came from. A worker announces it at start (`config.loaded`)."""

    model_config = ConfigDict(frozen=True)

    digest: str = Field(description="sha256 of the whole config's canonical JSON")
    flows: dict[str, str] = Field(description="each flow's digest, by flow name")
    commit: str | None = None
    path: str | None = None
    dirty: bool = False


class ConfigDifference(BaseModel):
    """How one loaded config differs from the one before it, flow by flow."""

    model_config = ConfigDict(frozen=True)

    added: list[str] = Field(default_factory=list)
    removed: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    other_settings_changed: bool = Field(
        default=False,
        description="something outside the flows changed (audit destinations, API tokens, ...)",
    )

    @property
    def summary(self) -> str:
        """One line: added a, b; changed c."""
        parts = [
            f"{label} {', '.join(flows)}"
            for label, flows in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if flows
        ]
        if self.other_settings_changed:
            parts.append("settings outside the flows changed")
        return "; ".join(parts) or "no flow changed"


def config_difference(before: ConfigPolicy | None, after: ConfigPolicy) -> ConfigDifference | None:
    """What changed from `before` to `after` (every flow added when there was none before);
    None when they are the same config."""
    if before is not None and before.digest == after.digest:
        return None
    old = before.flows if before is not None else {}
    new = after.flows
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    changed = sorted(name for name in new.keys() & old.keys() if new[name] != old[name])
    return ConfigDifference(
        added=added,
        removed=removed,
        changed=changed,
        other_settings_changed=before is not None and not (added or removed or changed),
    )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest_of(value: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(value).encode()).hexdigest()


def flow_digest(flow: BaseModel) -> str:
    """The digest of one flow as loaded (defaults filled in, secrets as their variable names).
    Settings left unset (None) are left out, so a Keycard release that adds an optional setting
    changes no digest: a digest changes when the policy does."""
    return digest_of(policy_json(flow))


def policy_json(model: BaseModel) -> Any:
    """A config or flow as its digest reads it: JSON, with unset settings left out."""
    return model.model_dump(mode="json", exclude_none=True)


def config_source(path: Path, environ: Mapping[str, str] | None = None) -> ConfigSource:
    """The commit and repository path of `path`, when it is in a git work tree and git is here;
    otherwise KEYCARD_CONFIG_COMMIT, if the deployment set it."""
    env = os.environ if environ is None else environ
    declared = env.get(COMMIT_ENV, "").strip() or None
    found = _from_git(path.resolve())
    if found is None:
        return ConfigSource(commit=declared)
    return found


def _from_git(path: Path) -> ConfigSource | None:
    git = shutil.which("git")
    if git is None or not path.exists():
        return None

    def run(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(  # noqa: S603 -- git, with arguments of our own
                [git, "-C", str(path.parent), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None

    head = run("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return None  # not a work tree, or one without commits
    tracked = run("ls-files", "--full-name", "--error-unmatch", "--", path.name)
    if tracked is None or tracked.returncode != 0:
        return ConfigSource(commit=head.stdout.strip(), dirty=True)  # not committed at all
    changed = run("diff", "--quiet", "HEAD", "--", path.name)
    return ConfigSource(
        commit=head.stdout.strip(),
        path=tracked.stdout.strip(),
        dirty=changed is None or changed.returncode != 0,
    )
