"""The drift arm: KL of tuned vs base on the base's answers, short-answer agreement, the spec's format on unrelated
questions, the bake's warning, and bad question files."""

import json

import pytest
import torch

from data_tools.spec import Rule, load_spec
from evals.drift import DriftConfig, drift_warning, in_spec_format, label_free, read_questions
from evals.general_questions import GENERAL_QUESTIONS, GeneralQuestion, agrees, is_correct
from evals.run import EvalConfig, main
from promptbake.core.config import InputError, load_config

QUESTIONS = [
    {"id": "f1", "kind": "fact", "question": "What is the capital of France?", "answer": "Paris"},
    {"id": "f2", "kind": "fact", "question": "How many legs does a spider have?", "answer": "8"},
    {"id": "a1", "kind": "arithmetic", "question": "What is 12 times 3?", "answer": "36"},
    {"id": "a2", "kind": "arithmetic", "question": "What is 7 plus 8?", "answer": "15"},
    {"id": "h1", "kind": "howto", "question": "How do I boil an egg?"},
    {"id": "w1", "kind": "writing", "question": "Write a haiku about rain."},
]


@pytest.fixture(scope="module")
def talkative_base(tmp_path_factory, tiny_model_dir):
    """The tiny model untied from its embeddings, with a random output layer: its greedy answers are words (the
    tied tiny model repeats the template's newline, which strips to nothing, leaving no answer tokens to score)."""
    from transformers import AutoConfig, AutoTokenizer, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False
    torch.manual_seed(1)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.normal_(0.0, 1.0)
    out = tmp_path_factory.mktemp("talkative")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


def write_adapter(base_dir, out, perturb: bool):
    """A LoRA adapter directory as `promptbake train` leaves it; PEFT initialises B = 0 (the adapter changes
    nothing) unless `perturb` gives B random weights."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptbake.core.models import RUN_INFO_FILE

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    if perturb:
        torch.manual_seed(2)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.normal_(0.0, 0.5)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    (out / RUN_INFO_FILE).write_text(json.dumps({"base_model": str(base_dir), "method": "lora"}))
    return out


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def drift_eval(tmp_path, spec, base, tuned, name) -> EvalConfig:
    rows = write_jsonl(tmp_path / "eval_inputs.jsonl", [{"prompt": [{"role": "user", "content": "tea"}]}])
    return EvalConfig(spec=str(spec), eval_inputs=str(rows), base_model=str(base), tuned_model=str(tuned),
                      arms=["tuned_unprompted", "drift"], batch_size=4, sampling={"max_new_tokens": 4},
                      drift={"questions": str(write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)),
                             "max_new_tokens": 8},
                      report_to="none", output_dir=str(tmp_path / name))


def unbatched_kl(base_dir, adapter_dir, record) -> float:
    """The summed KL of one answer computed the plain way: the unmerged PEFT model and the base, one sequence,
    full logits, no padding, no batching."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from promptbake.core.models import load_tokenizer

    tok = load_tokenizer(str(base_dir))
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    prompt = tok.apply_chat_template([{"role": "user", "content": record["question"]}], tokenize=False,
                                     add_generation_prompt=True)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = p + tok(record["base_answer"], add_special_tokens=False)["input_ids"]
    ids = ids + [tok.eos_token_id] * (record["answer_tokens"] - (len(ids) - len(p)))  # EOS when the base stopped
    with torch.no_grad():
        lt, lb = (torch.log_softmax(m(torch.tensor([ids])).logits[0, len(p) - 1:-1], -1) for m in (tuned, base))
    return float((lt.exp() * (lt - lb)).sum())


