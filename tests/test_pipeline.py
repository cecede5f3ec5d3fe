"""The whole pipeline on a tiny random model: data build (and its resume), LoRA SFT, export, eval."""

import json
from pathlib import Path

import pytest
import torch
from eval_recompute import assert_metrics_recompute, read_answers
from safetensors.torch import load_file

from data_tools import build
from data_tools.backends import LocalBackend
from data_tools.spec import load_spec
from evals.run import EvalConfig
from evals.run import main as evaluate
from evals.stats import mcnemar_exact
from promptbake.core.config import InputError
from promptbake.core.io import recover_journal
from sft.export import main as export
from sft.train import SFTRecipe
from sft.train import main as train


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def built(tiny_spec):
    spec = load_spec(tiny_spec)
    manifest = build.main(spec)
    return spec, Path(spec.output_dir), manifest


def test_build_writes_trl_rows_without_rule_text(built):
    spec, out, manifest = built
    sft_rows = rows(out / "sft_train.jsonl")
    assert sft_rows and manifest["counts"]["sft_rows"] == len(sft_rows)
    rule_texts = [r.text for r in spec.rules] + [spec.system_prompt, spec.examples[0].output]
    for row in sft_rows:
        assert set(row) == {"prompt", "completion"}
        assert [m["role"] for m in row["prompt"]] == ["user"]  # bare input: no system prompt, no rules
        assert row["completion"][0]["role"] == "assistant"
        text = json.dumps(row["prompt"])
        assert not any(t in text for t in rule_texts)
        answer = row["completion"][0]["content"]
        assert answer.startswith("ok:") and answer == answer.lower() and "," not in answer
    for row in rows(out / "prefs_train.jsonl"):
        assert set(row) == {"prompt", "chosen", "rejected"} and row["chosen"] != row["rejected"]
    train_inputs = {r["prompt"][0]["content"] for r in sft_rows}
    eval_inputs = {r["prompt"][0]["content"] for r in rows(out / "eval_inputs.jsonl")}
    assert not train_inputs & eval_inputs and len(eval_inputs) == 3
    c = manifest["counts"]
    assert c["samples"] == 2 * c["train_inputs"] and c["sft_rows"] + c["rejects"] == c["train_inputs"]
    assert c["sft_rows_repaired"] + c["sft_rows_raw"] == c["sft_rows"]
    assert set(manifest["raw_pass_rate_per_rule"]) == {"lowercase", "no_commas", "short", "prefix"}
    assert json.loads((out / "manifest.json").read_text()) == manifest


def test_build_resumes_from_journal_without_regenerating(tiny_spec, monkeypatch):
    spec = load_spec(tiny_spec)
    out = Path(spec.output_dir)
    build.main(spec)
    journal = recover_journal(out / build.JOURNAL)
    first = rows(out / "sft_train.jsonl")
    # Simulate a kill mid-build: drop the last records and tear the final line.
    text = (out / build.JOURNAL).read_text().splitlines(keepends=True)
    (out / build.JOURNAL).write_text("".join(text[:-2]) + text[-2][:15])
    generated = []
    original = LocalBackend.generate

    def counting_generate(self, conversations, sampling, on_batch=None, skip=()):
        generated.extend(c[-1]["content"] for i, c in enumerate(conversations) if i not in skip)
        return original(self, conversations, sampling, on_batch, skip)

    monkeypatch.setattr(LocalBackend, "generate", counting_generate)
    build.main(spec)
    assert len(generated) == 2  # only the two lost inputs were generated again
    resumed = recover_journal(out / build.JOURNAL)
    ids = [r["id"] for r in resumed]
    assert len(ids) == len(set(ids)) == len(journal)  # nothing lost, nothing duplicated
    # and sampled as the uninterrupted build sampled them: the same batches, the same seeds
    assert {r["id"]: r["samples"] for r in resumed} == {r["id"]: r["samples"] for r in journal}
    assert len(rows(out / "sft_train.jsonl")) == len(first)


def test_build_refuses_journal_of_another_spec(tiny_spec):
    build.main(load_spec(tiny_spec))
    with pytest.raises(InputError, match="holds a build of a different spec"):
        build.main(load_spec(tiny_spec, ["teacher.sampling.seed=7"]))


