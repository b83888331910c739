"""keycard.sdk stays safe to import inside workflows: no I/O library comes with it."""

from __future__ import annotations

import subprocess
import sys

IO_LIBRARIES = ("pagerduty", "boto3", "botocore", "slack_sdk", "httpx", "httpx2")


def test_importing_the_sdk_and_its_integrations_imports_no_io_library():
    code = (
        "import sys\n"
        "import keycard.sdk, keycard.sdk.integrations, keycard.hooks, workflows.access_request\n"
        f"print(','.join(m for m in {IO_LIBRARIES!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
