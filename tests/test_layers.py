"""The layers (DESIGN.md) hold: `lint-imports` checks the contracts in pyproject.toml's [tool.importlinter] over
every import, those inside functions included, and a breach fails here with the offending import named."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_imports_point_down_the_layers():
    # the venv's entry point when running from one, else whichever `lint-imports` is on PATH
    lint_imports = Path(sys.executable).with_name("lint-imports")
    command = str(lint_imports) if lint_imports.exists() else shutil.which("lint-imports")
    assert command, "lint-imports not found: install the dev extra (pip install -e '.[dev]')"
    result = subprocess.run([command, "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
