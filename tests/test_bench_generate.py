"""scripts/bench_generate.py's timing: an arm timed several times counts its fastest run and keeps its first
run's answers (a repeat must not change what the arm is scored on)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_generate", ROOT / "scripts" / "bench_generate.py")
bench_generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_generate)


def test_timed_counts_the_fastest_run_and_keeps_the_first_answers(monkeypatch):
    clock = iter([0.0, 5.0, 10.0, 12.0, 20.0, 24.0])  # runs of 5 s, 2 s and 4 s
    monkeypatch.setattr(bench_generate.time, "perf_counter", lambda: next(clock))
    calls = []

    def arm():
        calls.append(len(calls))
        return [[f"answer of run {len(calls)}"]]

    samples, seconds = bench_generate.timed("arm", arm, repeats=3)
    assert calls == [0, 1, 2]
    assert seconds == 2.0
    assert samples == [["answer of run 1"]]
