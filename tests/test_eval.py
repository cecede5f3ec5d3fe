"""Eval metrics: loose scoring, statistics, label matching, the pairwise judge and W&B logging."""

import json

import pytest

from data_tools.scoring import loose_variants, score, score_loose
from data_tools.spec import Rule
from evals.run import EvalConfig, main
from evals.stats import mcnemar_exact, wilson_ci95


def test_loose_scoring_forgives_preamble_and_markdown():
    rules = [Rule(id="lower", text="lowercase", check={"kind": "lowercase"}),
             Rule(id="prefix", text="start with ok:", check={"kind": "starts_with", "prefix": "ok:"})]
    answer = "Sure! Here you go:\nok: **all** lowercase"
    assert not any(r.passed for r in score(rules, "q", answer).values())
    assert score_loose(rules, "q", answer) == {"lower": True, "prefix": True}
    assert "ok: all lowercase" in loose_variants(answer)


def test_wilson_and_mcnemar_known_values():
    lo, hi = wilson_ci95(8, 10)
    assert round(lo, 3) == 0.490 and round(hi, 3) == 0.943
    assert wilson_ci95(0, 5)[0] == 0.0 and wilson_ci95(5, 5)[1] == 1.0
    # 10 discordant pairs all favouring one arm: p = 2 * 0.5**10
    assert mcnemar_exact([False] * 10 + [True] * 5, [True] * 15) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact([True, False], [True, False]) == 1.0


def test_eval_with_labels_judge_and_wandb(tiny_spec, tiny_model_dir, tmp_path, fresh_wandb):
    rows = tmp_path / "eval_inputs.jsonl"
    rows.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}], "label": a}) + "\n"
                            for q, a in [("name a color", "red"), ("name a fruit", "apple"), ("say yes", "yes")]))
    config = EvalConfig(spec=str(tiny_spec), eval_inputs=str(rows), base_model=str(tiny_model_dir),
                        arms=["base_prompted", "base_unprompted"], sampling={"max_new_tokens": 5}, batch_size=2,
                        judge={"model": str(tiny_model_dir), "against": "base_prompted"},
                        output_dir=str(tmp_path / "eval"))
    metrics = main(config)
    for arm in config.arms:
        assert metrics[arm]["n"] == 3 and 0 <= metrics[arm]["label_match"] <= 1
        assert metrics[arm]["all_rules_adherence"] <= metrics[arm]["all_rules_adherence_loose"]
        answers = [json.loads(x) for x in (tmp_path / "eval" / f"answers_{arm}.jsonl").read_text().splitlines()]
        assert [a["label"] for a in answers] == ["red", "apple", "yes"]
    judged = metrics["judge_vs_base_prompted"]["base_unprompted"]
    assert judged["wins"] + judged["losses"] + judged["ties"] == 3 and 0 <= judged["win_rate"] <= 1
    assert (tmp_path / "eval" / "report.html").exists() and (tmp_path / "eval" / "report.md").exists()
    # offline W&B writes logged tables as JSON files next to the run's binary log
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/eval/summary_*.table.json"))
    assert tables, "no offline W&B run with the eval tables was written"
    table = json.loads(tables[0].read_text())
    logged = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert logged["base_prompted"]["all_rules"] == metrics["base_prompted"]["all_rules_adherence"]
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/eval/answers_*.table.json"))


def test_judge_needs_one_answer_per_input(tiny_spec):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="set sampling.n to 1"):
        EvalConfig(spec=str(tiny_spec), eval_inputs="x.jsonl", judge={}, arms=["base_prompted", "base_unprompted"],
                   sampling={"n": 2, "temperature": 0.7})
