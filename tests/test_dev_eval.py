"""scripts/dev_eval.py's paired test: a demo lever is compared with the defaults answer by answer on the dev split
(run i against baseline i, the same teacher seed), and the exact McNemar p says whether the difference is more
than the noise between two bakes."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dev_eval", ROOT / "scripts" / "dev_eval.py")
dev_eval = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dev_eval)


def run_dir(tmp_path: Path, name: str, outcomes: dict[str, bool]) -> Path:
    dev = tmp_path / name / "dev"
    dev.mkdir(parents=True)
    rows = [{"input": q, "answer": "quick answer: ...", "all_rules": ok, "failed": {} if ok else {"on_topic": "x"}}
            for q, ok in outcomes.items()]
    (dev / "answers_tuned_unprompted.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / name


def test_pairs_answers_by_input_across_seeds(tmp_path):
    questions = [f"How do I do task {i}?" for i in range(20)]
    # seed 0: the lever passes 10 inputs the baseline fails, and fails none it passes
    lever0 = run_dir(tmp_path, "lever0", {q: True for q in questions})
    base0 = run_dir(tmp_path, "base0", {q: i >= 10 for i, q in enumerate(questions)})
    lever1 = run_dir(tmp_path, "lever1", {q: i % 2 == 0 for i, q in enumerate(questions)})
    # base1's file lists the inputs in reverse and passes the odd ones: paired by input, not by line, every input
    # of seed 1 is discordant, ten each way (by line the two files would agree everywhere)
    base1 = run_dir(tmp_path, "base1", {questions[19 - i]: i % 2 == 0 for i in range(20)})
    line = dev_eval.paired_comparison([lever0, lever1], [base0, base1])
    assert line.startswith("paired on dev: 30 vs 20 of 40 (only the runs pass 20, only the baselines 10)")
    assert "p=0.099" in line  # 20 vs 10 discordant pairs: 2 * P(Binomial(30, 1/2) <= 10)


def test_one_sided_gain_is_significant_and_mismatched_inputs_are_refused(tmp_path):
    questions = [f"q{i}" for i in range(12)]
    lever = run_dir(tmp_path, "lever", {q: True for q in questions})
    base = run_dir(tmp_path, "base", {q: i < 2 for i, q in enumerate(questions)})
    assert dev_eval.paired_comparison([lever], [base]).endswith("p=0.002")  # 10 of 10 discordant one way: 2 / 2**10
    other = run_dir(tmp_path, "other", {q + "?": True for q in questions})
    with pytest.raises(SystemExit, match="answered different inputs"):
        dev_eval.paired_comparison([lever], [other])


def test_drift_answers_pair_on_the_questions_the_base_gets_right(tmp_path):
    lever = run_dir(tmp_path, "lever", {"q": True})
    base = run_dir(tmp_path, "base", {"q": True})
    assert "\n" not in dev_eval.paired_comparison([lever], [base])  # no drift answers: the dev line only

    def drift(run: Path, tuned_correct: list[bool]) -> None:
        (run / "eval").mkdir()
        rows = [{"id": f"fact-{i:02d}", "base_correct": i < 6, "tuned_correct": ok}
                for i, ok in enumerate(tuned_correct)]
        (run / "eval" / "answers_drift.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    # eight questions, the base right on the first six; the questions it gets wrong never count, whatever the tuned
    # model says to them
    drift(lever, [True, True, True, True, False, True, True, True])
    drift(base, [True, False, False, False, False, True, False, False])
    line = dev_eval.paired_comparison([lever], [base]).splitlines()[1]
    assert line == ("paired on the base's correct answers to the bake's general questions: 5 vs 2 of 6 (only the "
                    "runs pass 3, only the baselines 0); exact McNemar p=0.25")
