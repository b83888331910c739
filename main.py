"""The `keycard` command, put together: the front doors' commands (starter/cli/) and the two that
run a worker in this process, `keycard worker` and `keycard dev`, given the worker (worker.py).

This is the one module that knows both sides. starter/ (front doors and their runners, clients of
Temporal) never imports the worker, and the worker (workflows and activities) never imports the
command line; pyproject.toml's import-linter contracts keep it so.
"""

from __future__ import annotations

from starter import cli
from starter.cli.run import add_worker_commands
from worker import run_worker

add_worker_commands(cli.app, run_worker)
app = cli.app


def main() -> None:
    cli.main(app)


if __name__ == "__main__":
    main()
