"""Score baked demo runs on the demo's dev split: the tuning instrument, never the README's held-out table.

    .venv/bin/python scripts/dev_eval.py runs/demo runs/exp_a [runs/exp_b ...]

The demo's validation slice has 17 inputs (one answer moves it 6 points), too few to decide a default between two
bakes. `configs/evals/demo_dev_inputs.jsonl` holds 60 more questions: the demo's six question shapes on ten
everyday tasks that none of the spec's 120 inputs asks about, so they are neither training, validation nor held-out
inputs, and they also measure whether the tuned model names a topic it never saw. For each run directory this
answers them with the run's kept adapter (`sft/best_adapter`, the one the bake evaluated), no prompt, greedy, the
demo eval's settings (`promptbake eval`, output in `<run>/dev`), and prints the run's best validation score beside
its dev score, per rule, and the two pooled: the figure a demo default is decided on.

    .venv/bin/python scripts/dev_eval.py runs/lever/seed0 runs/lever/seed1 --against runs/base/seed0 runs/base/seed1

With `--against` (one baseline run per run, paired in order: the same teacher seed, so the same training data
but for the lever) it also compares the two sets answer by answer on the dev split: the dev inputs each side
alone passes, and the exact McNemar p over all the paired answers. A lever whose p is above 0.05 is noise by
this test, whatever its pooled difference; the validation slice's per-input answers are not kept by the bake,
so it enters the pooled figure only. Where both runs have the bake's drift answers (`eval/answers_drift.jsonl`),
it pairs the general questions the base answers correctly the same way: kept by the run only, by the baseline
only, and the p. The bake asks 40 general questions, of which the base gets 13 right: one question moves a run's
"kept" by 8 points. `--drift-all` asks every run and baseline all 100 shipped questions instead (the drift
arm with the dev answers, `<run>/dev_drift`, about two minutes a run on 2 cores) and pairs those: 32
base-correct answers a run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from evals.paired import answer_outcomes, drift_kept, paired_line

ROOT = Path(__file__).resolve().parents[1]
DEV_INPUTS = "configs/evals/demo_dev_inputs.jsonl"
DRIFT_ALL = "dev_drift"


def validation_best(run: Path) -> tuple[int, int]:
    """(passed, n) of the validation point the bake kept: the best all-rules score, the earliest on ties, as
    sft/validation.py keeps it."""
    points = [json.loads(line) for line in (run / "sft" / "validation.jsonl").read_text().splitlines() if line]
    best = max(points, key=lambda p: (p["all_rules"], -p["step"]))
    n = sum(1 for line in (run / "data" / "val_inputs.jsonl").read_text().splitlines() if line)
    return round(best["all_rules"] * n), n


def answer_dev(run: Path, out: Path, *overrides: str) -> None:
    """`promptbake eval` of the run's kept adapter on the dev inputs, no prompt, into `out`."""
    subprocess.run([str(Path(sys.executable).parent / "promptbake"), "eval", "configs/evals/demo.yaml",
                    f"tuned_model={run / 'sft' / 'best_adapter'}", f"eval_inputs={DEV_INPUTS}", *overrides,
                    f"output_dir={out}", "report_to=none"], cwd=ROOT, check=True)


def dev_metrics(run: Path, fresh: bool) -> dict:
    metrics = run / "dev" / "metrics.json"
    if fresh or not metrics.exists():
        answer_dev(run, run / "dev", "arms=[tuned_unprompted]")
    return json.loads(metrics.read_text())["tuned_unprompted"]


def dev_outcomes(run: Path) -> dict[str, bool]:
    """Each dev input's all-rules outcome in the run's dev answers (written by `dev_metrics`)."""
    return answer_outcomes(run / "dev" / "answers_tuned_unprompted.jsonl")


def answer_all_general_questions(run: Path, fresh: bool) -> None:
    """The drift arm on all the shipped general questions, with the run's kept adapter, into <run>/dev_drift (beside
    the dev answers again: an eval reports drift beside an adherence arm)."""
    if fresh or not (run / DRIFT_ALL / "answers_drift.jsonl").exists():
        answer_dev(run, run / DRIFT_ALL, "arms=[tuned_unprompted,drift]", "drift.limit=100")


def paired_comparison(runs: list[Path], baselines: list[Path], drift_answers: str = "eval") -> str:
    """The paired lines: the dev answers (run i against baseline i, input by input), then the base's correct
    general answers kept where every run and baseline has them (the bake's 40 questions, or all of them from
    `--drift-all`)."""
    pairs = list(zip(runs, baselines, strict=True))
    lines = [paired_line("dev", [(dev_outcomes(r), dev_outcomes(b), f"{r} and {b}") for r, b in pairs],
                         " (for dev: run both with --fresh)")]
    drift = [(drift_kept(r / drift_answers / "answers_drift.jsonl"),
              drift_kept(b / drift_answers / "answers_drift.jsonl"), f"{r} and {b}") for r, b in pairs]
    if all(a is not None and b is not None for a, b, _ in drift):
        asked = "all general questions" if drift_answers == DRIFT_ALL else "the bake's general questions"
        lines.append(paired_line(f"the base's correct answers to {asked}", drift))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="baked demo run directories")
    parser.add_argument("--fresh", action="store_true", help="answer again even where <run>/dev exists")
    parser.add_argument("--against", nargs="+", type=Path, default=[],
                        help="baseline runs, one per run in the same order, for a paired test on the dev answers")
    parser.add_argument("--drift-all", action="store_true",
                        help="with --against: pair the answers to all 100 general questions, not the bake's 40")
    args = parser.parse_args()
    if args.drift_all and not args.against:
        parser.error("--drift-all pairs runs with baselines: give --against")
    if args.against and len(args.against) != len(args.runs):
        parser.error(f"--against needs one baseline per run ({len(args.runs)}), got {len(args.against)}")
    rows = []
    for run in args.runs:
        val_passed, val_n = validation_best(run)
        dev = dev_metrics(run, args.fresh)
        rules = " ".join(f"{rule} {share:.0%}" for rule, share in dev["per_rule"].items())
        pooled = (val_passed + dev["all_rules_passed"]) / (val_n + dev["n"])
        rows.append(f"| {run} | {val_passed}/{val_n} | {dev['all_rules_passed']}/{dev['n']} | {pooled:.0%} | "
                    f"{rules} |")
    print("| run | validation all rules | dev all rules | pooled | dev per rule |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    if args.against:
        for base in args.against:
            dev_metrics(base, fresh=False)
        if args.drift_all:
            for run in args.runs + args.against:
                answer_all_general_questions(run, args.fresh)
        print(paired_comparison(args.runs, args.against, DRIFT_ALL if args.drift_all else "eval"))


if __name__ == "__main__":
    main()
