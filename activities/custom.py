"""`strategy: custom`: each flow's `module` (keycard.sdk.Strategy), run as the custom.* activities.

The worker loads every module its keycard.yaml names when it starts, relative to that file, and
any other a request names (a request keeps the flow it started with) on first use. A module that
does not load is logged and its calls fail, retried: a removal goes on once the file is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from temporalio.exceptions import ApplicationError

from activities.strategy_adapter import sdk_activities
from keycard.sdk.strategy import Strategy
from keycard.sdk.strategy_loader import load_strategy_file

log = structlog.get_logger(__name__)


class CustomStrategies:
    """The custom strategies of one worker, by the `module` their flows name."""

    def __init__(self, base_dir: Path) -> None:
        self._base = base_dir
        self._loaded: dict[str, Strategy] = {}

    def load(self, module: str) -> list[str]:
        """Load (again) a flow's module; its problems, [] when it is ready."""
        found = load_strategy_file(self._base / module)
        if not found.ok:
            return found.problems
        try:
            self._loaded[module] = found.instance()
        except Exception as err:  # the user's __init__
            return [f"{self._base / module}: creating its strategy failed: {err!r}"]
        return []

    def pick(self, spec: Any) -> Strategy:
        module = str(spec.options.get("module") or "")
        if module not in self._loaded:
            problems = self.load(module) if module else ["the flow names no module"]
            if problems:
                raise ApplicationError(
                    "the custom strategy cannot run: " + "; ".join(problems), type="StrategyBroken"
                )
        return self._loaded[module]


def for_flow(flow: Any, context: Any) -> Strategy:
    """The strategy of one custom flow, for `keycard doctor`; raises ValueError saying what is
    wrong with its module."""
    strategies = CustomStrategies(Path(context.base_dir))
    problems = strategies.load(flow.module)
    if problems:
        raise ValueError("; ".join(problems))
    return strategies._loaded[flow.module]


def custom_activities(context: Any) -> list[Callable[..., Any]]:
    strategies = CustomStrategies(Path(context.base_dir))
    for flow in context.config.flows:
        if flow.strategy == "custom":
            for problem in strategies.load(flow.module):
                log.error("strategy.broken", flow=flow.name, problem=problem)
    return sdk_activities("custom", strategies.pick)
