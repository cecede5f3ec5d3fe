"""Prompt baking by distillation on the tiny model: the teacher is the adapter-disabled base with the full
prompt, the KL to it falls as the student trains, and every shipped distill recipe validates."""

import json
import os
from pathlib import Path

import pytest
from accelerate_run import accelerate_launch  # tests/ is on sys.path (pytest)
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


def test_divergences_agree_with_their_definitions():
    """forward/reverse KL and GKD's JSD on random logits, against sums written out by hand; JSD's beta=0 and 1 are
    the two KLs (TRL's convention), and JSD lies below log 2 for beta=0.5."""
    import torch

    from sft.distill_loss import divergence

    torch.manual_seed(0)
    s_logits, t_logits = torch.randn(5, 11), torch.randn(5, 11)
    s, t = s_logits.log_softmax(-1), t_logits.log_softmax(-1)
    forward = (t.exp() * (t - s)).sum(-1).mean()
    reverse = (s.exp() * (s - t)).sum(-1).mean()
    m = (0.5 * s.exp() + 0.5 * t.exp()).log()
    jsd = 0.5 * (t.exp() * (t - m)).sum(-1).mean() + 0.5 * (s.exp() * (s - m)).sum(-1).mean()
    assert divergence(s_logits, t_logits, "forward_kl").item() == pytest.approx(forward.item(), rel=1e-5)
    assert divergence(s_logits, t_logits, "reverse_kl").item() == pytest.approx(reverse.item(), rel=1e-5)
    assert divergence(s_logits, t_logits, "jsd", 0.5).item() == pytest.approx(jsd.item(), rel=1e-5)
    assert forward != pytest.approx(reverse.item()) and 0 < jsd < torch.log(torch.tensor(2.0))
    assert divergence(s_logits, t_logits, "jsd", 0.0).item() == pytest.approx(forward.item(), rel=1e-5)
    assert divergence(s_logits, t_logits, "jsd", 1.0).item() == pytest.approx(reverse.item(), rel=1e-5)
    assert divergence(s_logits, s_logits, "reverse_kl").item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown divergence"):
        divergence(s_logits, t_logits, "kl")


def test_distillation_continues_an_adapter_with_the_reverse_kl(tiny_spec, tiny_model_dir, tmp_path):
    """init_adapter: the student starts from a trained adapter (the bake's on-policy rounds) and the teacher is
    still the base with the adapter off; the saved adapter differs from the one it started from."""
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"Tell me about thing {i}."}],
        "completion": [{"role": "assistant", "content": f"ok: thing {i} is nice"}]}) + "\n" for i in range(4)))
    common = dict(model=str(tiny_model_dir), dataset=str(rows), spec=str(tiny_spec), report_to="none")
    first = main(DistillRecipe(**common, output_dir=str(tmp_path / "a"),
                               training={"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
                                         "max_length": 64, "save_steps": 2}))
    second = main(DistillRecipe(**common, output_dir=str(tmp_path / "b"), init_adapter=str(first),
                                divergence="reverse_kl",
                                training={"max_steps": 10, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
                                          "max_length": 64, "save_steps": 10, "logging_steps": 1}))
    a, b = load_file(first / "adapter_model.safetensors"), load_file(second / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any((a[k] - b[k]).abs().sum() > 0 for k in a)
    state = json.loads((tmp_path / "b" / "checkpoints" / "checkpoint-10" / "trainer_state.json").read_text())
    losses = [log["loss"] for log in state["log_history"] if "loss" in log]
    # it starts away from the teacher (the first adapter moved it) and the reverse KL falls as it trains
    assert losses[0] > 0 and sum(losses[-3:]) < sum(losses[:3])
    with pytest.raises(ValueError, match="init_adapter fixes the adapter"):
        DistillRecipe(**common, init_adapter=str(first), lora={"r": 4})


def test_on_policy_distillation_runs_under_accelerate_launch_on_two_processes(tiny_spec, tiny_model_dir, tmp_path):
    """`accelerate launch -m sft.distill` with two CPU processes (gloo), as a user starts it: 8 rows, 2 per device,
    one epoch is 2 optimizer steps only when the two processes split the rows; one adapter is saved."""
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"Tell me about thing {i}."}],
        "completion": [{"role": "assistant", "content": f"ok: thing {i} is nice"}]}) + "\n" for i in range(8)))
    config = tmp_path / "distill.yaml"
    config.write_text(f"model: {tiny_model_dir}\ndataset: {rows}\nspec: {tiny_spec}\noutput_dir: {tmp_path / 'run'}\n"
                      "report_to: none\ndivergence: reverse_kl\ntraining: {num_train_epochs: 1, "
                      "per_device_train_batch_size: 2, learning_rate: 1.0e-3, max_length: 64, logging_steps: 1}\n")
    result = accelerate_launch(["-m", "sft.distill", str(config)], env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-3000:]
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("checkpoint-*")
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == 2
    assert sorted(p.parent.name for p in (tmp_path / "run").rglob("adapter_model.safetensors")) == \
        ["adapter", ckpt.name]
