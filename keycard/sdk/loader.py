"""Import a hooks file and check it: unknown hook names, wrong decorators, wrong signatures.

Keycard runs a hooks file only when it has no problems: a misspelled `on_approve` would otherwise
silently drop a veto. `keycard hooks check FILE` prints the same problems before deploy.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import inspect
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from keycard.sdk.annotations import HOOKS, MARK, REDUCERS


@dataclass(frozen=True)
class HooksFile:
    path: Path
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def get(self, name: str) -> Callable[..., Any] | None:
        return self.functions.get(name)


def load_hooks_file(path: str | Path) -> HooksFile:
    """Import the file as a fresh module and collect its hooks and reducers (never raises)."""
    path = Path(path)
    module, problem = import_file(path)
    if module is None:
        return HooksFile(path, problems=[problem])
    return _collect(path, module)


def import_file(path: Path) -> tuple[ModuleType | None, str]:
    """The file imported as a fresh module, or None and why not (never raises): hooks files and
    strategy files alike."""
    try:
        return _import(path), ""
    except FileNotFoundError:
        return None, f"{path}: no such file"
    except BaseException as exc:  # the user's module may raise anything while importing
        return None, f"{path}: importing it failed: {_describe(exc, path)}"


def _import(path: Path) -> ModuleType:
    if not path.is_file():
        raise FileNotFoundError(path)
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"keycard_hooks_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs (dataclasses and pydantic models look their module up), and
    # replaced as a whole by the next import of a changed file, never merged into.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def _describe(exc: BaseException, path: Path) -> str:
    if isinstance(exc, SyntaxError):
        return f"line {exc.lineno}: {exc.msg}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
    where = f"line {frames[-1].lineno}: " if frames else ""
    return f"{where}{type(exc).__name__}: {exc}"


def _collect(path: Path, module: ModuleType) -> HooksFile:
    functions: dict[str, Callable[..., Any]] = {}
    problems: list[str] = []
    for attr, value in vars(module).items():
        if not callable(value):
            continue
        kind = getattr(value, MARK, None)
        name = getattr(value, "__name__", attr)
        if kind is None:
            if attr in HOOKS or attr in REDUCERS:
                decorator = "@hook" if attr in HOOKS else "@reducer"
                problems.append(f"{attr} is not decorated with {decorator}, so it would never run")
            continue
        problem = _check(name, kind, value)
        if problem:
            problems.append(problem)
        else:
            functions[name] = value
    return HooksFile(path, functions, [f"{path}: {p}" for p in problems])


def _check(name: str, kind: str, fn: Callable[..., Any]) -> str | None:
    known, other = (HOOKS, REDUCERS) if kind == "hook" else (REDUCERS, HOOKS)
    if name not in known:
        if name in other:
            right = "@reducer" if kind == "hook" else "@hook"
            return f"{name} is decorated with @{kind}; it must be {right}"
        guess = difflib.get_close_matches(name, [*HOOKS, *REDUCERS], n=1)
        hint = f"did you mean {guess[0]}? " if guess else ""
        return f"@{kind} {name} is not a name Keycard knows; {hint}known: {', '.join(known)}"
    if inspect.iscoroutinefunction(fn):
        return f"{name} is async; hooks are plain functions (def, not async def)"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return f"{name}: cannot read its signature"
    try:
        signature.bind(object())
    except TypeError:
        return f"{name}{signature} must take exactly one argument, the event: def {name}(event)"
    return None
