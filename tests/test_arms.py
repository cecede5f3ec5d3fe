"""The verdict's arms: the null arm (one fixed answer), the inference-time alternatives to training (the prompted
base's answers repaired, its best of n), and what the data build does before training so that a held-out
question is never a training question and a format-only checker is named."""

from __future__ import annotations

import json

from eval_recompute import assert_metrics_recompute, read_answers

from data_tools import build
from data_tools.format_only import best_fixed_answer, fixed_answers, format_only_warning
from data_tools.scoring import all_pass, repair_best_effort, score
from data_tools.spec import Rule, load_spec
from evals.arms import choose_at_inference
from evals.run import EvalConfig, main


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_best_effort_repair_fixes_what_it_can_and_never_uses_the_label():
    rules = [Rule(id="lower", text="lowercase", check={"kind": "lowercase"}),
             Rule(id="no_commas", text="no commas", check={"kind": "no_commas"}),
             Rule(id="exact", text="the label", check={"kind": "label_match"}),
             Rule(id="long", text="20+ words", check={"kind": "min_words", "n": 20})]
    # the mechanical rules are fixed; the label rule and min_words (no repair) stay failed, and the label is
    # never consulted (a deployment has none)
    assert repair_best_effort(rules, "q", "Hello, World") == "hello world"
    assert repair_best_effort(rules, "q", "fine") == "fine"


def test_best_of_n_chooses_by_the_checks_a_deployment_can_run():
    spec = load_spec_text("""
name: pick
rules:
  - {id: exact, text: the label, check: {kind: label_match}}
  - {id: lower, text: lowercase, check: {kind: lowercase}}
  - {id: short, text: at most 3 words, check: {kind: max_words, n: 3}}
inputs: {template: "x {a}", slots: {a: [1, 2]}}
""")
    # the first sample that passes the label-free checks, whatever the label says
    assert choose_at_inference(spec, "q", ["Yes", "no way", "yes"]) == ("no way", 1)
    # none passes: the repaired sample passing the most checks ("one two three" after cutting to 3 words)
    assert choose_at_inference(spec, "q", ["One two three four five", "ONE"]) == ("one two three", None)


def load_spec_text(text: str, tmp_path=None):
    import tempfile
    from pathlib import Path

    folder = Path(tmp_path or tempfile.mkdtemp())
    (folder / "spec.yaml").write_text(text)
    return load_spec(folder / "spec.yaml")


def test_the_eval_measures_constant_repaired_and_best_of_n_arms(tiny_spec, tiny_model_dir, tmp_path):
    spec = load_spec(tiny_spec)
    inputs = tmp_path / "eval_inputs.jsonl"
    questions = ["Tell me about owls.", "Tell me about clocks.", "Tell me about rain, please.", "What is tea?"]
    inputs.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}]}) + "\n" for q in questions))
    train = tmp_path / "sft_train.jsonl"
    train.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"q{i}"}],
                                         "completion": [{"role": "assistant", "content": c}]}) + "\n"
                             for i, c in enumerate(["ok: yes", "ok: cats purr", "ok: yes", "ok: yes"])))
    arms = ["base_prompted", "tuned_unprompted", "constant", "base_prompted_repaired", "base_prompted_best_of_n"]
    config = EvalConfig(spec=str(tiny_spec), eval_inputs=str(inputs), base_model=str(tiny_model_dir),
                        tuned_model=str(tiny_model_dir), arms=arms, train_rows=str(train), best_of_n=3, batch_size=4,
                        sampling={"max_new_tokens": 8}, report_to="none", output_dir=str(tmp_path / "eval"))
    metrics = main(config)
    answers = {arm: read_answers(tmp_path / "eval", arm) for arm in arms}
    for arm in arms:
        assert_metrics_recompute(metrics[arm], answers[arm], spec.rules)
        assert metrics[arm]["all_rules_passed"] == sum(a["all_rules"] for a in answers[arm])
        assert metrics[arm]["answer_diversity"] == len({" ".join(a["answer"].split()) for a in answers[arm]}) / 4
    # the repaired arm is the prompted base's own answers, repaired, at the prompted base's cost
    base = answers["base_prompted"]
    assert [a["answer"] for a in answers["base_prompted_repaired"]] == \
        [repair_best_effort(spec.rules, a["input"], a["answer"]) for a in base]
    assert metrics["base_prompted_repaired"]["prompt_tokens_per_request"] == \
        metrics["base_prompted"]["prompt_tokens_per_request"]
    # every tiny-spec rule has a repair: repairing reaches every input the checks can
    assert metrics["base_prompted_repaired"]["all_rules_adherence"] >= metrics["base_prompted"]["all_rules_adherence"]
    # best of 3 samples: 3 generations' tokens per request, one answer kept per input
    assert metrics["base_prompted_best_of_n"]["samples_per_input"] == 3 and len(answers["base_prompted_best_of_n"]) == 4
    # the null arm: the most frequent training completion, for every input, with no model and no tokens
    constant = metrics["constant"]
    assert constant["constant_answer"] == "ok: yes" and [a["answer"] for a in answers["constant"]] == ["ok: yes"] * 4
    assert constant["constant_source"] == "the most frequent training completion (3 of 4 rows)"
    assert constant["all_rules_adherence"] == 1.0 and constant["answer_diversity"] == 0.25
    assert constant["prompt_tokens_per_request"] == 0 and constant["generated_tokens_per_request"] == 0
    assert set(metrics["vs_base_prompted"]) == set(arms) - {"base_prompted"}
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "answer diversity" in report and "base_prompted_best_of_n" in report


