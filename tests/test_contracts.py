"""The files one stage hands the next are checked where they are read: an old or hand-edited metrics.json or
manifest fails with the file and the field named, not a KeyError inside the verdict."""

import json

import pytest

from promptbake.core.config import InputError
from promptbake.core.contracts import EvalMetrics, Manifest, check_contract, read_contract

ARM = {"n": 2, "all_rules_passed": 1, "all_rules_adherence": 0.5, "all_rules_ci95": [0.1, 0.9],
       "per_rule": {"lower": 0.5}, "answer_diversity": 1.0, "prompt_tokens_per_request": 10.0,
       "generated_tokens_per_request": 5.0, "latency_s_per_request": 0.1, "model": "m", "a_new_figure": 3}
MANIFEST = {"spec": "s", "spec_hash": "abc", "counts": {"inputs": 10, "train_inputs": 6, "eval_inputs": 4,
                                                         "sft_rows": 5},
            "raw_pass_rate_per_rule": {"lower": 0.5}, "raw_all_rules_pass_rate": 0.5, "time_s": 1.0}


def test_a_well_formed_metrics_file_reads_and_keeps_the_fields_no_reader_relies_on(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"base_prompted": ARM, "tuned_unprompted": ARM, "vs_base_prompted": {"x": 0.5},
                                "drift": {"kl": 0.1}}))
    metrics = read_contract(EvalMetrics, path)
    assert metrics.tuned_unprompted.all_rules_passed == 1 and metrics.constant is None
    assert metrics.tuned_unprompted.a_new_figure == 3 and metrics.drift == {"kl": 0.1}
    assert check_contract(Manifest, MANIFEST, "m.json").counts.sft_rows == 5


@pytest.mark.parametrize("broken, field", [
    ({"base_prompted": ARM}, "tuned_unprompted"),  # an arm missing
    ({"base_prompted": ARM, "tuned_unprompted": {k: v for k, v in ARM.items() if k != "all_rules_passed"}},
     "tuned_unprompted.all_rules_passed"),  # a run from before the verdict counted passes
    ({"base_prompted": ARM, "tuned_unprompted": {**ARM, "n": "many"}}, "tuned_unprompted.n"),
])
def test_a_broken_metrics_file_names_the_file_and_the_field(tmp_path, broken, field):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(InputError, match=f"{path}: field '{field}'"):
        read_contract(EvalMetrics, path)


def test_a_manifest_without_counts_and_a_file_that_is_not_json(tmp_path):
    with pytest.raises(InputError, match="m.json: field 'counts.sft_rows'"):
        check_contract(Manifest, {**MANIFEST, "counts": {"inputs": 1, "train_inputs": 1, "eval_inputs": 0}},
                       "m.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot read it as JSON"):
        read_contract(Manifest, tmp_path / "x.json")


def test_a_verdict_from_the_verdict_function_and_the_bake_checks_and_a_broken_one_names_its_field(tmp_path):
    """The verdict a bake writes (promptbake/verdict.py's judgement plus the run's facts) passes its contract; one
    without an outcome, or with an outcome the readers do not know, is refused with the file and field."""
    from promptbake.core.contracts import Verdict
    from promptbake.verdict import verdict

    arm = {**ARM, "n": 10, "all_rules_passed": 9, "all_rules_adherence": 0.9, "passed": [1] * 9 + [0]}
    base = {**ARM, "n": 10, "all_rules_passed": 1, "all_rules_adherence": 0.1, "passed": [1] + [0] * 9}
    judged = verdict({"base_prompted": base, "tuned_unprompted": arm, "vs_base_prompted": {}}, MANIFEST, [], 60)
    written = {**judged, "spec": "s", "run_dir": "runs/x", "time_s": 1.0, "budget_steps": 60, "kept_step": 30}
    assert check_contract(Verdict, written, "verdict.json").outcome == judged["outcome"]
    path = tmp_path / "verdict.json"
    for broken, field in [({k: v for k, v in written.items() if k != "outcome"}, "outcome"),
                          ({**written, "outcome": "great"}, "outcome")]:
        path.write_text(json.dumps(broken))
        with pytest.raises(InputError, match=f"{path}: field '{field}'"):
            read_contract(Verdict, path)
