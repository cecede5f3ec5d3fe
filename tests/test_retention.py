"""The KL retention term beside SFT's loss (sft/retention.py), on the tiny model: it is the KL from the base (the
adapter switched off) to the tuned model on the retention rows' answers, it holds a trained model closer to its base
than the same training without it, and its bad inputs are refused with file, line and field."""

import json

import pytest
import torch

from promptbake.core.config import InputError, load_config
from sft.train import SFTRecipe
from sft.train import main as train


def write_rows(path, texts):
    path.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": question}],
        "completion": [{"role": "assistant", "content": answer}]}) + "\n" for question, answer in texts))
    return path


@pytest.fixture
def rows(tmp_path):
    return write_rows(tmp_path / "sft_train.jsonl", [(f"tell me about item {i}", f"OK: ITEM {i} IS FINE!!")
                                                      for i in range(8)])


@pytest.fixture
def retention_rows(tmp_path):
    return write_rows(tmp_path / "replay_rows.jsonl", [(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.")
                                                       for i in range(6)])


def sft_recipe(model, rows, out, **extra):
    return SFTRecipe(model=str(model), dataset=str(rows), output_dir=str(out), report_to="none",
                     training={"max_steps": 30, "per_device_train_batch_size": 4, "learning_rate": 3e-2,
                               "max_length": 64, "save_steps": 100}, **extra)


def kl_to_base(model, tokenizer, retention_rows) -> float:
    """KL(base || model) per answer token on the rows, computed here from full logits, one row at a time."""
    from sft.distill import encode

    total, tokens = 0.0, 0
    for line in retention_rows.read_text().splitlines():
        row = json.loads(line)
        ids, start = encode(tokenizer, row["prompt"], row["completion"])
        ids = torch.tensor([ids])
        with torch.no_grad():
            tuned = torch.log_softmax(model(ids).logits[0, start - 1:-1].float(), -1)
            with model.disable_adapter():
                base = torch.log_softmax(model(ids).logits[0, start - 1:-1].float(), -1)
        total += (base.exp() * (base - tuned)).sum().item()
        tokens += len(base)
    return total / tokens


def test_retention_adds_the_weighted_kl_to_the_base(tiny_model_dir, rows, retention_rows, tmp_path):
    """With the adapter moved off zero, the loss with retention is TRL's loss + weight x KL(base || tuned) on one
    batch of the retention rows (here all six), computed independently from full logits."""
    from sft.recipe import load_rows
    from sft.train import build_trainer, load_model

    r = sft_recipe(tiny_model_dir, rows, tmp_path / "out", retention_rows=str(retention_rows), retention_weight=2.5,
                   retention_batch_size=6)
    model, tokenizer = load_model(r, "fp32")
    trainer = build_trainer(r, model, tokenizer, load_rows(rows, ("prompt", "completion")), r.trainer_config())
    torch.manual_seed(0)
    with torch.no_grad():  # LoRA's B starts at zero, where the tuned model is the base and the KL 0
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with_term = trainer.compute_loss(trainer.model, dict(batch))
    retention, trainer.retention = trainer.retention, None
    plain = trainer.compute_loss(trainer.model, dict(batch))
    trainer.retention = retention
    trainer.model.eval()
    kl = kl_to_base(trainer.model, tokenizer, retention_rows)
    assert kl > 0.01, kl
    assert torch.allclose(with_term - plain, torch.tensor(2.5 * kl), rtol=1e-3), (with_term, plain, kl)
    assert trainer._metrics["train"]["retention_kl"] == pytest.approx([kl], rel=1e-3)


def test_retention_holds_the_tuned_model_to_its_base(tiny_model_dir, rows, retention_rows, tmp_path):
    """The same rows, seed and steps with and without the term: the retention run's next-token distributions on
    the retention rows stay closer to the base's. (The tiny random model moves little, and Adam's steps move it
    about even where the term's gradient is small: measured KL 0.0115 without, 0.0095 / 0.0067 / 0.0054 at weights
    10 / 100 / 1000.)"""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from promptbake.core.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    kl = {}
    for name, extra in (("plain", {}), ("retention", {"retention_rows": str(retention_rows),
                                                      "retention_weight": 1000.0})):
        adapter = train(sft_recipe(tiny_model_dir, rows, tmp_path / name, **extra))
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter).eval()
        kl[name] = kl_to_base(model, tokenizer, retention_rows)
    assert kl["retention"] < 0.7 * kl["plain"], kl


def test_retention_needs_an_adapter(tiny_model_dir, tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text(f"model: {tiny_model_dir}\ndataset: x.jsonl\nmethod: full\nretention_rows: r.jsonl\n")
    with pytest.raises(InputError, match=r"sft.yaml.*adapter switched off: pick lora, qlora or dora"):
        load_config(SFTRecipe, path)


def test_bad_retention_rows_are_named_before_training(tiny_model_dir, rows, tmp_path):
    bad = tmp_path / "replay_rows.jsonl"
    bad.write_text(json.dumps({"prompt": [{"role": "user", "content": "q"}],
                               "completion": [{"role": "assistant", "content": "a"}]}) + "\n"
                   + json.dumps({"prompt": "q", "completion": [{"role": "assistant", "content": "a"}]}) + "\n")
    with pytest.raises(InputError, match=r"replay_rows.jsonl:2: field 'prompt' must be a non-empty list"):
        train(sft_recipe(tiny_model_dir, rows, tmp_path / "out", retention_rows=str(bad)))
    assert not (tmp_path / "out").exists()
