"""`promptbake bake` on a tiny random model: the stages, the validation slice and curve, the kept adapter, the
verdict, resume after a finished stage, and the refusal of a changed spec."""

import json
import re
import shutil
from pathlib import Path

import pytest

from data_tools.inputs import load_inputs
from data_tools.spec import load_spec
from promptbake.bake import BudgetSpec, ValidationSpec, budget_steps, load_bake, validation_size
from promptbake.bake import main as bake
from promptbake.core.config import InputError, load_config
from promptbake.verdict import is_won, min_decisive_n, verdict

FAST = ["report_to=none", "export=false", "drift=false", "synthesis_min_inputs=0", "budget.min_steps=4",
        "budget.max_steps=6",
        "validation.fraction=0.3", "validation.min_inputs=2", "validation.min_train_inputs=4",
        "validation.evaluations=3", "validation.patience=2", "eval_batch_size=8"]


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_budget_comes_from_the_data():
    b = BudgetSpec(epochs=8, min_steps=60, max_steps=240)
    assert budget_steps(35, 8, b) == 60      # few rows: the floor
    assert budget_steps(100, 8, b) == 100    # 8 epochs of 100 rows at batch 8
    assert budget_steps(1000, 8, b) == 240   # many rows: the ceiling


def test_validation_slice_size_or_none():
    v = ValidationSpec(fraction=0.2, min_inputs=8, max_inputs=24, min_train_inputs=32)
    assert validation_size(84, v) == 17
    assert validation_size(500, v) == 24          # capped
    assert validation_size(40, v) == 8            # raised to the minimum: 32 inputs still train
    assert validation_size(30, v) == 0            # too few: no validation, a fixed budget


@pytest.fixture(scope="module")
def bake_spec(tiny_model_dir, tmp_path_factory) -> Path:
    from conftest import TINY_SPEC

    tmp = tmp_path_factory.mktemp("bake-spec")
    (tmp / "spec.yaml").write_text(TINY_SPEC.format(model=tiny_model_dir, out=tmp / "data"))
    return tmp / "spec.yaml"


def test_the_plan_is_made_once_from_the_spec_and_the_config(bake_spec, tiny_model_dir, tmp_path):
    from promptbake.bake_plan import data_spec, make_plan

    config, overrides = load_bake(str(bake_spec), [*FAST, f"model={tiny_model_dir}", "inference_arms=false",
                                                   "drift=true", "spec.teacher.sampling.max_new_tokens=80"])
    user_spec = load_spec(bake_spec, overrides)
    plan = make_plan(user_spec, config, tmp_path / "run")
    assert plan.arms == ["base_prompted", "tuned_unprompted", "constant", "drift"] and not plan.judge  # not asked
    assert make_plan(user_spec, config.model_copy(update={"judge_model": str(tiny_model_dir)}), tmp_path).judge
    assert plan.max_new_tokens == 80 and plan.validation_inputs == 3 and plan.synthesis_min_inputs == 0
    assert "validation on 3 inputs" in plan.describe() and str(tmp_path / "run") in plan.describe()
    spec = data_spec(user_spec, plan)
    assert spec.output_dir == str(tmp_path / "run" / "data") and spec.split.validation_size == 3
    assert user_spec.split.validation_size != 3  # the user's spec is left as it was
    # the data stage's spec is the one the same overrides, given as strings, load: its hash (which claims the
    # build directory) is unchanged, so a run started before the plan existed resumes
    reloaded = load_spec(bake_spec, [*overrides, f"output_dir={tmp_path / 'run' / 'data'}",
                                     "split.validation_size=3", "synthesis.min_inputs=0"])
    assert spec.content_hash() == reloaded.content_hash()
    assert spec.model_dump() == reloaded.model_dump()


@pytest.fixture(scope="module")
def bake_run(bake_spec, tiny_model_dir, tmp_path_factory):
    """One bake shared by the tests that read it (training is the slow part)."""
    tiny_spec = bake_spec
    out = tmp_path_factory.mktemp("bake-run") / "bake"
    recipe = Path(__file__).resolve().parents[1] / "configs" / "sft" / "bake_lora.yaml"
    overrides = [*FAST, "judge=true", f"model={tiny_model_dir}", f"output_dir={out}", f"recipe={recipe}"]
    config, spec_overrides = load_bake(str(tiny_spec), overrides)
    result = bake(config, spec_overrides)
    return out, result, overrides


