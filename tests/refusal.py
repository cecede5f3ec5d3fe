"""Run `promptbake ARGV` as a process of its own (tests/cli_probe.py) and report what a user would see of a
refusal: the exit code, stderr, the seconds from start to exit, and the heavy libraries imported on the way.
The bad-input suite and the user-files tests hold every refusal to the same bar (`assert_quick_refusal`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "cli_probe.py"
BOUND_S = 8.0
"""What a test allows a refusal, start to exit: ~0.3-0.6 s measured on a 2-core Xeon, but the machine is shared."""


class Refusal(NamedTuple):
    code: int
    err: str
    seconds: float
    heavy: list[str]


def run_refused(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> Refusal:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(PROBE), *argv], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=600)
    seconds = time.perf_counter() - start
    *lines, probe = done.stderr.rstrip("\n").split("\n")
    assert probe.startswith("PROBE "), done.stderr
    return Refusal(done.returncode, "\n".join(lines), seconds, json.loads(probe.removeprefix("PROBE "))["heavy"])


def assert_quick_refusal(refusal: Refusal, log) -> None:
    """Exit 2, `error: ...` lines and no traceback, before torch was imported, within BOUND_S; logged for the
    reliability report (`log`: the reliability_log fixture)."""
    log("bad_inputs", 1)
    log("bad_inputs_exit_2", int(refusal.code == 2))
    log("slowest_refusal_s", round(refusal.seconds, 2), how="max")
    assert refusal.code == 2, refusal.err
    assert "Traceback" not in refusal.err and "error: " in refusal.err, refusal.err
    assert "torch" not in refusal.heavy, f"torch was imported before the refusal: {refusal.heavy}"
    assert refusal.seconds < BOUND_S, f"the refusal took {refusal.seconds:.1f} s"
