"""Two runs compared answer by answer: the outcomes an eval wrote, paired by input, and the exact McNemar p.

Used by the scripts that ask whether a lever or a changed default moved the results by more than the noise
between two bakes (scripts/dev_eval.py on the demo's dev split, scripts/bench_bake.py --against on the gallery)."""

from __future__ import annotations

from pathlib import Path

from evals.stats import mcnemar_exact
from promptbake.core.io import iter_jsonl


def answer_outcomes(path: Path) -> dict[str, bool]:
    """Each input's all-rules outcome in an answers file (`answers_<arm>.jsonl`)."""
    return {row["input"]: row["all_rules"] for _, row in iter_jsonl(path)}


def drift_kept(path: Path) -> dict[str, bool] | None:
    """For each general question the base answers correctly, whether the tuned model still does, from a drift
    answers file (`answers_drift.jsonl`); None when there is none (the eval had no drift arm)."""
    if not path.exists():
        return None
    return {row["id"]: row["tuned_correct"] for _, row in iter_jsonl(path) if row.get("base_correct")}


def paired_line(what: str, pairs: list[tuple[dict[str, bool], dict[str, bool], str]], hint: str = "") -> str:
    """Pool (run, baseline) outcome maps input by input and say who alone passes which, and the exact McNemar p.
    A pair whose inputs differ is refused: its outcomes answer different questions."""
    ours, theirs = [], []
    for a, b, names in pairs:
        if a.keys() != b.keys():
            raise SystemExit(f"{names} do not pair on {what}: they answered different inputs{hint}")
        ours += [a[k] for k in sorted(a)]
        theirs += [b[k] for k in sorted(a)]
    only_ours = sum(x and not y for x, y in zip(ours, theirs))
    only_theirs = sum(y and not x for x, y in zip(ours, theirs))
    return (f"paired on {what}: {sum(ours)} vs {sum(theirs)} of {len(ours)} (only the runs pass {only_ours}, only "
            f"the baselines {only_theirs}); exact McNemar p={mcnemar_exact(ours, theirs):.2g}")