def test_bake_runs_every_stage_with_a_validation_slice(bake_run, bake_spec):
    out, result, _ = bake_run
    state = json.loads((out / "bake.json").read_text())
    assert list(state["stages"]) == ["data", "sft", "eval"]
    # the plan, computed once before any model loaded, is what the stages did
    plan = state["plan"]
    assert plan["validation_inputs"] == 3 and plan["validation_evaluations"] == 3 and plan["max_new_tokens"] == 64
    assert plan["arms"] == ["base_prompted", "tuned_unprompted", "constant", "base_prompted_repaired",
                            "base_prompted_best_of_n"] and plan["judge"] is True
    # where the time went, inside each stage
    assert {"synthesis", "teacher"} <= set(result["profile_s"]["data"])
    assert set(result["profile_s"]["sft"]) == {"validation", "training"}
    assert {"load_base", "base_prompted", "base_prompted_best_of_n", "load_tuned", "tuned_unprompted",
            "judge"} <= set(result["profile_s"]["eval"])
    # the validation slice: from the training side, never trained on, never in the eval split
    val = {r["prompt"][0]["content"] for r in lines(out / "data" / "val_inputs.jsonl")}
    trained = {r["prompt"][0]["content"] for r in lines(out / "data" / "sft_train.jsonl")}
    held_out = {r["prompt"][0]["content"] for r in lines(out / "data" / "eval_inputs.jsonl")}
    assert len(val) == 3 and not val & trained and not val & held_out
    assert len(val) + len(held_out) + json.loads((out / "data" / "manifest.json").read_text())[
        "counts"]["train_inputs"] == len(load_inputs(load_spec(bake_spec)))
    # the curve: step 0 (before training), then every ceil(6 / 3) = 2 steps, until the budget or a stop
    curve = lines(out / "sft" / "validation.jsonl")
    steps = [p["step"] for p in curve]
    assert steps[0] == 0 and steps == sorted(steps) and all(s % 2 == 0 for s in steps) and steps[-1] <= 6
    assert set(curve[0]["per_rule"]) == {"lowercase", "no_commas", "short", "prefix"}
    # the kept adapter is the best point of the curve (earliest among equals)
    best = max(curve, key=lambda p: (p["all_rules"], sum(p["per_rule"].values()) / 4))
    info = json.loads((out / "sft" / "best_adapter" / "promptbake_run.json").read_text())
    assert info["step"] == best["step"] and (out / "sft" / "best_adapter" / "adapter_config.json").exists()
    assert state["stages"]["sft"]["tuned_model"] == str(out / "sft" / "best_adapter")
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert result["tuned_unprompted"] == metrics["tuned_unprompted"]["all_rules_adherence"]
    assert result == json.loads((out / "verdict.json").read_text())
    # the null arm and the inference-time alternatives ran beside the two arms, and the content judge (the tiny
    # spec has no labels) compared every arm with the prompted base
    for arm in ("constant", "base_prompted_repaired", "base_prompted_best_of_n"):
        assert metrics[arm]["n"] == metrics["tuned_unprompted"]["n"], arm
    assert result["constant"] == metrics["constant"]["all_rules_adherence"]
    judged = metrics["judge_vs_base_prompted"]["tuned_unprompted"]
    assert result["judge"] == judged and judged["wins"] + judged["losses"] + judged["ties"] == metrics[
        "tuned_unprompted"]["n"]
    assert result["outcome"] in ("won", "undecided", "not won") and result["won"] == (result["outcome"] == "won")
    manifest = json.loads((out / "data" / "manifest.json").read_text())
    sources = ("teacher", "teacher_repaired", "teacher_with_label_hint", "label_repaired", "label_as_answer")
    assert sum(manifest["provenance"][k] for k in sources) == manifest["counts"]["sft_rows"]
    assert result["provenance"] == manifest["provenance"]
    report = (out / "report.md").read_text()
    assert result["statement"] in report and "## Validation curve" in report
    assert "## Arms (held-out inputs)" in report and "base_prompted_best_of_n" in report
    assert "**Provenance:** training rows by source: teacher" in report
    page = (out / "report.html").read_text()
    # one point per measured step on the all-rules line, and the loss chart beside it
    assert page.count('<title>all rules at ') == len(curve) and 'id="curve-0-loss"' in page


