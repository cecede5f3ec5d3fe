"""Benchmark: `promptbake bake` with its defaults and no per-spec overrides on every spec of the gallery.

    .venv/bin/python scripts/bench_bake.py [--specs demo_style,style_rules] [--out runs/bench_bake] [--resume]
                                           [--table-only] [--against runs/bench_bake_prev]

Each spec runs as a user runs it (the real `promptbake bake` command, in its own process) into OUT/<spec>, fresh
(an earlier run directory of the spec is deleted first) unless --resume, which reuses its finished stages;
--table-only bakes nothing and prints the table of the finished runs in OUT (one spec re-baked alone joins the
others' table this way; its minutes are the stages' own clocks).
Prints, per spec, all-rules adherence on the held-out inputs of every arm (the prompted base, the tuned model
without prompt, the null arm `constant`, the prompted base's answers repaired and its best of n), label match
where the inputs have labels, answer diversity, the McNemar p of tuned vs base, the verdict (won / undecided /
not won, promptbake.verdict) and the wall time, and ends with

    specs_won=W specs_undecided=U specs_total=T constant_wins=C max_minutes=M

where constant_wins counts specs on which the null arm would win against the prompted base by the verdict's rule
(margin and McNemar p < 0.05; it must be 0).
--against OTHER (another finished gallery run, e.g. made before a default changed) pairs the tuned models' held-out
answers input by input, per spec and pooled, with the exact McNemar p, and the same for the base's correct
answers to the drift arm's general questions: whether a changed default moved the gallery by more than noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from promptbake.core.contracts import EvalMetrics, Verdict, check_contract, read_contract

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "configs" / "specs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", help="comma-separated spec names (file stems); default: every spec")
    parser.add_argument("--out", default="runs/bench_bake")
    parser.add_argument("--resume", action="store_true", help="reuse the finished stages of earlier runs")
    parser.add_argument("--table-only", action="store_true", help="bake nothing: print the finished runs' table")
    parser.add_argument("--against", type=Path, help="another gallery run to pair the tuned answers with")
    args = parser.parse_args()
    names = args.specs.split(",") if args.specs else sorted(p.stem for p in SPECS.glob("*.yaml"))
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    results = []
    for name in names:
        spec, out = SPECS / f"{name}.yaml", Path(args.out) / name
        if not spec.exists():
            sys.exit(f"no spec {spec}")
        if args.table_only:
            minutes, returncode = 0.0, 0
        else:
            if not args.resume and out.exists():
                shutil.rmtree(out)
            print(f"\n##### bake {name} -> {out}", flush=True)
            t0 = time.time()
            returncode = subprocess.run([sys.executable, "-m", "promptbake.cli", "bake", str(spec),
                                         f"output_dir={out}"], cwd=REPO, env=env).returncode
            minutes = (time.time() - t0) / 60
        verdict_path = out / "verdict.json"
        if returncode != 0 or not verdict_path.exists():
            print(f"{name}: bake failed (exit {returncode})" if returncode else f"{name}: no finished bake in {out}",
                  flush=True)
            results.append({"spec": name, "outcome": "failed", "minutes": minutes})
            continue
        v = read_contract(Verdict, verdict_path).model_dump()
        metrics = json.loads((out / "eval" / "metrics.json").read_text())
        check_contract(EvalMetrics, metrics, out / "eval" / "metrics.json")
        # a resumed bake's own time counts only what was left; report the stages' total
        state = json.loads((out / "bake.json").read_text())
        total = sum(s.get("time_s", 0) for s in state["stages"].values()) / 60
        results.append({"spec": name, "outcome": v["outcome"], "minutes": max(minutes, total), "n": v["n"],
                        "p": v["mcnemar_p"], "metrics": metrics, "verdict": v})
    print_table(results)
    if args.against:
        print_paired(names, Path(args.out), args.against)


ARMS = [("base", "base_prompted"), ("tuned", "tuned_unprompted"), ("constant", "constant"),
        ("repaired", "base_prompted_repaired"), ("best-of-n", "base_prompted_best_of_n")]


def print_table(results: list[dict]) -> None:
    from promptbake.verdict import SIGNIFICANCE, meets_margin, passed

    print("\n| spec | n | " + " | ".join(label for label, _ in ARMS)
          + " | content: label match base / tuned, or judge tuned vs base W-L-T | diversity tuned | drift kept (KL) "
          "| p | verdict | minutes |")
    print("|---" * (len(ARMS) + 8) + "|")
    constant_wins = 0
    for r in results:
        if r["outcome"] == "failed":
            print(f"| {r['spec']} | | " + " | ".join("" for _ in ARMS) + f" | | | | | failed | {r['minutes']:.1f} |")
            continue
        m = r["metrics"]
        cells = [f"{m[arm]['all_rules_adherence']:.0%}" if arm in m else "-" for _, arm in ARMS]
        judged = m.get("judge_vs_base_prompted", {}).get("tuned_unprompted")
        labels = (f"label {m['base_prompted']['label_match']:.0%} / {m['tuned_unprompted']['label_match']:.0%}"
                  if "label_match" in m["tuned_unprompted"] else
                  f"judge {judged['wins']}-{judged['losses']}-{judged['ties']} (p={judged['sign_test_p']:.2g})"
                  if judged else "-")
        if "constant" in m:  # by the verdict's own rule for a win: the margin and a significant McNemar test
            constant_wins += (meets_margin(passed(m["base_prompted"])[0], passed(m["constant"])[0], r["n"])
                              and m["vs_base_prompted"].get("constant", 1.0) < SIGNIFICANCE
                              and passed(m["constant"])[0] > passed(m["base_prompted"])[0])
        drift = m.get("drift", {})  # the share of the base's correct general answers kept, KL(tuned || base)
        kept = (f"{drift['kept_correct']:.0%} ({drift['kl_per_token']:.2f})"
                if drift.get("kept_correct") is not None and drift.get("kl_per_token") is not None else "-")
        print(f"| {r['spec']} | {r['n']} | " + " | ".join(cells)
              + f" | {labels} | {m['tuned_unprompted'].get('answer_diversity', float('nan')):.0%} | {kept} "
              f"| {r['p']:.2g} "
              f"| {r['outcome']} | {r['minutes']:.1f} |")
    for r in results:
        if r["outcome"] != "failed" and r["verdict"].get("alternatives"):
            print(f"{r['spec']}: {r['verdict']['alternatives']}")
    for r in results:
        if r["outcome"] not in ("won", "failed"):
            print(f"{r['spec']}: {r['verdict']['statement']}")
            if r["verdict"].get("try_first"):
                print(f"  try first: {r['verdict']['try_first']}")
    print(f"specs_won={sum(r['outcome'] == 'won' for r in results)} "
          f"specs_undecided={sum(r['outcome'] == 'undecided' for r in results)} specs_total={len(results)} "
          f"constant_wins={constant_wins} max_minutes={max(r['minutes'] for r in results):.1f}")


def print_paired(names: list[str], out: Path, against: Path) -> None:
    """Pair this run's tuned answers with another gallery run's, input by input, per spec and pooled; the same
    for the base's correct answers to the drift arm's general questions (one base: the same questions right)."""
    from evals.paired import answer_outcomes, drift_kept, paired_line

    print(f"\npaired against {against} (the tuned models' held-out answers; drift: the base's correct answers kept)")
    answers, drift = [], []
    for name in names:
        here, there = out / name / "eval", against / name / "eval"
        if not all((d / "answers_tuned_unprompted.jsonl").exists() for d in (here, there)):
            print(f"{name}: not finished in both runs")
            continue
        pair = (answer_outcomes(here / "answers_tuned_unprompted.jsonl"),
                answer_outcomes(there / "answers_tuned_unprompted.jsonl"), f"{here} and {there}")
        if pair[0].keys() != pair[1].keys():  # a spec whose inputs changed between the runs
            print(f"{name}: other held-out inputs in the two runs ({len(pair[0])} vs {len(pair[1])}); not paired")
            continue
        kept = (drift_kept(here / "answers_drift.jsonl"), drift_kept(there / "answers_drift.jsonl"),
                f"{here} and {there}")
        line = f"{name}: " + paired_line("held-out", [pair])
        if kept[0] is not None and kept[1] is not None:
            line += "; " + paired_line("drift", [kept])
            drift.append(kept)
        print(line)
        answers.append(pair)
    if answers:
        print(paired_line(f"held-out, {len(answers)} specs pooled", answers))
    if drift:
        print(paired_line(f"drift, {len(drift)} specs pooled", drift))


if __name__ == "__main__":
    main()
