"""The shape of the code, checked: modules stay short enough to read, or say why they are not.

The import arrows (no cycles, layers, starter/ never importing the worker) are checked by
`lint-imports` and the client shape by `mypy`, both in `make test` (pyproject.toml).
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keycard", "workflows", "activities", "starter", "bench")
LONGEST = 470  # "about 450 lines"
SAYS_WHY = re.compile(r"longer\s+than\s+most|over\s+the\s+usual\s+length", re.IGNORECASE)


def _modules() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    top = [ROOT / path for path in tracked if path.split("/")[0] in PACKAGES]
    return [*top, ROOT / "worker.py", ROOT / "main.py"]


def test_a_long_module_says_why_in_its_docstring():
    unexplained = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        lines = text.count("\n")
        if lines <= LONGEST:
            continue
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if not SAYS_WHY.search(docstring):
            unexplained.append(f"{path.relative_to(ROOT)} ({lines} lines)")
    assert not unexplained, (
        f"over {LONGEST} lines with no reason in the docstring: split them along their seams, or "
        f"say why they are longer than most modules: {', '.join(unexplained)}"
    )


def test_the_check_finds_a_long_module_without_a_reason(tmp_path):
    """The rule above can fail: a long module with a plain docstring is caught."""
    long = tmp_path / "long.py"
    long.write_text('"""Does things."""\n' + "x = 1\n" * (LONGEST + 1))
    docstring = ast.get_docstring(ast.parse(long.read_text())) or ""
    assert long.read_text().count("\n") > LONGEST and not SAYS_WHY.search(docstring)
