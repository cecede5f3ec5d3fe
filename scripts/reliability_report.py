"""Reliability report: runs the fault-injection, bad-input, user-files, secret and load checks and sums what they did.

    .venv/bin/python scripts/reliability_report.py              # runs the checks below, then reports
    .venv/bin/python scripts/reliability_report.py --log LOG    # reports what a test run already logged

The checks are the test files below (the single source of truth: CI runs them too); each records what it
exercised through the `reliability_log` fixture (PROMPTBAKE_RELIABILITY_LOG). Faults: SIGKILLs of a data build, a
training run and an export at random points, of a whole bake in each of its stages (its final answers and weights
compared with an uninterrupted bake's), a tampered checkpoint, and HTTP failures injected by a real proxy in front
of a real llama.cpp server (500/429/503/truncated bodies, 500 requests at concurrency 8). Bad inputs: the
parametrized suite of malformed specs, files, recipes, datasets, configs and arguments of every command, and the
user's files in every output a command writes: each run as its own process and timed from start to exit (the few
that only a loaded library can judge are counted apart as late refusals). Secrets: recognisable keys planted in the
environment, searched for in every file a pipeline run produced. scripts/test.sh logs the whole suite the same way
and ends with this report's last line.

The last line is `faults_injected=<n> bad_inputs=<n> bad_inputs_exit_2=<n> slowest_refusal_s=<s>
late_refusals=<n> slowest_late_refusal_s=<s> user_files_deleted=<n> secrets_found=<n> rows_lost=<n>
bake_kill_points_identical=<n>`; the exit code is non-zero if a check failed, a secret was found, a row or a user's
file was lost, a bad input exited other than 2, a refusal before the libraries load took 2 s or more, or fewer than
10 faults / 80 bad inputs were exercised.
"""

from __future__ import annotations

import argparse
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
    "tests/test_user_files.py",
    "tests/test_security.py",
    "tests/test_http_backend.py",
]
MIN_FAULTS, MIN_BAD_INPUTS, REFUSAL_S = 10, 80, 2.0
REPORTED = ("faults_injected", "bad_inputs", "bad_inputs_exit_2", "slowest_refusal_s", "late_refusals",
            "slowest_late_refusal_s", "user_files_deleted", "secrets_found", "rows_lost", "bake_kill_points_identical")


def totals_of(log: Path) -> Counter:
    """Each kind's records summed, or their largest value for those logged with how="max"."""
    totals: Counter = Counter()
    for line in log.read_text().splitlines():
        record = json.loads(line)
        kind, count = record["kind"], record["count"]
        totals[kind] = max(totals[kind], count) if record.get("how") == "max" else totals[kind] + count
    return totals


def problems(totals: Counter) -> list[str]:
    """Why the figures fail the report's bar (empty: they pass)."""
    found = [f"{kind}={totals[kind]}" for kind in ("secrets_found", "rows_lost", "user_files_deleted") if totals[kind]]
    if totals["bad_inputs_exit_2"] != totals["bad_inputs"]:
        found.append(f"{totals['bad_inputs'] - totals['bad_inputs_exit_2']} bad inputs did not exit 2")
    if totals["slowest_refusal_s"] >= REFUSAL_S:
        found.append(f"a refusal took {totals['slowest_refusal_s']} s (>= {REFUSAL_S} s)")
    if totals["faults_injected"] < MIN_FAULTS:
        found.append(f"only {totals['faults_injected']} faults injected (< {MIN_FAULTS})")
    if totals["bad_inputs"] < MIN_BAD_INPUTS:
        found.append(f"only {totals['bad_inputs']} bad inputs tried (< {MIN_BAD_INPUTS})")
    return found


def last_line(totals: Counter) -> str:
    return " ".join(f"{kind}={totals[kind]}" for kind in REPORTED)


def report(log: Path, pytest_exit: int = 0) -> int:
    totals = totals_of(log)
    failed = ([f"pytest exit {pytest_exit}"] if pytest_exit else []) + problems(totals)
    print("checks passed" if not failed else f"FAILED: {'; '.join(failed)}")
    print(last_line(totals))
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", type=Path, help="report this log of a test run instead of running the checks")
    args = parser.parse_args(argv)
    if args.log is not None:
        return report(args.log)
    with tempfile.TemporaryDirectory(prefix="reliability.") as scratch:
        log = Path(scratch) / "log.jsonl"
        log.touch()
        env = {**os.environ, "PROMPTBAKE_RELIABILITY_LOG": str(log)}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *CHECKS],
                                cwd=REPO, env=env)
        return report(log, result.returncode)


if __name__ == "__main__":
    sys.exit(main())
