"""Score baked demo runs on the demo's dev split: the tuning instrument, never the README's held-out table.

    .venv/bin/python scripts/dev_eval.py runs/demo runs/exp_a [runs/exp_b ...]

The demo's validation slice has 17 inputs (one answer moves it 6 points), too few to decide a default between two
bakes. `configs/evals/demo_dev_inputs.jsonl` holds 60 more questions: the demo's six question shapes on ten
everyday tasks that none of the spec's 120 inputs asks about, so they are neither training, validation nor held-out
inputs, and they also measure whether the tuned model names a topic it never saw. For each run directory this
answers them with the run's kept adapter (`sft/best_adapter`, the one the bake evaluated), no prompt, greedy, the
demo eval's settings (`promptbake eval`, output in `<run>/dev`), and prints the run's best validation score beside
its dev score, per rule, and the two pooled: the figure a demo default is decided on.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV_INPUTS = "configs/evals/demo_dev_inputs.jsonl"


def validation_best(run: Path) -> tuple[int, int]:
    """(passed, n) of the validation point the bake kept: the best all-rules score, the earliest on ties, as
    sft/validation.py keeps it."""
    points = [json.loads(line) for line in (run / "sft" / "validation.jsonl").read_text().splitlines() if line]
    best = max(points, key=lambda p: (p["all_rules"], -p["step"]))
    n = sum(1 for line in (run / "data" / "val_inputs.jsonl").read_text().splitlines() if line)
    return round(best["all_rules"] * n), n


def dev_metrics(run: Path, fresh: bool) -> dict:
    out = run / "dev"
    metrics = out / "metrics.json"
    if fresh or not metrics.exists():
        subprocess.run([str(Path(sys.executable).parent / "promptbake"), "eval", "configs/evals/demo.yaml",
                        f"tuned_model={run / 'sft' / 'best_adapter'}", f"eval_inputs={DEV_INPUTS}",
                        "arms=[tuned_unprompted]", f"output_dir={out}", "report_to=none"], cwd=ROOT, check=True)
    return json.loads(metrics.read_text())["tuned_unprompted"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="baked demo run directories")
    parser.add_argument("--fresh", action="store_true", help="answer again even where <run>/dev exists")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
