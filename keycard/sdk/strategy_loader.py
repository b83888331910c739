"""Import a strategy file (a flow's `module:`) and check its class before anything runs it.

`keycard strategies check FILE` and `keycard doctor` print the same problems. A worker with a
broken one still starts (every other flow's grants and removals must go on): that strategy's
calls fail and are retried, a removal until the file is fixed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

from keycard.sdk.loader import import_file
from keycard.sdk.strategy import OPERATIONS, Strategy

# What each method takes after self, by name, as the SDK calls it.
PARAMETERS = {
    "resolve": ("person", "target", "settings"),
    "exists": ("grant",),
    "grant": ("grant",),
    "revoke": ("grant",),
}


@dataclass(frozen=True)
class StrategyFile:
    path: Path
    strategy: type[Strategy] | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and self.strategy is not None

    def instance(self) -> Strategy:
        assert self.strategy is not None, self.problems
        return self.strategy()


def load_strategy_file(path: str | Path) -> StrategyFile:
    """Import the file as a fresh module and find its one Strategy subclass (never raises)."""
    path = Path(path)
    module, problem = import_file(path)
    if module is None:
        return StrategyFile(path, problems=[problem])
    classes = [
        value
        for value in vars(module).values()
        if inspect.isclass(value)
        and issubclass(value, Strategy)
        and value is not Strategy
        and value.__module__ == module.__name__
    ]
    if len(classes) != 1:
        found = ", ".join(c.__name__ for c in classes) or "none"
        return StrategyFile(
            path,
            problems=[
                f"{path}: must define exactly one subclass of keycard.sdk.Strategy (found: {found})"
            ],
        )
    [strategy] = classes
    problems = [f"{path}: {p}" for p in _check(strategy)]
    return StrategyFile(path, strategy if not problems else None, problems)


def _check(strategy: type[Strategy]) -> list[str]:
    problems = []
    name = strategy.__name__
    for operation in OPERATIONS:
        method = getattr(strategy, operation)
        if method is getattr(Strategy, operation):
            problems.append(f"{name} does not implement {operation}")
            continue
        if not inspect.iscoroutinefunction(method):
            problems.append(f"{name}.{operation} must be async (async def {operation})")
            continue
        wanted = PARAMETERS[operation]
        try:
            inspect.signature(method).bind(None, *wanted)
        except TypeError:
            problems.append(
                f"{name}.{operation}{inspect.signature(method)} must take "
                f"(self, {', '.join(wanted)})"
            )
    try:
        inspect.signature(strategy).bind()
    except TypeError:
        problems.append(
            f"{name}() must be callable without arguments (read settings from the environment "
            "in __init__)"
        )
    return problems
