"""Process settings from the environment. Temporal's own settings are read by temporalio.envconfig."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    config_path: Path = field(default_factory=lambda: Path("keycard.yaml"))
    task_queue: str = "keycard"
    audit_jsonl: Path | None = None
    audit_stdout: bool = True
    state_dir: Path = field(default_factory=lambda: Path(".keycard"))

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        jsonl = env.get("KEYCARD_AUDIT_JSONL")
        return cls(
            config_path=Path(env.get("KEYCARD_CONFIG", "keycard.yaml")),
            task_queue=env.get("KEYCARD_TASK_QUEUE", "keycard"),
            audit_jsonl=Path(jsonl) if jsonl else None,
            audit_stdout=env.get("KEYCARD_AUDIT_STDOUT", "true").lower()
            not in {"0", "false", "no"},
            state_dir=Path(env.get("KEYCARD_STATE_DIR", ".keycard")),
        )
