"""`keycard hooks check FILE`: catches what would otherwise fail only in production."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from main import app

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hooks" / "oncall.py"
runner = CliRunner()


def test_check_passes_the_example():
    result = runner.invoke(app, ["hooks", "check", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{EXAMPLE}: OK (on_request)"


def test_check_catches_a_misspelled_hook(tmp_path):
    path = tmp_path / "prod.py"
    path.write_text(
        "from keycard.sdk import Decision, hook\n\n"
        "@hook\n"
        "def on_requst(event):\n"
        "    return Decision.approve('on call')\n"
    )
    result = runner.invoke(app, ["hooks", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}: 1 problem(s)" in result.output
    assert "@hook on_requst is not a name Keycard knows; did you mean on_request?" in result.output
