"""The README's curl demo, run as written against the API that `keycard dev` serves."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import structlog

from keycard.config import parse_config
from starter.run.serve import dev_api
from tests.harness import running_stack
from tests.starter.conftest import new_account_id

ROOT = Path(__file__).resolve().parents[2]


def readme_demo() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("<!-- api-demo:begin -->", 1)[1].split("<!-- api-demo:end -->", 1)[0]
    return block.split("```sh\n", 1)[1].split("```", 1)[0]


async def test_readme_curl_demo_creates_approves_and_revokes(dev_env, tmp_path: Path):
    assert shutil.which("curl"), "the README demo needs curl"
    example = (ROOT / "keycard.example.yaml").read_text(encoding="utf-8")
    for account in ("111111111111", "222222222222"):  # grants of their own on the shared server
        example = example.replace(account, new_account_id())
    config = parse_config(example)
    with structlog.testing.capture_logs():
        async with (
            running_stack(dev_env.client, config=config) as stack,
            dev_api(stack.keycard, port=0, state_dir=tmp_path / ".keycard") as api,
        ):
            assert api.env_file == tmp_path / ".keycard" / "dev.env"
            assert oct(api.env_file.stat().st_mode & 0o777) == "0o600"
            demo = await asyncio.create_subprocess_exec(
                "bash", "-euo", "pipefail", "-c", readme_demo(),
                cwd=tmp_path, env={"PATH": os.environ["PATH"], "HOME": str(tmp_path)},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(demo.communicate(), timeout=60)
        assert not api.env_file.exists()  # the tokens die with `keycard dev`
    assert demo.returncode == 0, err.decode()
    request_id, approved, active, revoked = out.decode().splitlines()
    assert request_id.startswith("req-")
    approved, active, revoked = (json.loads(x) for x in (approved, active, revoked))
    assert approved["approvals"][0]["actor"]["email"] == "bob@example.com"
    assert approved["approvals"][0]["comment"] == "go ahead"
    assert (active["id"], active["state"], active["duration"]) == (request_id, "ACTIVE", "30m")
    assert revoked["state"] == "ENDED"
    assert revoked["end_reason"] == "revoked early by alice@example.com"
