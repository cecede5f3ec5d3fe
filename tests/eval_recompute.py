"""Recompute an eval arm's metrics from its answers file, so a test can require the reported numbers to equal
what the written answers say (instead of merely lying between 0 and 1)."""

from __future__ import annotations

import json
from pathlib import Path

from data_tools.checks import normalise_label
from data_tools.scoring import failures, score, score_loose
from data_tools.spec import Rule
from evals.stats import wilson_ci95


def read_answers(eval_dir: Path, arm: str) -> list[dict]:
    return [json.loads(line) for line in (eval_dir / f"answers_{arm}.jsonl").read_text().splitlines()]


def assert_metrics_recompute(metrics: dict, answers: list[dict], rules: list[Rule]) -> None:
    """Each answer's recorded flags are its checks' verdicts, and the arm's rates are those flags counted."""
    rule_ids = [r.id for r in rules if r.check is not None]
    n = len(answers)
    for a in answers:
        assert a["failed"] == failures(score(rules, a["input"], a["answer"], a.get("label")))
        assert a["all_rules"] == (not a["failed"])
    strict = sum(a["all_rules"] for a in answers)
    assert metrics["n"] == n
    assert metrics["all_rules_adherence"] == strict / n
    assert metrics["all_rules_ci95"] == list(wilson_ci95(strict, n))
    assert metrics["per_rule"] == {rid: sum(rid not in a["failed"] for a in answers) / n for rid in rule_ids}

    loose = [score_loose(rules, a["input"], a["answer"], a.get("label")) for a in answers]
    assert metrics["all_rules_adherence_loose"] == sum(all(x.values()) for x in loose) / n
    assert metrics["per_rule_loose"] == {rid: sum(x[rid] for x in loose) / n for rid in rule_ids}

    labelled = [a for a in answers if "label" in a]
    if labelled:
        matches = [normalise_label(a["answer"]) == normalise_label(a["label"]) for a in labelled]
        assert [a["label_match"] for a in labelled] == matches
        assert metrics["label_match"] == sum(matches) / len(labelled)
    else:
        assert "label_match" not in metrics
