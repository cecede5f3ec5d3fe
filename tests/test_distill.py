"""Prompt baking by distillation on the tiny model: the teacher is the adapter-disabled base with the full
prompt, the KL to it falls as the student trains, and every shipped distill recipe validates."""

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from promptbake.core.config import load_config
from sft.distill import DistillRecipe, encode, main
from sft.distill_loss import PairCollator

REPO = Path(__file__).resolve().parents[1]


def test_encode_gives_identical_completion_tokens_after_different_prompts(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    completion = [{"role": "assistant", "content": "ok: fine"}]
    bare, bare_start = encode(tok, [{"role": "user", "content": "hi"}], completion)
    rules = {"role": "system", "content": "Follow these rules: be brief, write in lowercase."}
    full, full_start = encode(tok, [rules, {"role": "user", "content": "hi"}], completion)
    assert full[:full_start] != bare[:bare_start] and bare[bare_start:] == full[full_start:]
    batch = PairCollator(pad_id=0)([{"student_ids": bare, "student_start": bare_start,
                                     "teacher_ids": full, "teacher_start": full_start}])
    assert len(batch["student_cols"]) == len(batch["teacher_cols"]) == len(bare) - bare_start
    assert batch["targets"].tolist() == bare[bare_start:]


def test_distillation_lowers_kl_to_the_prompted_teacher(tiny_spec, tiny_model_dir, tmp_path):
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"Tell me about thing {i}."}],
        "completion": [{"role": "assistant", "content": f"ok: thing {i} is nice"}]}) + "\n" for i in range(8)))
    recipe = DistillRecipe(model=str(tiny_model_dir), dataset=str(rows), spec=str(tiny_spec),
                           output_dir=str(tmp_path / "run"), report_to="none",
                           training={"max_steps": 12, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
                                     "logging_steps": 1, "max_length": 64, "save_steps": 12})
    adapter_dir = main(recipe)
    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    state = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-12" / "trainer_state.json").read_text())
    losses = [log["loss"] for log in state["log_history"] if "loss" in log]
    assert len(losses) == 12 and sum(losses[-3:]) < sum(losses[:3])  # the student moves towards the teacher
    assert (adapter_dir / "promptbake_run.json").exists()


def test_loss_is_zero_when_student_and_teacher_see_the_same_thing(tiny_model_dir):
    """With the adapter at its zero init and identical contexts, student == teacher: KL must be 0."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from sft.distill_loss import DistillTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    ids, start = encode(tok, [{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "ok"}])
    batch = PairCollator(tok.pad_token_id)([{"student_ids": ids, "student_start": start,
                                             "teacher_ids": ids, "teacher_start": start}])
    trainer = DistillTrainer(model=model, args=TrainingArguments(output_dir="/tmp/unused", use_cpu=True,
                                                                 report_to=[]),
                             temperature=2.0, ce_weight=0.0)
    assert trainer.compute_loss(model, batch).item() == pytest.approx(0.0, abs=1e-6)


def test_shipped_distill_recipes_validate():
    paths = sorted((REPO / "configs" / "distill").glob("*.yaml"))
    assert paths
    for path in paths:
        assert path.read_text().startswith("#")
        load_config(DistillRecipe, path)
    with pytest.raises(ValueError, match="adapter-disabled base"):
        DistillRecipe(dataset="x", spec="y", method="full")
