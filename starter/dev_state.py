"""What a running `keycard dev` records about itself in `.keycard/dev.json`, for other commands.

Deliberately light: the commands that read it (`keycard list`, `doctor`, ...) run in production
installs too, which carry neither moto nor the Temporal dev server (the `dev` extra).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEV_STATE_FILE = "dev.json"


def state_dir_from_env() -> Path:
    return Path(os.environ.get("KEYCARD_STATE_DIR", ".keycard"))


def read_dev_state(state_dir: Path) -> dict:
    """What a running `keycard dev` wrote about itself (endpoints), for other commands."""
    path = state_dir / DEV_STATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: is `keycard dev` running here?")
    return json.loads(path.read_text(encoding="utf-8"))


def dev_temporal_address(state_dir: Path | None = None) -> str | None:
    """The Temporal address of a `keycard dev` running from this directory, if there is one."""
    try:
        state = read_dev_state(state_dir or state_dir_from_env())
    except (FileNotFoundError, ValueError):
        return None
    address = state.get("temporal_address")
    return address if isinstance(address, str) and address else None
