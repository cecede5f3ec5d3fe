"""Dataset lint at scale: a synthetic build directory of N TRL rows with planted duplicates and leaks, linted
by the real command (`python -m data_tools.lint`, in a subprocess), timed and measured.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_lint.py [--rows 1000000] [--model DIR] [--out DIR]

The rows look like a build's: conversational prompt-completion rows (`sft_train.jsonl`), held-out prompts
(`eval_inputs.jsonl`). Prompts come from three shapes (a question template, a customer message with a name,
a phone and an order number, free sentences); completions are 2-4 sentences of Zipf-distributed words, a
third of them opening with the same "quick answer:" prefix, so unrelated rows share common 3-shingles as real
answers do. Planted: near-duplicate completions (a copy of another row's answer with 0-4 word edits, under a
different prompt: similarities spread around the lint's 0.8 threshold), exact duplicate rows, and eval
prompts that are exact (re-cased) or edited copies of training prompts.

Ground truth comes from the lint's own similarity (`data_tools.near_dupes.jaccard` on the same shingles), so
a planted pair counts as expected only if its texts are at or above the threshold. The last line is
`rows=N seconds=S peak_rss_mb=M cpu_seconds=C near_found=F/P leaks_found=F/P extra_near=E`: S, M and C are the
lint command's wall time, peak resident memory and CPU time (its own process, `getrusage` of the child; on a
shared CPU, S grows with the other work and C much less), F/P the planted findings it reported, E the reported
near pairs that were not planted (chance similarity of generated rows).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_tools.lint import normalise  # noqa: E402  (after the path set-up)
from data_tools.near_dupes import jaccard, shingles  # noqa: E402
from promptbake.core.config import DEFAULT_MODEL  # noqa: E402

THRESHOLD = 0.8  # the lint's default near_duplicate_threshold
COMMON = ("the a to and of in is it you for on with that this be your at or as can are from by an not if "
          "will do have more about when all use then so each them".split())
ASKS = ["How do I", "What are three tips to", "What is the best way to", "List the steps to",
        "Why should I learn to", "Can you explain how to", "Is it hard to", "What do I need to"]
FIRST = ["Maria", "Tom", "Priya", "Ana", "Jonas", "Lena", "Omar", "Sofia", "Kevin", "Aisha", "Luca", "Mei"]
LAST = ["Lopez", "Baker", "Natarajan", "Silva", "Berg", "Park", "Haddad", "Rossi", "Smith", "Khan", "Bianchi"]


class Words:
    """A vocabulary of common words plus made-up ones, drawn with Zipf frequencies (rank^-1.1)."""

    def __init__(self, rng: np.random.Generator, size: int = 30_000):
        syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
        made_up = {"".join(rng.choice(syllables, rng.integers(2, 4))) for _ in range(size * 2)}
        self.vocab = np.array(list(COMMON) + sorted(made_up)[:size])
        weights = 1.0 / np.arange(1, len(self.vocab) + 1) ** 1.1
        self.cdf = np.cumsum(weights / weights.sum())
        self.rng = rng

    def draw(self, n: int) -> list[str]:
        return list(self.vocab[np.searchsorted(self.cdf, self.rng.random(n))])

    def sentence(self) -> str:
        words = self.draw(int(self.rng.integers(5, 15)))
        return " ".join([words[0].capitalize(), *words[1:]]) + "."


def prompt_text(words: Words, rng: np.random.Generator) -> str:
    shape = rng.integers(3)
    if shape == 0:
        return f"{ASKS[rng.integers(len(ASKS))]} {' '.join(words.draw(int(rng.integers(3, 8))))}?"
    if shape == 1:
        return (f"Hi, this is {FIRST[rng.integers(len(FIRST))]} {LAST[rng.integers(len(LAST))]}, call me at "
                f"{rng.integers(200, 999)}-555-{rng.integers(0, 9999):04d} about order "
                f"{chr(65 + rng.integers(26))}-{rng.integers(1000, 9999)}. {words.sentence()}")
    return " ".join(words.sentence() for _ in range(int(rng.integers(1, 3))))


def completion_text(words: Words, rng: np.random.Generator) -> str:
    text = " ".join(words.sentence() for _ in range(int(rng.integers(2, 5))))
    return "quick answer: " + text[0].lower() + text[1:] if rng.random() < 1 / 3 else text


def edit(text: str, n_edits: int, words: Words, rng: np.random.Generator) -> str:
    """`text` with `n_edits` random word substitutions, insertions or deletions."""
    tokens = text.split()
    for _ in range(n_edits):
        at = int(rng.integers(len(tokens)))
        kind = rng.integers(3)
        if kind == 0:
            tokens[at] = words.draw(1)[0]
        elif kind == 1:
            tokens.insert(at, words.draw(1)[0])
        elif len(tokens) > 1:
            del tokens[at]
    return " ".join(tokens)


def make_dataset(out: Path, n_rows: int, seed: int = 0) -> dict:
    """Write sft_train.jsonl and eval_inputs.jsonl under `out`; returns the planted findings by line number."""
    rng = np.random.default_rng(seed)
    words = Words(rng)
    n_near, n_exact, n_eval = n_rows // 100, n_rows // 1000, max(n_rows // 100, 30)
    n_plain = n_rows - n_near - n_exact
    pairs = [(prompt_text(words, rng), completion_text(words, rng)) for _ in range(n_plain)]
    sources = rng.choice(n_plain, n_near + n_exact, replace=False)
    near_src, exact_src = sources[:n_near], sources[n_near:]
    pairs += [(prompt_text(words, rng), edit(pairs[s][1], int(rng.integers(0, 5)), words, rng)) for s in near_src]
    pairs += [pairs[s] for s in exact_src]
    order = rng.permutation(len(pairs))  # line of pairs[k] is position[k] + 1
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    with open(out / "sft_train.jsonl", "w", encoding="utf-8") as f:
        for k in order:
            p, c = pairs[k]
            f.write(json.dumps({"prompt": [{"role": "user", "content": p}],
                                "completion": [{"role": "assistant", "content": c}]}) + "\n")

    def line(k: int) -> int:
        return int(position[k]) + 1

    near = {tuple(sorted((line(s), line(n_plain + i)))) for i, s in enumerate(near_src)
            if jaccard(shingles(pairs[s][1]), shingles(pairs[n_plain + i][1])) >= THRESHOLD}
    leaks, evals = set(), []
    for i, s in enumerate(rng.choice(n_plain, n_eval, replace=False)):
        kind = i % 3  # fresh, exact (re-cased) copy, edited copy
        text = (prompt_text(words, rng), pairs[s][0].upper() + " ",
                edit(pairs[s][0], int(rng.integers(1, 3)), words, rng))[kind]
        evals.append(text)
        if kind == 1 or (kind == 2 and (normalise(text) == normalise(pairs[s][0]) or
                                        jaccard(shingles(text), shingles(pairs[s][0])) >= THRESHOLD)):
            leaks.add(i + 1)
    with open(out / "eval_inputs.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"prompt": [{"role": "user", "content": t}]}) + "\n" for t in evals)
    return {"near": near, "leaks": leaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="training rows to generate and lint")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="the model whose tokenizer measures row lengths")
    parser.add_argument("--out", help="directory for the dataset and lint reports (default: a temporary one)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_lint_") as tmp:
        out = Path(args.out or tmp)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        planted = make_dataset(out, args.rows, args.seed)
        print(f"generated {args.rows} rows in {time.perf_counter() - start:.0f} s -> {out}", flush=True)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "data_tools.lint", str(out), f"model={args.model}"], cwd=REPO,
                       check=True)
        seconds = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the lint process's own: generation is not in it
        peak_mb, cpu = usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # ru_maxrss is in KiB on Linux
        report = json.loads((out / "lint" / "lint.json").read_text())
    # a planted copy with no edit is the same completion: the lint reports it as a repeated completion group
    found_near = {tuple(n["lines"]) for n in report["near_duplicates"]} | {
        pair for r in report["repeated_completions"] for pair in combinations(sorted(r["lines"]), 2)}
    found_leaks = {x["eval_line"] for x in report["leakage"]}
    print(f"rows={report['rows']} seconds={seconds:.1f} peak_rss_mb={peak_mb:.0f} cpu_seconds={cpu:.1f} "
          f"near_found={len(planted['near'] & found_near)}/{len(planted['near'])} "
          f"leaks_found={len(planted['leaks'] & found_leaks)}/{len(planted['leaks'])} "
          f"extra_near={len(found_near - planted['near'])}")


if __name__ == "__main__":
    main()