def test_a_repaired_arm_needs_the_answers_it_repairs(tiny_spec):
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="add base_prompted to 'arms'"):
        EvalConfig(spec=str(tiny_spec), eval_inputs="x.jsonl", tuned_model="t",
                   arms=["tuned_unprompted", "base_prompted_repaired"])


PREFIX_RULE = "  - {id: prefix, text: Start with ok., check: {kind: starts_with, prefix: 'ok:'}}"


def thermostat_spec(tmp_path, rules: str, labels: bool = True, out: str = "data"):
    questions = [f"how do i reset the thermostat in room {n}" for n in ("one", "two")] + [
        "my thermostat screen is blank, what do i do", "My thermostat screen is blank, what do I do?",
        "why does the heater click at night", "can the app run two homes", "what battery does the sensor take",
        "is the warranty two years or three", "where is the serial number printed", "does it work with solar panels",
        "how long does a firmware update take", "can i lock the keypad"]
    (tmp_path / "inputs.jsonl").write_text("".join(
        json.dumps({"input": q, "answer": f"ok: answer {i}"}) + "\n" for i, q in enumerate(questions)))
    (tmp_path / "spec.yaml").write_text(
        f"name: thermo\nrules:\n{rules}\nexamples:\n  - {{input: hi, output: 'ok: hello'}}\n"
        f"inputs: {{path: inputs.jsonl{', label_field: answer' if labels else ''}}}\n"
        "teacher: {backend: labels, repair: false}\n"
        f"split: {{eval_fraction: 0.5, seed: 0}}\noutput_dir: {tmp_path / out}\n")
    return load_spec(tmp_path / "spec.yaml")


def test_build_drops_a_training_copy_of_a_held_out_question(tmp_path, capsys):
    """The thermostat pair differs only in case and punctuation: whichever side of the split each lands on, the
    training copy goes, before any teacher runs."""
    spec = thermostat_spec(tmp_path, PREFIX_RULE)
    from data_tools.inputs import load_inputs, split_inputs

    train, held_out = split_inputs(list(load_inputs(spec)), 0.5, 0)
    pair = {"my thermostat screen is blank, what do i do", "My thermostat screen is blank, what do I do?"}
    assert len(pair & set(held_out)) == 1 and len(pair & set(train)) == 1, "the seed must split the pair"
    manifest = build.main(spec)
    trained = {r["prompt"][0]["content"] for r in rows(tmp_path / "data" / "sft_train.jsonl")}
    assert not (pair & trained) and manifest["counts"]["leaked_train_inputs_dropped"] == 1
    assert "1 training input(s) near-duplicate a held-out input" in capsys.readouterr().out
    # the labels backend makes every training answer a label, and the manifest says so
    assert manifest["provenance"]["label_as_answer"] == manifest["counts"]["sft_rows"] == len(trained)
    assert manifest["provenance"]["teacher"] == 0


