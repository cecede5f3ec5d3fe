"""Checks that a fixed answer passes: one answer, repeated for every input, scored by the spec's checks.

When one fixed answer passes most inputs, the checks test the format, not the task: a model that learned a
template passes them as well as one that does the task. The data build and `data lint` warn before any
training; the eval's null arm (`constant`, evals/arms.py) gives the best fixed answer for every held-out input
and the verdict requires the tuned model to beat it.

    fixed_answers(spec, completions) -> [(answer, where it comes from), ...]
    best_fixed_answer(spec, items, candidates) -> {"answer", "source", "passed", "n", "pass_rate", "candidates"}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from data_tools.scoring import all_pass, score
from data_tools.spec import PromptSpec

WARN_AT = 0.5
"""A fixed answer that passes at least this share of the inputs makes the build and lint warn."""


def fixed_answers(spec: PromptSpec, completions: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The candidates: the most frequent of `completions` (the training answers) and each few-shot example's
    output, without repeats."""
    counts = Counter(c.strip() for c in completions)
    out = []
    if counts:
        answer, k = counts.most_common(1)[0]
        out.append((answer, f"the most frequent training completion ({k} of {sum(counts.values())} rows)"))
    out += [(e.output, f"few-shot example {i + 1}'s output") for i, e in enumerate(spec.examples)]
    seen: set[str] = set()
    return [(a, src) for a, src in out if not (a in seen or seen.add(a))]


def best_fixed_answer(spec: PromptSpec, items: list[tuple[str, str | dict | None]],
                      candidates: list[tuple[str, str]]) -> dict:
    """The candidate that passes every check on the most of `items` ((input, label) pairs), earliest of equals,
    with every candidate's pass rate. With no candidate, the empty answer."""
    if not candidates:
        candidates = [("", "the empty answer (no training answers or examples to take one from)")]
    scored = []
    for answer, source in candidates:
        passed = sum(all_pass(score(spec.rules, text, answer, label)) for text, label in items)
        scored.append({"answer": answer, "source": source, "passed": passed, "pass_rate": passed / len(items)})
    best = max(scored, key=lambda c: c["passed"])
    return {**best, "n": len(items), "candidates": scored}


def format_only_warning(best: dict) -> str | None:
    """The warning for a build or lint when the best fixed answer passes WARN_AT or more of the inputs."""
    if best["pass_rate"] < WARN_AT:
        return None
    return (f"a fixed answer passes {best['pass_rate']:.0%} of your checks ({best['passed']} of {best['n']} inputs; "
            f"{best['source']}: {best['answer']!r:.80}): they test format only; add a content check "
            "(on_topic, label_match, python, grounding) or labels")