def test_kl_is_zero_for_an_untrained_adapter_and_grows_when_it_changes(tmp_path, tiny_spec, talkative_base):
    zero = write_adapter(talkative_base, tmp_path / "zero_adapter", perturb=False)
    metrics = main(drift_eval(tmp_path, tiny_spec, talkative_base, zero, "zero"))
    drift = metrics["drift"]
    records = [json.loads(line) for line in (tmp_path / "zero" / "answers_drift.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == [q["id"] for q in QUESTIONS]
    assert all(r["base_answer"] for r in records) and drift["answer_tokens"] > len(QUESTIONS)
    assert drift["kl_per_token"] == pytest.approx(0.0, abs=1e-6)
    assert all(r["tuned_answer"] == r["base_answer"] for r in records)
    assert drift["agreement_with_base"] == 1.0 and drift["n_short"] == 4 and drift["warning"] is None
    assert drift["non_empty"] == {"base": 1.0, "tuned": 1.0}

    changed = write_adapter(talkative_base, tmp_path / "changed_adapter", perturb=True)
    metrics = main(drift_eval(tmp_path, tiny_spec, talkative_base, changed, "changed"))
    drift = metrics["drift"]
    records = [json.loads(line) for line in (tmp_path / "changed" / "answers_drift.jsonl").read_text().splitlines()]
    assert drift["kl_per_token"] > 0.01
    assert drift["kl_per_token"] == pytest.approx(sum(r["kl_sum"] for r in records) / drift["answer_tokens"])
    # the batched, right-padded, merged-adapter KL equals the plain computation, answer by answer
    for record in records[:3]:
        assert record["kl_sum"] == pytest.approx(unbatched_kl(talkative_base, changed, record), rel=1e-3)
    # reported beside adherence: metrics.json, both reports
    written = json.loads((tmp_path / "changed" / "metrics.json").read_text())
    assert written["drift"]["kl_per_token"] == drift["kl_per_token"] and "tuned_unprompted" in written
    html = (tmp_path / "changed" / "report.html").read_text()
    assert 'id="drift"' in html and f"{drift['kl_per_token']:.3f}" in html
    assert "## Off-spec drift" in (tmp_path / "changed" / "report.md").read_text()


def test_short_answers_are_read_by_their_result():
    fact = GeneralQuestion(**QUESTIONS[1])
    assert is_correct(fact, "A spider has eight legs.") and not is_correct(fact, "Spiders have 6 legs.")
    arithmetic = GeneralQuestion(**QUESTIONS[2])
    assert is_correct(arithmetic, "12 times 3 is 36.") and is_correct(arithmetic, "10 x 3 = 30 and 2 x 3 = 6, so 36")
    assert not is_correct(arithmetic, "12 times 3 is 33.")
    assert agrees(arithmetic, "quick answer: 36", "The answer is 36.")
    assert not agrees(arithmetic, "quick answer: 38", "The answer is 36.")
    assert agrees(arithmetic, "quick answer: 38", "12 x 3 = 38") and not agrees(arithmetic, "38", "39")
    paris = GeneralQuestion(**QUESTIONS[0])
    assert agrees(paris, "quick answer: paris.", "The capital of France is Paris.")
    assert not agrees(paris, "quick answer: lyon.", "The capital of France is Paris.")
    # both wrong: the same wrong city agrees, a different one does not
    assert agrees(paris, "It is Lyon.", "Lyon is the capital of France.")
    assert not agrees(paris, "It is Lyon.", "Marseille.")


def test_spec_format_counts_only_checks_that_need_no_label(tiny_spec):
    rules = load_spec(tiny_spec).rules
    assert in_spec_format(rules, "What is 7 plus 8?", "ok: fifteen")[0]
    assert not in_spec_format(rules, "What is 7 plus 8?", "Fifteen, of course.")[0]
    label = Rule(id="label", text="the label", check={"kind": "label_match"})
    assert [label_free(r) for r in [*rules, label]] == [True] * len(rules) + [False]


def test_drift_warning_thresholds():
    drift = {"n": 100, "n_short": 56, "kl_per_token": 0.2, "kept_correct": 0.9,
             "spec_format_per_rule": {"base": {"envelope": 0.0}, "tuned": {"envelope": 0.9}},
             "format_leak": {"rule": "envelope", "rise": 0.9}, "thresholds": DriftConfig().model_dump(
                 include={"max_kl_per_token", "min_kept_correct", "max_format_rise"})}
    assert drift_warning({"drift": drift}) is None and drift_warning({"tuned_unprompted": {}}) is None
    warning = drift_warning({"drift": {**drift, "kl_per_token": 1.3}})
    assert "1.30 nats/token > 1.0" in warning
    warning = drift_warning({"drift": {**drift, "kept_correct": 0.5}})
    assert "still gets right 50% of the fact/arithmetic questions the base gets right < 67%" in warning
    rising = {**drift, "thresholds": {**drift["thresholds"], "max_format_rise": 0.5}}  # opt-in
    assert "passes the spec's check envelope on 90% of unrelated answers (base 0%)" in drift_warning({"drift": rising})


def test_shipped_questions_validate():
    questions = read_questions(str(GENERAL_QUESTIONS))
    assert len(questions) >= 100 and {q.kind for q in questions} == {"fact", "arithmetic", "howto", "writing"}
    assert sum(q.kind in ("fact", "arithmetic") for q in questions) >= 50


@pytest.mark.parametrize("line, error", [
    ('{"id": "x", "kind": "trivia", "question": "Why?"}', r"q.jsonl:3: field 'kind'"),
    ('{"id": "x", "kind": "fact", "question": "Why?"}', r"q.jsonl:3: field 'answer': a fact question needs"),
    ('{"id": "x", "kind": "arithmetic", "question": "What is 2 plus 2?", "answer": "four"}',
     r"q.jsonl:3: field 'answer': an arithmetic answer must be a number"),
    ('{"id": "x", "kind": "howto", "question": "How?", "answer": "so"}', r"q.jsonl:3: field 'answer': a howto"),
    ('{"id": "f1", "kind": "writing", "question": "Write."}', r"q.jsonl:3: field 'id': 'f1' repeats line 1"),
    ('{"id": "x", "kind": "fact", "question": "Why?", "answer": "x", "extra": 1}', r"q.jsonl:3: field 'extra'"),
    ('{"id": "x", "kind": ', r"q.jsonl:3: not valid JSON"),
])
def test_bad_question_file_names_line_and_field_before_any_model_loads(tmp_path, tiny_spec, line, error):
    rows = write_jsonl(tmp_path / "eval_inputs.jsonl", [{"prompt": [{"role": "user", "content": "tea"}]}])
    questions = write_jsonl(tmp_path / "q.jsonl", [QUESTIONS[0], QUESTIONS[2], line])
    # models that cannot load: had anything loaded before the questions were read, the error would name them
    for name in ("no_base", "no_adapter"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
    config = EvalConfig(spec=str(tiny_spec), eval_inputs=str(rows), base_model=str(tmp_path / "no_base"),
                        tuned_model=str(tmp_path / "no_adapter"), arms=["base_prompted", "drift"],
                        drift={"questions": str(questions)}, report_to="none", output_dir=str(tmp_path / "eval"))
    with pytest.raises(InputError, match=error):
        main(config)
    assert not (tmp_path / "eval").exists()


def test_drift_needs_a_base_and_a_tuned_model(tmp_path, tiny_spec, tiny_model_dir):
    path = tmp_path / "eval.yaml"
    path.write_text(f"spec: {tiny_spec}\neval_inputs: x.jsonl\narms: [base_prompted, drift]\n")
    with pytest.raises(InputError, match="field 'tuned_model' is required by the arm drift"):
        load_config(EvalConfig, path)
    with pytest.raises(InputError, match="field 'base_model' is required by the arm drift"):
        load_config(EvalConfig, path, ["base_model=''", f"tuned_model={tiny_model_dir}"])
    with pytest.raises(InputError, match="reported beside adherence"):
        load_config(EvalConfig, path, ["arms=[drift]", f"tuned_model={tiny_model_dir}"])


def test_summary_counts_what_the_answers_say(tiny_spec):
    """Hand-written answers under the tiny spec (lowercase, no commas, at most 6 words, starts with "ok:"): the
    tuned model answers everything in the spec's format, loses one fact and one answer goes blank."""
    from evals.drift import record, summarise

    rules = load_spec(tiny_spec).rules
    base = ["The capital of France is Paris.", "A spider has eight legs.", "12 times 3 is 36.", "7 plus 8 is 15.",
            "Boil it, then cool it in water.", "Rain falls, soft and slow."]
    tuned = ["ok: paris", "ok: six legs", "ok: 36", "ok: 15", "", "ok: rain"]
    records = [record(GeneralQuestion(**q), rules, b, t, kl_sum=0.5, tokens=2)
               for q, b, t in zip(QUESTIONS, base, tuned)]
    m = summarise(records, [r.id for r in rules], DriftConfig(min_kept_correct=0.8))
    assert m["kl_per_token"] == pytest.approx(0.25) and m["answer_tokens"] == 12
    assert m["correct"] == {"base": 1.0, "tuned": 0.75} and m["kept_correct"] == 0.75
    assert m["agreement_with_base"] == 0.75 and m["n_short"] == 4
    assert m["non_empty"] == {"base": 1.0, "tuned": pytest.approx(5 / 6)}
    assert m["spec_format"] == {"base": 0.0, "tuned": pytest.approx(5 / 6)}
    assert m["still_answering"] == {"base": 1.0, "tuned": 0.0}
    assert m["format_leak"] == {"rule": "prefix", "rise": pytest.approx(5 / 6)}
    assert "still gets right 75%" in m["warning"] and "KL" not in m["warning"]