def test_bake_resumes_finished_stages_and_refuses_a_changed_spec(bake_run, bake_spec, capsys, monkeypatch):
    tiny_spec = bake_spec
    out, result, overrides = bake_run
    import sft.train

    monkeypatch.setattr(sft.train, "main", lambda *a, **k: pytest.fail("a finished SFT stage ran again"))
    config, spec_overrides = load_bake(str(tiny_spec), overrides)
    again = bake(config, spec_overrides)
    assert "2/4 train: SFT on bare inputs, validated by the spec's checks: done earlier" in capsys.readouterr().out
    assert again["tuned_unprompted"] == result["tuned_unprompted"]
    # only values that differ from the defaults are compared: a field spelled out at its default (as a field that
    # a promptbake upgrade adds would be) is the same run
    config, spec_overrides = load_bake(str(tiny_spec), [*overrides, "rounds.method=none",
                                                         "spec.teacher.label_fallback=true"])
    bake(config, spec_overrides)

    # the decode batch changes no answer: a resume (after running out of memory, say) may take another one
    config, spec_overrides = load_bake(str(tiny_spec), [*overrides, "spec.teacher.batch_size=3"])
    bake(config, spec_overrides)
    assert json.loads((out / "bake.json").read_text())["spec"]["teacher"]["batch_size"] == 3
    config, spec_overrides = load_bake(str(tiny_spec), [*overrides, "spec.teacher.sampling.n=3"])
    with pytest.raises(InputError, match=r"different spec \(changed: teacher\.sampling\.n\)"):
        bake(config, spec_overrides)
    config, spec_overrides = load_bake(str(tiny_spec), [*overrides, "budget.max_steps=9"])
    with pytest.raises(InputError, match=r"different bake config \(changed: budget\.max_steps, which its finished "
                                         r"sft stage depends on\)"):
        bake(config, spec_overrides)
    # a change to a stage that has not run is taken, and the finished stages after it run again
    monkeypatch.setattr("promptbake.bake.evaluate", lambda c, s: pytest.fail("eval before export changed"))
    config, spec_overrides = load_bake(str(tiny_spec), [*overrides[:1], "export=true", *overrides[2:]])
    monkeypatch.setattr("promptbake.bake.export", lambda tuned, out: {"merged": str(out), "from": tuned})
    bake(config, spec_overrides)
    state = json.loads((out / "bake.json").read_text())
    assert "export" not in state["config"]  # back at its default, true
    assert state["stages"]["export"]["from"] == state["stages"]["sft"]["tuned_model"]


def test_a_stage_recorded_by_an_older_promptbake_is_refused_with_its_field_named(bake_run, bake_spec, tmp_path):
    out, _, overrides = bake_run
    old = tmp_path / "old-run"
    shutil.copytree(out, old)
    config, spec_overrides = load_bake(str(bake_spec), [*overrides, f"output_dir={old}"])
    state = json.loads((old / "bake.json").read_text())
    del state["stages"]["eval"]["tuned_unprompted"]["all_rules_passed"]  # written before the verdict counted it
    # the config as this call gives it (other tests resume the shared run with other settings)
    state["config"] = config.model_dump(mode="json", exclude={"output_dir"}, exclude_defaults=True)
    del state["plan"]  # the plan the last of them made, not this call's (a run recorded before plans: not compared)
    (old / "bake.json").write_text(json.dumps(state))
    with pytest.raises(InputError, match=r"metrics.json \(as recorded in .*bake.json\): field "
                                         r"'tuned_unprompted.all_rules_passed': Field required"):
        bake(config, spec_overrides)


