"""The worker's strategy activities, built from the registry (keycard/strategies.py): each
strategy's `implementation` factory is imported and given the worker's StrategyContext."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keycard.config import KeycardConfig
from keycard.strategies import STRATEGIES, StrategyInfo


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy's factory may use: keycard.yaml, the directory it is in (for a flow's
    `module`), the worker's boto3 session, and the environment (for tests, another one)."""

    config: KeycardConfig
    session: Any
    base_dir: Path
    environ: Mapping[str, str] | None = None


def implementation(info: StrategyInfo) -> Callable[[StrategyContext], list[Callable[..., Any]]]:
    module, _, factory = info.implementation.partition(":")
    return getattr(importlib.import_module(module), factory)


def strategy_activities(context: StrategyContext) -> list[Callable[..., Any]]:
    """Every strategy's four activities (registered whether or not a flow uses it: a request
    keeps the flow it started with, which a later keycard.yaml may no longer have)."""
    return [activity for info in STRATEGIES.values() for activity in implementation(info)(context)]


def strategy_for_flow(flow: Any, context: StrategyContext) -> Any:
    """A non-AWS flow's keycard.sdk.Strategy, as its activities would run it (for `keycard
    doctor`, which asks its `check`); ValueError says why there is none."""
    info = STRATEGIES[flow.strategy]
    module = importlib.import_module(info.implementation.partition(":")[0])
    return module.for_flow(flow, context)