def test_train_export_eval(built, tiny_model_dir, tmp_path):
    spec, data_dir, _ = built
    recipe = SFTRecipe(model=str(tiny_model_dir), dataset=str(data_dir), output_dir=str(tmp_path / "run"),
                       report_to="none", training={"num_train_epochs": 2, "per_device_train_batch_size": 4,
                                                   "learning_rate": 1e-2, "save_steps": 2, "max_length": 64})
    base_before = load_file(tiny_model_dir / "model.safetensors")
    adapter_dir = train(recipe)

    # the adapter learned something (LoRA B starts at zero) and the base weights on disk are untouched
    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    base_after = load_file(tiny_model_dir / "model.safetensors")
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    info = json.loads((adapter_dir / "promptbake_run.json").read_text())
    assert info["base_model"] == str(tiny_model_dir) and info["data_manifest"]["spec"] == "tiny"

    merged_dir = export(tmp_path / "run")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(merged_dir)  # plain transformers, no promptbake
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template and tokenizer.pad_token_id != tokenizer.eos_token_id
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with_adapter = PeftModel.from_pretrained(base, adapter_dir)
    ids = tokenizer("quick question about tea", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, with_adapter(ids).logits, atol=1e-4)
        untouched_base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
        assert not torch.allclose(merged(ids).logits, untouched_base(ids).logits, atol=1e-4)
    assert (merged_dir / "model.safetensors").exists() and (merged_dir / "README.md").exists()

    config = EvalConfig(spec=str(spec.source), eval_inputs=str(data_dir / "eval_inputs.jsonl"),
                        base_model=str(tiny_model_dir), tuned_model=str(adapter_dir),
                        arms=["base_prompted", "base_unprompted", "tuned_unprompted"],
                        sampling={"max_new_tokens": 6}, batch_size=4, output_dir=str(tmp_path / "eval"),
                        report_to="none")
    metrics = evaluate(config)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    answers = {arm: read_answers(tmp_path / "eval", arm) for arm in config.arms}
    for arm in config.arms:
        assert [a["input"] for a in answers[arm]] == [r["prompt"][0]["content"]
                                                     for r in rows(data_dir / "eval_inputs.jsonl")]
        assert_metrics_recompute(saved[arm], answers[arm], spec.rules)  # every rate is its answers' flags counted
        assert saved[arm]["latency_s_per_request"] > 0
    # the prompted arm pays for the system prompt, rules and few-shot example in every request
    assert saved["base_prompted"]["prompt_tokens_per_request"] > saved["tuned_unprompted"]["prompt_tokens_per_request"]
    outcomes = {arm: [a["all_rules"] for a in answers[arm]] for arm in config.arms}
    assert saved["vs_base_prompted"] == {arm: mcnemar_exact(outcomes["base_prompted"], outcomes[arm])
                                         for arm in ("base_unprompted", "tuned_unprompted")}
    assert metrics == saved


def test_retry_round_resamples_only_failing_inputs(tiny_spec):
    # a rule the random tiny model never meets and no repair can fix: every input goes to the retry round
    spec = load_spec(tiny_spec, ["rules.0.check={kind: contains, phrases: [zebra crossing]}",
                                 "teacher.retry={n: 3, temperature: 1.0}"])  # round 1's temperature
    with pytest.raises(InputError, match="no teacher sample passed every check"):
        build.main(spec)
    out = Path(spec.output_dir)
    journal = recover_journal(out / build.JOURNAL)
    first = [r for r in journal if r["round"] == 1]
    second = [r for r in journal if r["round"] == 2]
    assert len(first) == len(second) == 9 and all(len(r["samples"]) == 3 for r in second)
    # the same prompts at the same temperature: the retry draws afresh, not round 1's samples again
    again = {r["id"]: r["samples"][:2] for r in second}
    assert sum(again[r["id"]] != r["samples"] for r in first) >= 8
    rejects = rows(out / "rejects.jsonl")
    assert len(rejects) == 9 and all(len(r["samples"]) == 2 + 3 for r in rejects)
    assert all("lowercase" in s["failed"] for r in rejects for s in r["samples"])  # rule 0 failed everywhere


def test_answers_per_input_trains_on_several_answers_of_one_input(built, tiny_spec, tmp_path):
    """`teacher.answers_per_input=2`: each input's best answer is the row a build with 1 writes, then its other
    distinct passing answer (raw or repaired) follows; the counts and provenance add up to the rows."""
    _, _, one = built
    spec = load_spec(tiny_spec, ["teacher.answers_per_input=2", f"output_dir={tmp_path / 'two'}"])
    two = build.main(spec)
    first = rows(Path(load_spec(tiny_spec).output_dir) / "sft_train.jsonl")
    both = rows(tmp_path / "two" / "sft_train.jsonl")
    by_input: dict[str, list[str]] = {}
    for row in both:
        by_input.setdefault(row["prompt"][0]["content"], []).append(row["completion"][0]["content"])
    assert [answers[0] for answers in by_input.values()] == [r["completion"][0]["content"] for r in first]
    assert len(both) > len(first) and all(len(set(a)) == len(a) <= 2 for a in by_input.values())
    c = two["counts"]
    assert c["sft_rows"] == len(both) and c["sft_rows_raw"] + c["sft_rows_repaired"] == len(both)
    assert sum(v for k, v in two["provenance"].items() if k != "synthesized_inputs") == len(both)
    assert one["counts"]["rejects"] == c["rejects"]


def test_labels_backend_scores_the_inputs_own_answers(tmp_path):
    (tmp_path / "inputs.jsonl").write_text("".join(
        json.dumps({"input": f"question {i}", "answer": "ok: yes" if i % 2 else "No, Sir"}) + "\n" for i in range(8)))
    (tmp_path / "spec.yaml").write_text(
        "name: labelled\nrules:\n  - {id: prefix, text: Start with ok., check: {kind: starts_with, prefix: 'ok:'}}\n"
        "inputs: {path: inputs.jsonl, label_field: answer}\nteacher: {backend: labels, repair: false}\n"
        f"split: {{eval_fraction: 0.25}}\noutput_dir: {tmp_path / 'data'}\n")
    manifest = build.main(load_spec(tmp_path / "spec.yaml"))
    assert manifest["counts"]["sft_rows"] + manifest["counts"]["rejects"] == 6
    assert all(r["completion"][0]["content"] == "ok: yes" for r in rows(tmp_path / "data" / "sft_train.jsonl"))
    eval_rows = rows(tmp_path / "data" / "eval_inputs.jsonl")
    assert all(r["label"] in ("ok: yes", "No, Sir") for r in eval_rows)
    from datasets import load_from_disk

    saved = load_from_disk(str(tmp_path / "data" / "hf"))
    assert saved["sft_train"].num_rows == manifest["counts"]["sft_rows"] and saved["eval_inputs"].num_rows == 2