def test_bake_with_drift_runs_the_drift_arm_and_carries_its_warning(bake_spec, tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bake"
    recipe = Path(__file__).resolve().parents[1] / "configs" / "sft" / "bake_lora.yaml"
    config, spec_overrides = load_bake(str(bake_spec), [*FAST, "drift=true", f"model={tiny_model_dir}",
                                                        f"output_dir={out}", f"recipe={recipe}"])
    result = bake(config, spec_overrides)
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    drift = metrics["drift"]
    # the bake's default slice of the general questions, its figures in the verdict, printed and in the report
    assert drift["n"] == 40 and len(lines(out / "eval" / "answers_drift.jsonl")) == 40
    assert result["drift_warning"] == drift["warning"] == json.loads((out / "verdict.json").read_text())[
        "drift_warning"]
    summary = result["drift"]
    assert summary["n"] == 40 and summary["kl_per_token"] == drift["kl_per_token"]  # None: the tiny base says nothing
    assert summary["kept_correct"] == drift["kept_correct"]
    assert summary["statement"].startswith("off the spec (40 general questions, no prompt): KL from the base ")
    printed, report = capsys.readouterr().out, (out / "report.md").read_text()
    assert f"drift {summary['statement']}" in printed and f"**Drift** {summary['statement']}" in report
    assert (f"drift warning: {drift['warning']}" in printed) == bool(drift["warning"])
    assert (f"**Drift warning:** {drift['warning']}" in report) == bool(drift["warning"])


def test_a_changed_field_restarts_a_stage_killed_part_way_instead_of_resuming_it(tmp_path, capsys):
    """budget.max_steps changed on a bake killed in SFT: checkpoint-18 of the old 66-step run must not be resumed."""
    from promptbake.bake import RunState

    run = tmp_path / "run"
    RunState(run, {"name": "s"}, {"budget": {"max_steps": 66}}, "spec.yaml").finish("data", {"counts": {}})
    (run / "data").mkdir()
    (run / "sft" / "checkpoints" / "checkpoint-18").mkdir(parents=True)
    state = RunState(run, {"name": "s"}, {"budget": {"max_steps": 30}}, "spec.yaml")
    assert (run / "sft").exists()  # checked first; nothing is removed until the bake begins
    state.begin()
    assert not (run / "sft").exists() and (run / "data").exists() and state.done("data") is not None
    out = capsys.readouterr().out
    assert "bake config changed (budget.max_steps): the sft stage has not finished; it was started under the old " \
           f"settings, so it starts again from scratch (removed {run / 'sft'})" in out


def test_a_plan_changed_by_a_new_default_refuses_the_resume_of_the_stages_it_shaped(tmp_path, capsys):
    """The recorded config holds only what the user gave, so a promptbake upgrade that changes a default (stop 44:
    the validation slice, 17 -> 25 demo inputs) leaves it as it was; the plan shows the change. A finished data
    stage chose its rows around the old slice: the resume is refused, naming the plan's figure. A plan change
    whose stage has not finished runs that stage again."""
    from promptbake.bake import RunState

    plan = {"run_dir": "runs/demo", "inputs": 120, "train_side_inputs": 84, "validation_inputs": 17,
            "eval_batch_size": 64, "export": True}
    run = tmp_path / "run"
    first = RunState(run, {"name": "s"}, {}, "spec.yaml", plan_dump=plan)
    first.data["plan"] = plan  # as the bake records it
    first.finish("data", {"counts": {}})
    with pytest.raises(InputError, match=r"different bake config \(changed: plan\.validation_inputs 17 -> 25, which "
                                         r"its finished data stage depends on\) \(no field you gave changed: a "
                                         r"default of this promptbake version, or an input file, did\)"):
        RunState(run, {"name": "s"}, {}, "spec.yaml", plan_dump={**plan, "validation_inputs": 25})
    RunState(run, {"name": "s"}, {}, "spec.yaml", plan_dump={**plan, "run_dir": "elsewhere"})  # not a figure
    (run / "eval").mkdir()
    state = RunState(run, {"name": "s"}, {}, "spec.yaml", plan_dump={**plan, "eval_batch_size": 16})
    state.begin()
    assert not (run / "eval").exists() and state.done("data") is not None
    assert "bake config changed (plan.eval_batch_size 64 -> 16) (no field you gave changed" in capsys.readouterr().out


def test_an_edited_python_check_module_refuses_a_resume_that_would_keep_the_old_verdict(tmp_path):
    """A python check's module edited after the bake started (the YAML unchanged): the finished stages chose rows,
    step and verdict by the old check, so resuming is refused, naming the module; the module it imports from
    beside it counts too, and a run recorded before the fingerprints existed resumes."""
    from data_tools.spec import load_spec
    from promptbake.bake import RunState

    folder = tmp_path / "spec"
    folder.mkdir()
    (folder / "pb_words_base.py").write_text("def has_words(text):\n    return bool(text.split())\n")
    (folder / "pb_words_check.py").write_text(
        "from pb_words_base import has_words\n\ndef answered(input, response):\n    return has_words(response)\n")
    (folder / "spec.yaml").write_text(
        "name: s\nsystem_prompt: Answer.\nrules:\n  - id: answered\n    text: Answer something.\n"
        "    check: {kind: python, function: 'pb_words_check:answered'}\n"
        "inputs:\n  template: '{q}?'\n  slots: {q: [why, how]}\n")
    spec = load_spec(folder / "spec.yaml")
    sources = spec.check_sources()
    assert set(sources) == {"pb_words_base", "pb_words_check"}
    run = tmp_path / "run"
    RunState(run, {"name": "s"}, {}, "spec.yaml", check_sources=sources).finish("data", {"counts": {}})
    RunState(run, {"name": "s"}, {}, "spec.yaml", check_sources=spec.check_sources())  # the same sources resume
    (folder / "pb_words_base.py").write_text("def has_words(text):\n    return len(text.split()) > 2\n")
    with pytest.raises(InputError, match=r"another version of the python check module pb_words_base .*"
                                         rf"delete {re.escape(str(run))}"):
        RunState(run, {"name": "s"}, {}, "spec.yaml", check_sources=spec.check_sources())
    assert json.loads((run / "bake.json").read_text())["check_sources"] == sources  # nothing rewritten
    state = json.loads((run / "bake.json").read_text())
    del state["check_sources"]  # a run started before the record existed
    (run / "bake.json").write_text(json.dumps(state))
    resumed = RunState(run, {"name": "s"}, {}, "spec.yaml", check_sources=spec.check_sources())
    assert resumed.done("data") is not None


def test_bad_bake_override_fails_before_any_model_loads(tiny_spec, tmp_path):
    with pytest.raises(InputError, match="budget.min_steps"):
        load_bake(str(tiny_spec), ["budget.min_steps=0"])
    config, spec_overrides = load_bake(str(tiny_spec), [f"output_dir={tmp_path / 'b'}"])
    with pytest.raises(InputError, match="teacher.sampling.n"):
        bake(config, ["teacher.sampling.n=0"])
    assert not (tmp_path / "b").exists()


def metrics_for(base: float, tuned: float, p: float, per_rule_tuned: dict, per_rule_base: dict) -> dict:
    cost = {"prompt_tokens_per_request": 200.0, "generated_tokens_per_request": 40.0, "latency_s_per_request": 0.4}
    return {"base_prompted": {"all_rules_adherence": base, "per_rule": per_rule_base, "n": 40, **cost},
            "tuned_unprompted": {"all_rules_adherence": tuned, "per_rule": per_rule_tuned, "n": 40, **cost},
            "vs_base_prompted": {"tuned_unprompted": p}}


MANIFEST = {"counts": {"sft_rows": 80, "rejects": 10}, "raw_pass_rate_per_rule": {"a": 0.9, "b": 0.4},
            "raw_all_rules_pass_rate": 0.35}


def point(step, all_rules, a=0.5, b=0.5):
    return {"step": step, "loss": 1.0, "all_rules": all_rules, "per_rule": {"a": a, "b": b}}


def test_verdict_wins_by_margin_or_absolute():
    won = verdict(metrics_for(0.2, 0.31, 0.01, {"a": 1, "b": 0.31}, {"a": 1, "b": 0.2}), MANIFEST, [], 60)
    assert won["won"] and won["outcome"] == "won" and won["relation"] == "beats"
    assert won["diagnosis"] == [] and won["try_first"] is None
    close = verdict(metrics_for(0.2, 0.275, 0.3, {"a": 1, "b": 0.3}, {"a": 1, "b": 0.2}), MANIFEST, [], 60)
    assert not close["won"] and close["outcome"] == "not won" and close["relation"] == "is not distinguishable from"


def arm(passed: int, n: int, **extra) -> dict:
    return {"all_rules_passed": passed, "all_rules_adherence": passed / n, "n": n, "per_rule": {},
            "prompt_tokens_per_request": 200.0, "generated_tokens_per_request": 40.0, "latency_s_per_request": 0.4,
            **extra}


def test_verdict_margin_is_exact_and_needs_significance():
    """3/10 vs 2/10 is exactly +0.10 (floats say 0.30000000000000004 >= 0.3 only by luck of rounding); and a
    margin met on too few inputs is undecided, with the number of inputs that could decide it."""
    assert is_won(2, 3, 10) and not is_won(2, 2, 10) and is_won(0, 19, 20)
    assert min_decisive_n() == 51  # 6 discordant pairs (p = 2 / 2**6 < 0.05), >= 10 points of n
    tiny = verdict({"base_prompted": arm(1, 6), "tuned_unprompted": arm(2, 6),
                    "vs_base_prompted": {"tuned_unprompted": 1.0}}, MANIFEST, [], 60)
    assert tiny["outcome"] == "undecided" and not tiny["won"]
    assert "n=6 held-out inputs with 1 already passed by the prompted base cannot show a significant gain; " \
           "give at least 51" in tiny["statement"]
    assert tiny["try_first"].startswith("give at least 51 held-out inputs")
    near_top = verdict({"base_prompted": arm(36, 40), "tuned_unprompted": arm(38, 40),
                        "vs_base_prompted": {"tuned_unprompted": 0.5}}, MANIFEST, [], 60)
    assert near_top["outcome"] == "undecided" and "with 36 already passed" in near_top["statement"]
    small = verdict({"base_prompted": arm(10, 40), "tuned_unprompted": arm(15, 40),
                     "vs_base_prompted": {"tuned_unprompted": 0.2}}, MANIFEST, [], 60)
    assert "the gain is not significant (p=0.2); n=40 held-out inputs cannot show a 10-point gain" in \
        small["statement"]
    large = verdict({"base_prompted": arm(30, 60), "tuned_unprompted": arm(37, 60),
                     "vs_base_prompted": {"tuned_unprompted": 0.2}}, MANIFEST, [], 60)
    assert large["outcome"] == "undecided" and large["statement"].endswith("the gain is not significant (p=0.2)")


def test_a_fixed_answer_or_wrong_content_is_not_a_win():
    base, tuned = arm(2, 36), arm(36, 36, answer_diversity=0.03)
    constant = arm(36, 36, constant_answer="quick answer: yes.", constant_source="few-shot example 1's output",
                   prompt_tokens_per_request=0.0, generated_tokens_per_request=0.0, latency_s_per_request=0.0)
    template = verdict({"base_prompted": base, "tuned_unprompted": tuned, "constant": constant,
                        "vs_base_prompted": {"tuned_unprompted": 1e-10}}, MANIFEST, [], 60)
    assert template["outcome"] == "not won" and template["relation"] == "beats"
    assert "a fixed answer (few-shot example 1's output: 'quick answer: yes.') passes 100%" in template["statement"]
    assert "at least as many inputs as the tuned model" in template["statement"]
    near = verdict({"base_prompted": base, "tuned_unprompted": tuned, "vs_base_prompted": {"tuned_unprompted": 1e-10},
                    "constant": {**constant, "all_rules_passed": 33, "all_rules_adherence": 33 / 36}}, MANIFEST, [], 60)
    assert "within 10 points of the tuned model: the checks cannot tell the tuned model from a template" in \
        near["statement"] and near["outcome"] == "not won"
    assert "answer diversity 3%" in template["statement"]
    wrong = verdict({"base_prompted": arm(2, 36, label_match=0.5), "tuned_unprompted": arm(36, 36, label_match=0.2),
                     "constant": arm(3, 36), "vs_base_prompted": {"tuned_unprompted": 1e-10}}, MANIFEST, [], 60)
    assert wrong["outcome"] == "not won" and "label match is below the prompted base's (20% vs 50%)" in \
        wrong["statement"]


def test_verdict_names_the_cheapest_arm_that_reaches_the_tuned_model():
    metrics = {"base_prompted": arm(2, 36), "tuned_unprompted": arm(35, 36, prompt_tokens_per_request=40.0),
               "base_prompted_repaired": arm(35, 36), "vs_base_prompted": {"tuned_unprompted": 1e-9},
               "base_prompted_best_of_n": arm(36, 36, generated_tokens_per_request=160.0)}
    v = verdict(metrics, MANIFEST, [], 60)
    assert v["won"] and v["cheapest_reaching_tuned"] == "base_prompted_repaired"
    assert v["alternatives"].startswith("training bought nothing over repair: base_prompted_repaired reaches 97%")
    metrics["base_prompted_repaired"] = arm(20, 36)
    metrics["base_prompted_best_of_n"] = arm(30, 36)
    v = verdict(metrics, MANIFEST, [], 60)
    assert v["cheapest_reaching_tuned"] == "tuned_unprompted"
    assert v["alternatives"].startswith("no inference-time alternative reaches the tuned model: the best, "
                                        "base_prompted_best_of_n, passes 83%")


def test_diagnosis_reads_under_and_over_training_from_the_curve():
    m = metrics_for(0.5, 0.3, 0.04, {"a": 0.9, "b": 0.3}, {"a": 0.9, "b": 0.5})
    rising = verdict(m, MANIFEST, [point(0, 0.0), point(30, 0.2), point(60, 0.4)], 60)
    assert rising["relation"] == "loses to"
    assert any(d.startswith("under-trained") for d in rising["diagnosis"])
    assert rising["try_first"] == "raise budget.max_steps (now 60)"
    falling = verdict(m, MANIFEST, [point(0, 0.0), point(30, 0.6), point(60, 0.3)], 60)
    assert any(d.startswith("over-trained after step 30") for d in falling["diagnosis"])
    synthesized = {**MANIFEST, "counts": {**MANIFEST["counts"], "synthesized_inputs": 76,
                                          "synthesized_unconfirmed": 64}}
    assert "; 76 inputs synthesized, 12 of them kept (64 with a label the teacher's own answers did not confirm)" \
        in verdict(m, synthesized, [], 60)["diagnosis"][0]
    assert "weakest rule after tuning: b" in " ".join(falling["diagnosis"])
    thin = verdict(m, {**MANIFEST, "counts": {"sft_rows": 12, "rejects": 30}}, [], 60)
    assert "only 12 training rows" in " ".join(thin["diagnosis"]) and "more distinct inputs" in thin["try_first"]


@pytest.mark.parametrize("method", ["dpo", "rft", "distill", "grpo"])
def test_on_policy_round_trains_on_the_models_own_checked_answers(bake_run, bake_spec, method):
    from promptbake.bake import preference_rounds
    from promptbake.bake_plan import BakePlan
    from sft.train import SFTRecipe

    out, _, overrides = bake_run
    config, spec_overrides = load_bake(str(bake_spec), [*overrides, f"rounds.method={method}", "rounds.max_rounds=1",
                                                        "rounds.samples=2", "rounds.min_pairs=1", "rounds.epochs=1"])
    # rft trains on the model's own passing answers: with the tiny random model only a check that any answer
    # passes leaves rows to train on, so that the round really trains
    easy = ["rules=[{id: any, text: Answer., check: {kind: max_words, n: 1000}}]"] if method == "rft" else []
    spec = load_spec(bake_spec, [f"output_dir={out / 'data'}", *easy])
    recipe = load_config(SFTRecipe, config.recipe, [f"model={config.model}", f"dataset={out / 'data'}",
                                                    "report_to=none"])
    sft = json.loads((out / "bake.json").read_text())["stages"]["sft"]
    plan = BakePlan(**json.loads((out / "bake.json").read_text())["plan"])
    result = preference_rounds(config, plan, spec, recipe, sft)
    (only,) = result["rounds"]
    train_inputs = {r["prompt"][0]["content"] for r in lines(out / "data" / "train_inputs.jsonl")}
    rows_file = out / "rounds" / "1" / "data" / ("prefs_train.jsonl" if method == "dpo" else "sft_train.jsonl")
    assert only["trained"], only
    assert len(lines(rows_file)) == only["rows"] >= 1
    if method == "grpo":  # it samples its own groups while it trains: its rows are the bare training inputs
        assert {r["prompt"][0]["content"] for r in lines(rows_file)} == train_inputs
    else:
        samples = lines(out / "rounds" / "1" / "samples.jsonl")
        assert {s["input"] for s in samples} == train_inputs and all(len(s["answers"]) == 2 for s in samples)
    if method == "distill":  # on-policy: each row is the model's own first sampled answer to its input
        first = {s["input"]: s["answers"][0] for s in samples}
        assert all(first[r["prompt"][0]["content"]] == r["completion"][0]["content"] for r in lines(rows_file))
    curve = lines(out / "rounds" / "1" / "validation.jsonl")
    assert curve[0]["step"] == 0 and only["best"]["step"] == max(
        curve, key=lambda p: (p["all_rules"], sum(p["per_rule"].values()) / len(p["per_rule"])))["step"]
    # kept only if it passed every rule on more validation inputs than its own starting point (step 0)
    kept = only["best"]["step"] > 0 and only["best"]["all_rules"] > curve[0]["all_rules"]
    # the drift guard is measured exactly for a round validation would keep (the tiny base gets no general
    # question right, so it has nothing to lose and passes)
    assert ("drift_guard" in only) == kept and (not kept or only["drift_guard"]["ok"])
    assert result["tuned_model"] == (only["adapter"] if kept else sft["tuned_model"])
    shutil.rmtree(out / "rounds")


def test_method_race_forks_a_finished_bake_and_runs_only_rounds_and_eval(bake_run, bake_spec, tmp_path):
    """scripts/bench_methods.py's arms: a copy of a finished bake, baked again with a round method, keeps the
    data and SFT stages as they were (same rows, same adapter) and runs the rounds and the eval; its row reads
    the validation score the bake chose by."""
    bench_methods = load_bench_methods()
    out, _, overrides = bake_run
    fork = tmp_path / "distill"
    bench_methods.fork(out, fork)
    assert not (fork / "sft" / "checkpoints").exists() and (fork / "data" / "sft_train.jsonl").exists()
    config, spec_overrides = load_bake(str(bake_spec), [*overrides, f"output_dir={fork}", "rounds.method=distill",
                                                        "rounds.max_rounds=1", "rounds.samples=2",
                                                        "rounds.min_pairs=1", "rounds.epochs=1",
                                                        "inference_arms=false"])
    bake(config, spec_overrides)
    before = json.loads((out / "bake.json").read_text())["stages"]
    after = json.loads((fork / "bake.json").read_text())["stages"]
    assert after["data"] == before["data"] and after["sft"] == before["sft"]
    assert list(after) == ["data", "sft", "rounds", "eval"] and after["rounds"]["rounds"][0]["trained"]
    row = bench_methods.arm_row("tiny", "distill", fork, minutes=1.0)
    # counted as kept exactly when the bake kept it (its adapter became the tuned model)
    assert row["rounds"] == ("1 of 1" if after["rounds"]["tuned_model"] != before["sft"]["tuned_model"]
                             else "0 of 1")
    # the row names the drift guard where the bake measured one (a round validation would keep)
    (only,) = after["rounds"]["rounds"]
    assert (row["guard"] is not None) == ("drift_guard" in only)
    # the report lists the round, its best validation point and whether the bake kept it
    report = (fork / "report.md").read_text()
    assert "## On-policy rounds" in report and "- round 1: best validation all rules" in report
    line = next(x for x in report.splitlines() if x.startswith("- round 1:"))
    assert line.endswith(": kept" if row["rounds"] == "1 of 1" else ": not kept"), line
    assert row["sft_validation"] is not None and row["validation"] >= row["sft_validation"]
    assert row["held_out"] == json.loads((fork / "eval" / "metrics.json").read_text())["tuned_unprompted"][
        "all_rules_adherence"]


def test_seed_bench_reads_a_finished_bake(bake_run, capsys):
    """scripts/bench_seeds.py's row of a finished bake: the verdict's held-out score and p, the validation score
    at the step the bake kept, the rows trained; the summary line spans the seeds."""
    bench_seeds = load_script("bench_seeds")
    out, _, _ = bake_run
    curve = [json.loads(x) for x in (out / "sft" / "validation.jsonl").read_text().splitlines() if x]
    row = bench_seeds.seed_row(3, out, minutes=2.0)
    verdict = json.loads((out / "verdict.json").read_text())
    assert row["step"] == verdict["kept_step"] is not None
    assert row["validation"] == next(p["all_rules"] for p in curve if p["step"] == verdict["kept_step"])
    assert (row["held_out"], row["p"], row["outcome"]) == (verdict["tuned_unprompted"], verdict["mcnemar_p"],
                                                          verdict["outcome"])
    assert row["rows"] == sum(n for k, n in verdict["provenance"].items() if k != "synthesized_inputs")
    other = {**row, "seed": 4, "held_out": row["held_out"] + 0.5, "outcome": "not won"}
    bench_seeds.print_table("tiny", [], [row, other])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("seeds=2 ") and f"held_out_min={row['held_out']:.3f}" in last
    assert f"held_out_max={row['held_out'] + 0.5:.3f}" in last and last.endswith(f"won={int(row['outcome'] == 'won')}")


def load_script(name: str):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    module = importlib.util.spec_from_file_location(name, path)
    script = importlib.util.module_from_spec(module)
    module.loader.exec_module(script)
    return script


def load_bench_methods():
    return load_script("bench_methods")


def test_strength_stage_runs_between_sft_and_eval(bake_run, bake_spec, tmp_path):
    """strength.search=true on a finished bake's data and SFT: the stage measures each candidate on the validation
    slice, the eval judges the adapter it kept, and the verdict names the strength."""
    out, _, overrides = bake_run
    fork = tmp_path / "strength"
    load_bench_methods().fork(out, fork)
    config, spec_overrides = load_bake(str(bake_spec), [*overrides, f"output_dir={fork}", "strength.search=true",
                                                        "strength.candidates=[1.0, 0.5]", "inference_arms=false"])
    result = bake(config, spec_overrides)
    stages = json.loads((fork / "bake.json").read_text())["stages"]
    assert list(stages) == ["data", "sft", "strength", "eval"]
    record = json.loads((fork / "strength" / "strength.json").read_text())
    assert [p["strength"] for p in record["points"]] == [1.0, 0.5] and result["strength"] == record["strength"]
    assert stages["strength"]["tuned_model"] == record["tuned_model"]


def test_a_round_is_kept_only_on_more_inputs_passing_every_rule():
    """A round that ties its start on all rules and wins only on the mean rule rate is not kept (the method race's
    GRPO round on ticket_triage lost a held-out answer that way)."""
    from promptbake.rounds import improves

    def result(step, all_rules, start=0.5, trained=True):
        return {"trained": trained, "best": {"step": step, "all_rules": all_rules, "start_all_rules": start}}

    assert improves(result(6, 0.6)) and not improves(result(6, 0.5)) and not improves(result(0, 0.5))
    assert not improves(result(6, 0.9, trained=False)) and not improves({"trained": False, "reason": "few rows"})