def test_build_and_lint_name_a_checker_that_a_fixed_answer_passes(tmp_path, capsys):
    spec = thermostat_spec(tmp_path, PREFIX_RULE)
    manifest = build.main(spec)
    out = capsys.readouterr().out
    assert "warning: a fixed answer passes 100% of your checks" in out and "they test format only" in out
    assert manifest["fixed_answer"]["pass_rate"] == 1.0 and manifest["fixed_answer"]["warning"]
    from data_tools.lint import LintConfig
    from data_tools.lint import main as lint

    report = lint(LintConfig(dataset=str(tmp_path / "data"), spec=str(tmp_path / "spec.yaml")))
    assert report["issue_counts"]["format_only_checks"] == 1
    # with a content check (the label), no fixed answer passes more than one input
    spec = thermostat_spec(tmp_path, "  - {id: exact, text: The label., check: {kind: label_match}}", out="data2")
    manifest = build.main(spec)
    assert manifest["fixed_answer"]["warning"] is None and manifest["fixed_answer"]["pass_rate"] <= 0.1


def test_fixed_answer_candidates_and_warning():
    spec = load_spec_text("""
name: fixed
rules:
  - {id: prefix, text: start with ok, check: {kind: starts_with, prefix: "ok:"}}
examples:
  - {input: a, output: "ok: a"}
  - {input: b, output: "no"}
inputs: {template: "x {a}", slots: {a: [1, 2]}}
""")
    candidates = fixed_answers(spec, ["ok: z", "ok: y", "ok: z"])
    assert candidates == [("ok: z", "the most frequent training completion (2 of 3 rows)"),
                          ("ok: a", "few-shot example 1's output"), ("no", "few-shot example 2's output")]
    best = best_fixed_answer(spec, [("q1", None), ("q2", None)], candidates[1:])
    assert best["answer"] == "ok: a" and best["pass_rate"] == 1.0
    assert format_only_warning(best).startswith("a fixed answer passes 100% of your checks (2 of 2 inputs")
    assert all(all_pass(score(spec.rules, q, "ok: a")) for q in ("q1", "q2"))


def test_label_match_reads_the_specs_label_checks_when_the_label_is_one_part_of_the_answer(tmp_path):
    # review_reply's shape: the label (a sentiment) is a tag inside the answer, never the whole answer; the spec's
    # python check that reads the label says whether they agree, so label match follows it (it read 0% before)
    (tmp_path / "tag_checks.py").write_text(
        "def tag(input, response, label):\n    return response.startswith(f'[{label}]')\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        spec = load_spec_text("""
name: tags
rules:
  - {id: tag, text: start with the tag, check: {kind: python, function: "tag_checks:tag"}}
  - {id: lower, text: lowercase, check: {kind: lowercase}}
inputs: {template: "x {a}", slots: {a: [1, 2]}}
""", tmp_path)
        from evals.arms import score_answers

        items = [("great", "positive"), ("awful", "negative"), ("meh", "mixed")]
        answers = [["[positive] thanks!"], ["[positive] sorry"], ["[mixed] Hm"]]
        records, _, metrics = score_answers(spec, items, answers, {})
    finally:
        sys.path.remove(str(tmp_path))
    assert [r["label_match"] for r in records] == [True, False, True]
    assert metrics["label_match_passed"] == 2 and metrics["label_match_per_field"] == {"tag": 2 / 3}
    # a label that is the whole answer is still compared whole
    (tmp_path / "p").mkdir()
    plain = load_spec_text("name: p\nrules:\n  - {id: lower, text: lowercase, check: {kind: lowercase}}\n"
                           "inputs: {template: 'x {a}', slots: {a: [1]}}\n", tmp_path / "p")
    assert score_answers(plain, [("q", "Yes")], [["yes"]], {})[2]["label_match"] == 1.0
