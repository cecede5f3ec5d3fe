"""Benchmark: a method race. On each gallery spec, the same data and the same SFT run, then each on-policy round
method (and the drift levers: adapter strength, replay rows), every arm judged by the same eval; prints one table.
`distill_passing` is on-policy distillation on the student's answers that pass every check only
(`rounds.distill_only_passing`).

    .venv/bin/python scripts/bench_methods.py [--specs demo_style,ticket_triage] [--sft-from runs/bench_bake]
                                             [--methods dpo,rft,grpo,distill,distill_passing,strength,replay,replay25,
                                                        replay100,replay_rft,replay_auto,replay100_auto,replay_kl,
                                                        replay_kl25,replay_repaired]
                                             [--out runs/bench_methods] [--table-only]

The `sft` arm is a finished default bake of the spec (`--sft-from/<spec>`, as `scripts/bench_bake.py` writes it;
baked here when missing): the bake's default (LoRA SFT on the teacher's checked answers, rounds off). Each other
arm copies that bake's data and SFT stages into `--out/<spec>/<method>` and runs the real `promptbake bake` there
with `rounds.method=<method>` (or `strength.search=true`): the rounds start from the same SFT adapter and are kept
only while they improve the validation slice and pass the drift guard (so a method that does not help there, or
costs general answers, falls back to SFT, and says so: "kept 0 rounds"); the strength arm scales the same adapter
by the multiplier the validation slice (then drift) prefers; the replay arm trains SFT again from the same data
with `replay.fraction=0.5` (the base's own answers to general questions mixed in, promptbake/replay.py; `replay25`:
a quarter, `replay100`: one for every spec row), its own validation curve choosing its step; `replay_rft` is the
replay arm followed by rft rounds from its adapter; `replay_auto` (`replay.when=sft_drifts`) trains the replay arm
only when the SFT adapter keeps under 90% of the base's correct answers to the drift guard's general questions, and
keeps it only when it keeps more of them for at most one validation input's rules (`replay100_auto`: the same at
one replay row per spec row); `replay_kl` (`replay.loss=kl`, sft/retention.py) holds SFT to the base's own
next-token distributions on those rows, a KL term beside SFT on the spec's rows alone (`replay_kl25`: at a quarter
of the weight); `replay_repaired` (`replay.repair=true`) mixes in the base's answers put through the spec's repairs,
one for every spec row, only those that then pass every check. Then the eval runs again
(drift included; the inference-time arms, which do not depend on the method, are skipped). Columns:

    spec | method | validation all rules (what the bake chooses by) | what the trained round did to the validation
    slice (best / last trained step, kept or not) | held-out all rules | label match | drift kept
    | KL | training minutes (data + SFT + rounds/strength stages) | rounds kept / strength (and each measured
    round's drift guard: the share of the base's correct general answers SFT and the round keep) | verdict

Nothing here is chosen on the held-out split: the bake's own choice between SFT and SFT + rounds reads only its
validation slice. The last line counts, per method, the specs whose validation score it raised over SFT:

    race validation_wins dpo=A rft=B grpo=C distill=D strength=E replay=F specs=N
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

REPO = Path(__file__).resolve().parents[1]
SPECS = REPO / "configs" / "specs"
# each arm, as bake overrides: the on-policy round methods after SFT, and the two drift levers: the adapter's
# strength (after SFT) and replay rows (SFT again, on the spec's rows and the base's own general answers)
ARMS = {"dpo": ["rounds.method=dpo"], "rft": ["rounds.method=rft"], "grpo": ["rounds.method=grpo"],
        "distill": ["rounds.method=distill"],
        "distill_passing": ["rounds.method=distill", "rounds.distill_only_passing=true"],
        "strength": ["strength.search=true"], "replay": ["replay.fraction=0.5"], "replay25": ["replay.fraction=0.25"],
        "replay100": ["replay.fraction=1.0"],
        # both levers at once: replay rows keep general answers, an rft round (drift-guarded) wins rules back
        "replay_rft": ["replay.fraction=0.5", "rounds.method=rft"],
        # replay only where SFT lost the base's general answers (the drift guard's questions), kept when it keeps
        # more of them without losing more than one validation input's rules
        "replay_auto": ["replay.fraction=0.5", "replay.when=sft_drifts"],
        "replay100_auto": ["replay.fraction=1.0", "replay.when=sft_drifts"],
        "replay_kl": ["replay.fraction=1.0", "replay.loss=kl"],
        "replay_kl25": ["replay.fraction=1.0", "replay.loss=kl", "replay.kl_weight=0.25"],
        # the base's facts in the spec's form: replay rows that pass the checks, so they teach no forbidden answer
        "replay_repaired": ["replay.fraction=1.0", "replay.repair=true"]}
METHODS = tuple(ARMS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", help="comma-separated spec names (file stems); default: every spec")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"round methods among {', '.join(METHODS)}")
    parser.add_argument("--sft-from", default="runs/bench_bake",
                        help="finished default bakes, one directory per spec (scripts/bench_bake.py's --out)")
    parser.add_argument("--out", default="runs/bench_methods")
    parser.add_argument("--table-only", action="store_true",
                        help="bake nothing: print the table of the arms already finished in --sft-from and --out")
    args = parser.parse_args()
    methods = args.methods.split(",")
    if unknown := set(methods) - set(METHODS):
        sys.exit(f"unknown methods {sorted(unknown)}: choose among {', '.join(METHODS)}")
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    rows = []
    names = args.specs.split(",") if args.specs else sorted(p.stem for p in SPECS.glob("*.yaml"))
    for name in names:
        spec = SPECS / f"{name}.yaml"
        if not spec.exists():
            sys.exit(f"no spec {spec}")
        sft_run = Path(args.sft_from) / name
        if args.table_only:
            if (sft_run / "verdict.json").exists():
                rows.append(arm_row(name, "sft", sft_run, minutes=None))
                rows += [arm_row(name, m, Path(args.out) / name / m, minutes=None) for m in methods
                         if (Path(args.out) / name / m / "verdict.json").exists()]
            continue
        if not (sft_run / "verdict.json").exists():
            print(f"\n##### {name}: no finished default bake in {sft_run}; baking it", flush=True)
            bake(spec, sft_run, [], env)
        rows.append(arm_row(name, "sft", sft_run, minutes=None))
        for method in methods:
            out = Path(args.out) / name / method
            if out.exists():
                if not (out / "bake.json").exists():  # never remove what an earlier race did not write
                    sys.exit(f"{out} exists and is not a bake's run directory (no bake.json); choose another --out "
                             "or move it away")
                shutil.rmtree(out)
            fork(sft_run, out)
            print(f"\n##### {name}: {method} from the SFT adapter of {sft_run} -> {out}", flush=True)
            t0 = time.time()
            ok = bake(spec, out, [*ARMS[method], "inference_arms=false", "export=false"], env)
            rows.append(arm_row(name, method, out, minutes=(time.time() - t0) / 60) if ok else
                        {"spec": name, "method": method, "failed": True})
    print_table(rows, methods)


def bake(spec: Path, out: Path, overrides: list[str], env: dict) -> bool:
    proc = subprocess.run([sys.executable, "-m", "promptbake.cli", "bake", str(spec), f"output_dir={out}",
                           *overrides], cwd=REPO, env=env)
    return proc.returncode == 0 and (out / "verdict.json").exists()


def fork(sft_run: Path, out: Path) -> None:
    """A copy of a finished bake's state, data and SFT stage (not its checkpoints, eval or export): the bake run
    in it with other rounds resumes after SFT, on exactly the same rows and adapter."""
    out.mkdir(parents=True)
    shutil.copy2(sft_run / "bake.json", out / "bake.json")
    shutil.copytree(sft_run / "data", out / "data")
    shutil.copytree(sft_run / "sft", out / "sft", ignore=shutil.ignore_patterns("checkpoints", "wandb"))


def arm_row(spec: str, method: str, run: Path, minutes: float | None) -> dict:
    from evals.drift import drift_summary
    from promptbake.core.contracts import EvalMetrics, Verdict, check_contract, read_contract
    from promptbake.rounds import kept as round_kept
    from sft.validation import read_curve

    verdict = read_contract(Verdict, run / "verdict.json").model_dump()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    check_contract(EvalMetrics, metrics, run / "eval" / "metrics.json")
    state = json.loads((run / "bake.json").read_text())
    stages = state["stages"]
    rounds = stages.get("rounds", {}).get("rounds", [])
    # the rounds the bake kept: those that passed every rule on more validation inputs than their start (a tie on
    # all rules with a higher mean rule pass rate is not kept, so it is not counted here either) and their drift
    # guard (promptbake/drift_guard.py)
    kept = [r for r in rounds if round_kept(r)]
    # the validation score the bake chose by: the kept round's best point, else SFT's best point
    choice = stages.get("replay_choice")
    sft_val = max((p.key for p in read_curve(Path(choice["sft"].get("dir", run / "sft")) if choice else run / "sft")),
                  default=None)
    val = kept[-1]["best"]["all_rules"] if kept else (sft_val[0] if sft_val else None)
    if stages.get("strength", {}).get("points"):  # the strength stage's choice, on the same validation slice
        strength = stages["strength"]
        val = next(p["all_rules"] for p in strength["points"] if p["strength"] == strength["strength"])
    # what the method did to the validation slice once it trained (best and last trained step of its first round;
    # the strength stage: its weakest candidate), whether or not the bake kept it
    trained = [p for p in read_curve(run / "rounds" / "1") if p.step > 0] if (run / "rounds" / "1").exists() else []
    moved = f"{max(p.all_rules for p in trained):.0%} / {trained[-1].all_rules:.0%}" if trained else "-"
    if stages.get("strength", {}).get("points"):
        weakest = min(stages["strength"]["points"], key=lambda p: p["strength"])
        moved = f"x{weakest['strength']:g}: {weakest['all_rules']:.0%}"
    train_s = sum(stages[s].get("time_s", 0) for s in ("data", "replay", "sft", "replay_choice", "rounds", "strength")
                  if s in stages)
    if "replay" in stages:
        as_kl = state["config"].get("replay", {}).get("loss") == "kl"
        repaired = " repaired" if state["config"].get("replay", {}).get("repair") else ""
        moved = f"{stages['replay']['replay_rows']} replay rows as a KL term" if as_kl else \
            f"+{stages['replay']['replay_rows']}{repaired} replay rows"
    if choice:
        guards = [g for g in (choice["sft_guard"], choice["replay_guard"]) if g]
        moved = (f"{choice['chosen']} kept (guard " + " -> ".join(cell(g["kept"]) for g in guards) + ", validation "
                 + " -> ".join(str(g["passing"]) for g in guards) + " inputs)")
    # the drift guard of each round validation would keep: the share of the base's correct general answers (to
    # questions the eval does not ask) SFT keeps, and each such round, refused when it lost more than the tolerance
    guards = [(r["round"], r["drift_guard"]) for r in rounds if r.get("drift_guard")]
    guard = (f"guard: SFT {cell(guards[0][1]['sft_kept'])}, " + ", ".join(
        f"round {k} {cell(g['round_kept'])}{'' if g['ok'] else ' refused'}" for k, g in guards)) if guards else None
    tuned = metrics["tuned_unprompted"]
    return {"spec": spec, "method": method, "validation": val, "sft_validation": sft_val[0] if sft_val else None,
            "held_out": tuned["all_rules_adherence"], "n": verdict["n"], "p": verdict["mcnemar_p"],
            "label": tuned.get("label_match"), "drift": drift_summary(metrics), "train_minutes": train_s / 60,
            "wall_minutes": minutes, "rounds": f"{len(kept)} of {len(rounds)}" if rounds else
            (f"strength {stages['strength']['strength']:g}" if "strength" in stages else "-"),
            "outcome": verdict["outcome"], "moved": moved, "guard": guard}


def cell(value, fmt: str = "{:.0%}") -> str:
    return "-" if value is None else fmt.format(value)


def print_table(rows: list[dict], methods: list[str]) -> None:
    print("\n| spec | method | validation all rules | trained round 1 on validation, best / last | held-out all rules "
          "(n) | label match | drift kept | KL | training minutes | rounds kept / strength | verdict (p) |")
    print("|---" * 11 + "|")
    for r in rows:
        if r.get("failed"):
            print(f"| {r['spec']} | {r['method']} | | | | | | | | | failed |")
            continue
        d = r["drift"] or {}
        print(f"| {r['spec']} | {r['method']} | {cell(r['validation'])} | {r.get('moved', '-')} "
              f"| {cell(r['held_out'])} ({r['n']}) "
              f"| {cell(r['label'])} | {cell(d.get('kept_correct'))} | {cell(d.get('kl_per_token'), '{:.2f}')} "
              f"| {r['train_minutes']:.1f} | {r['rounds']}{f' ({g})' if (g := r.get('guard')) else ''} "
              f"| {r['outcome']} ({r['p']:.2g}) |")
    sft = {r["spec"]: r for r in rows if r["method"] == "sft"}
    wins = {m: sum(1 for r in rows if r["method"] == m and not r.get("failed") and r["validation"] is not None
                   and sft[r["spec"]]["validation"] is not None and r["validation"] > sft[r["spec"]]["validation"])
            for m in methods}
    print("race validation_wins " + " ".join(f"{m}={n}" for m, n in wins.items()) + f" specs={len(sft)}")


if __name__ == "__main__":
    main()
