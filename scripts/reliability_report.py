"""Reliability report: runs the fault-injection, bad-input, secret and load checks and sums what they did.

    .venv/bin/python scripts/reliability_report.py

The checks are the test files below (the single source of truth: CI runs them too); each records what it
exercised through the `reliability_log` fixture. Faults: SIGKILLs of a data build, a training run and an
export at random points, of a whole bake in each of its stages (its final answers and weights compared with an
uninterrupted bake's), a tampered checkpoint, and HTTP failures injected by a real proxy in front of a real
llama.cpp server (500/429/503/truncated bodies, 500 requests at concurrency 8). Bad inputs: the parametrized
suite of malformed specs, files, recipes, datasets and arguments. Secrets: recognisable keys planted in the
environment, searched for in every file a pipeline run produced. The last line is
`faults_injected=<n> bad_inputs=<n> secrets_found=<n> rows_lost=<n> bake_kill_points_identical=<n>`; the exit
code is non-zero if a check failed, a secret was found, a row was lost, or fewer than 10 faults / 30 bad inputs
were exercised.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECKS = [
    "tests/test_crash_safety.py",
    "tests/test_bake_kill_anywhere.py",
    "tests/test_distributed.py::test_killed_run_resumes_to_the_same_weights",
    "tests/test_bad_inputs.py",
    "tests/test_security.py",
    "tests/test_http_backend.py",
]


def main() -> int:
    log = Path(tempfile.mkdtemp(prefix="reliability.")) / "log.jsonl"
    log.touch()
    env = {**os.environ, "PROMPTBAKE_RELIABILITY_LOG": str(log)}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CHECKS],
                            cwd=REPO, env=env)
    totals: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        record = json.loads(line)
        totals[record["kind"]] += record["count"]
    ok = (result.returncode == 0 and totals["secrets_found"] == 0 and totals["rows_lost"] == 0
          and totals["faults_injected"] >= 10 and totals["bad_inputs"] >= 30)
    print("checks passed" if ok else f"FAILED: pytest exit {result.returncode}, totals {dict(totals)}")
    print(f"faults_injected={totals['faults_injected']} bad_inputs={totals['bad_inputs']} "
          f"secrets_found={totals['secrets_found']} rows_lost={totals['rows_lost']} "
          f"bake_kill_points_identical={totals['bake_kill_points_identical']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
