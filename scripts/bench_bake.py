"""Benchmark: `promptbake bake` with its defaults and no per-spec overrides on every spec of the gallery.

    .venv/bin/python scripts/bench_bake.py [--specs demo_style,style_rules] [--out runs/bench_bake] [--fresh]

Each spec runs as a user runs it (the real `promptbake bake` command, in its own process) into
OUT/<spec>; an existing run directory resumes (its finished stages are reused) unless --fresh. Prints, per
spec, base_prompted vs tuned_unprompted all-rules adherence on the held-out inputs and the wall time, and
ends with

    specs_won=W specs_total=T min_gain=G max_minutes=M

where a spec is won when the tuned model without prompt follows every rule on >= the prompted base + 0.10 of
the held-out inputs, or on >= 0.95 (promptbake.verdict), min_gain is the smallest tuned - base difference and
max_minutes the longest bake. Target: W = T, each bake <= 20 minutes on a 2-core CPU for <= 200 inputs.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", help="comma-separated spec names (file stems); default: every spec")
    parser.add_argument("--out", default="runs/bench_bake")
    parser.add_argument("--fresh", action="store_true", help="delete earlier runs of these specs first")
    args = parser.parse_args()
    names = args.specs.split(",") if args.specs else sorted(p.stem for p in SPECS.glob("*.yaml"))
    env = {**os.environ, "WANDB_MODE": os.environ.get("WANDB_MODE", "offline")}
    results = []
    for name in names:
        spec, out = SPECS / f"{name}.yaml", Path(args.out) / name
        if not spec.exists():
            sys.exit(f"no spec {spec}")
        if args.fresh and out.exists():
            shutil.rmtree(out)
        print(f"\n##### bake {name} -> {out}", flush=True)
        t0 = time.time()
        proc = subprocess.run([sys.executable, "-m", "promptbake.cli", "bake", str(spec), f"output_dir={out}"],
                              cwd=REPO, env=env)
        minutes = (time.time() - t0) / 60
        verdict_path = out / "verdict.json"
        if proc.returncode != 0 or not verdict_path.exists():
            print(f"{name}: bake failed (exit {proc.returncode})", flush=True)
            results.append({"spec": name, "won": False, "gain": None, "minutes": minutes})
            continue
        v = json.loads(verdict_path.read_text())
        # a resumed bake's own time counts only what was left; report the stages' total
        state = json.loads((out / "bake.json").read_text())
        total = sum(s.get("time_s", 0) for s in state["stages"].values()) / 60
        results.append({"spec": name, "won": v["won"], "gain": v["tuned_unprompted"] - v["base_prompted"],
                        "minutes": max(minutes, total), "base": v["base_prompted"], "tuned": v["tuned_unprompted"]})
    print("\nspec                 base_prompted  tuned_unprompted  won  minutes")
    for r in results:
        if r["gain"] is None:
            print(f"{r['spec']:<20} {'failed':>13}  {'':>16}  {'no':>3}  {r['minutes']:7.1f}")
        else:
            print(f"{r['spec']:<20} {r['base']:>13.0%}  {r['tuned']:>16.0%}  {'yes' if r['won'] else 'no':>3}  "
                  f"{r['minutes']:7.1f}")
    gains = [r["gain"] for r in results if r["gain"] is not None]
    print(f"specs_won={sum(r['won'] for r in results)} specs_total={len(results)} "
          f"min_gain={min(gains) if gains else float('nan'):.2f} "
          f"max_minutes={max(r['minutes'] for r in results):.1f}")


if __name__ == "__main__":
    main()
