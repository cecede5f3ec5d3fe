"""scripts/bench_bake.py --against: two gallery runs (one made before a default changed) are paired answer by answer
per spec and pooled, so a changed default is judged by the exact McNemar test, not by the table's percentages."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_bake", ROOT / "scripts" / "bench_bake.py")
bench_bake = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_bake)


def write_eval(run: Path, spec: str, outcomes: dict[str, bool], drift: list[bool] | None = None) -> None:
    eval_dir = run / spec / "eval"
    eval_dir.mkdir(parents=True)
    rows = [{"input": q, "answer": "...", "all_rules": ok, "failed": {}} for q, ok in outcomes.items()]
    (eval_dir / "answers_tuned_unprompted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if drift is not None:  # the base is right on the first four questions only
        rows = [{"id": f"fact-{i}", "base_correct": i < 4, "tuned_correct": ok} for i, ok in enumerate(drift)]
        (eval_dir / "answers_drift.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_pairs_each_spec_by_input_and_pools_them(tmp_path, capsys):
    new, old = tmp_path / "new", tmp_path / "old"
    questions = [f"q{i}" for i in range(10)]
    # spec a: the new run passes all ten, the old one the first two; the old file lists them in reverse (paired by
    # input, not by line)
    write_eval(new, "a", {q: True for q in questions}, drift=[True, True, False, False, True])
    write_eval(old, "a", {q: i < 2 for i, q in reversed(list(enumerate(questions)))},
               drift=[True, True, True, True, False])
    # spec b: the old run alone passes one input
    write_eval(new, "b", {"x": False, "y": True})
    write_eval(old, "b", {"x": True, "y": True})
    write_eval(new, "c", {"z": True})  # not in the old run: named, not paired
    write_eval(new, "d", {"u": True, "v": True})  # its inputs changed between the runs: named, not paired
    write_eval(old, "d", {"u": True})
    bench_bake.print_paired(["a", "b", "c", "d"], new, old)
    out = capsys.readouterr().out.splitlines()
    assert out[2].startswith("a: paired on held-out: 10 vs 2 of 10 (only the runs pass 8, only the baselines 0); "
                             "exact McNemar p=0.0078; paired on drift: 2 vs 4 of 4")
    assert out[3] == ("b: paired on held-out: 1 vs 2 of 2 (only the runs pass 0, only the baselines 1); exact "
                      "McNemar p=1")
    assert out[4] == "c: not finished in both runs"
    assert out[5] == "d: other held-out inputs in the two runs (2 vs 1); not paired"
    assert out[6] == ("paired on held-out, 2 specs pooled: 11 vs 4 of 12 (only the runs pass 8, only the baselines "
                      "1); exact McNemar p=0.039")
    assert out[7].startswith("paired on drift, 1 specs pooled: 2 vs 4 of 4")
