"""Adaptation methods on the tiny model: QLoRA (4-bit nf4 base, bitsandbytes on the CPU), DoRA and full
fine-tuning train, and export merges adapters into a full-precision base."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from promptbake.core.config import InputError, load_config
from sft.export import main as export
from sft.train import SFTRecipe
from sft.train import main as train


@pytest.fixture
def rows(tmp_path):
    path = tmp_path / "sft_train.jsonl"
    path.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"tell me about item {i}"}],
        "completion": [{"role": "assistant", "content": f"ok: item {i} is fine"}]}) + "\n" for i in range(8)))
    return path


def recipe(model, rows, out, method, **extra):
    return SFTRecipe(model=str(model), dataset=str(rows), output_dir=str(out), method=method, report_to="none",
                     training={"max_steps": 3, "per_device_train_batch_size": 4, "learning_rate": 5e-3,
                               "max_length": 64, "save_steps": 10}, **extra)


@pytest.mark.parametrize("method", ["qlora", "dora"])
def test_adapter_methods_train_and_export(method, tiny_model_dir, rows, tmp_path):
    adapter_dir = train(recipe(tiny_model_dir, rows, tmp_path / method, method))
    adapter = load_file(adapter_dir / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapter.items())
    if method == "dora":
        assert any("lora_magnitude_vector" in k for k in adapter)
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["use_dora"] is (method == "dora")
    # export merges into the full-precision base (for QLoRA: a dequantized one, never the 4-bit weights)
    merged_dir = export(tmp_path / method)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert all(p.dtype == torch.float32 for p in merged.parameters())
    assert "quantization_config" not in json.loads((merged_dir / "config.json").read_text())


def test_qlora_base_is_4bit(tiny_model_dir):
    from sft.recipe import load_for_training

    r = SFTRecipe(model=str(tiny_model_dir), dataset="x.jsonl", method="qlora")
    model, _ = load_for_training(r, "fp32")
    import bitsandbytes as bnb

    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


def test_full_fine_tuning_saves_a_standalone_model(tiny_model_dir, rows, tmp_path):
    model_dir = train(recipe(tiny_model_dir, rows, tmp_path / "full", "full"))
    assert model_dir.name == "model" and (model_dir / "model.safetensors").exists()
    assert not (model_dir / "adapter_config.json").exists()
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(model_dir / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before if k in after)
    out = export(tmp_path / "full")
    assert (out / "model.safetensors").exists() and (out / "README.md").exists()


def test_full_rejects_a_lora_section(tiny_model_dir):
    with pytest.raises(ValueError, match="method 'full' trains every weight"):
        SFTRecipe(model=str(tiny_model_dir), dataset="x.jsonl", method="full", lora={"r": 8})


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_rows_score_as_they_would_alone(attention, tiny_model_dir):
    """What packing relies on: a padding-free batch from TRL's collator (positions restarting per sample, no
    attention mask) gives each sample the logits it gets on its own."""
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from promptbake.core.models import load_model_and_tokenizer

    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    model.set_attn_implementation(attention)
    samples = [torch.randint(0, 1000, (n,)).tolist() for n in (7, 12, 5)]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([{"input_ids": s} for s in samples])
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, 24)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for sample in samples:
            alone = model(input_ids=torch.tensor([sample]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[start:start + len(sample)], alone, rtol=1e-4, atol=1e-5)
            start += len(sample)


def test_packing_trains_and_unknown_kernels_are_refused(tiny_model_dir, rows, tmp_path, monkeypatch):
    adapter_dir = train(recipe(tiny_model_dir, rows, tmp_path / "packed", "lora", packing=True))
    assert (adapter_dir / "adapter_model.safetensors").exists()
    import sft.train

    monkeypatch.setattr(sft.train, "PACKING_SAFE_ATTENTION", ("flash_attention_2",))
    with pytest.raises(InputError, match="'sdpa' attention, which is not known to keep packed samples apart"):
        train(recipe(tiny_model_dir, rows, tmp_path / "refused", "lora", packing=True))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")
def test_qlora_parameters_leave_the_checkpoint_mapping(tiny_model_dir):
    """QLoRA on a CPU: no parameter still points into the mapped checkpoint file, so its pages can go."""
    from sft.recipe import load_for_training

    model, _ = load_for_training(recipe(tiny_model_dir, "x.jsonl", "out", "qlora"), "fp32")
    checkpoint = str(tiny_model_dir / "model.safetensors")
    mapped = [tuple(int(x, 16) for x in line.split()[0].split("-"))
              for line in open("/proc/self/maps") if line.rstrip().endswith(checkpoint)]
    floats = [p for p in model.parameters() if p.dtype.is_floating_point]
    assert floats and not any(start <= p.data_ptr() < end for p in floats for start, end in mapped)


def test_the_early_prompt_length_check_counts_what_the_tokenizer_counts(tiny_model_dir):
    """sft/train.py's early max_length refusal renders the chat template with jinja2 and tokenizes with the
    `tokenizers` library (no torch): it must count exactly the tokens transformers' apply_chat_template gives."""
    from transformers import AutoTokenizer

    from sft.train import prompt_renderer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    length = prompt_renderer(str(tiny_model_dir))
    for prompt in ([{"role": "user", "content": "hi"}],
                   [{"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Name, in one line: a fruit?"}],
                   [{"role": "user", "content": "Ünïcödé and\nnew lines {{ braces }}"}]):
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert length(prompt) == len(ids), prompt
    assert prompt_renderer("/no/such/model") is None


def end_token_log_prob(adapter_dir, model_dir, rows_path) -> float:
    """The trained model's mean log-probability of EOS right after each training answer."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), str(adapter_dir)).eval()
    total, rows = 0.0, [json.loads(line) for line in rows_path.read_text().splitlines()]
    for row in rows:
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        ids = tokenizer(text[:text.rindex("<|im_end|>")], return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, -1]
        total += torch.log_softmax(logits, -1)[tokenizer.eos_token_id].item()
    return total / len(rows)


def test_end_token_weight_teaches_stopping_harder(tiny_model_dir, rows, tmp_path):
    """The same rows, seed and steps: weighting the answer's end token 8 times makes the model likelier to stop
    where the answers stop than TRL's plain loss does."""
    stops = {}
    for weight in (1.0, 8.0):
        out = tmp_path / f"w{weight}"
        adapter_dir = train(SFTRecipe(model=str(tiny_model_dir), dataset=str(rows), output_dir=str(out),
                                      report_to="none", end_token_weight=weight,
                                      training={"max_steps": 40, "per_device_train_batch_size": 4,
                                                "learning_rate": 3e-2, "max_length": 64, "save_steps": 100}))
        stops[weight] = end_token_log_prob(adapter_dir, tiny_model_dir, rows)
    # the tiny random model learns slowly (its loss falls 10.8 -> 10.6 in these steps): +0.46 nats measured
    assert stops[8.0] > stops[1.0] + 0.2, stops


def test_end_token_weight_adds_the_weighted_eos_share_to_trls_loss(tiny_model_dir, rows, tmp_path):
    """Weight w adds (w - 1) x the EOS positions' negative log-probs over TRL's token count, computed here from the
    model's full logits; w = 1 is TRL's loss."""
    from sft.recipe import load_rows
    from sft.train import build_trainer, load_model

    r = recipe(tiny_model_dir, rows, tmp_path / "out", "lora")
    model, tokenizer = load_model(r, "fp32")
    trainer = build_trainer(r, model, tokenizer, load_rows(rows, ("prompt", "completion")), r.trainer_config())
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    plain = trainer.compute_loss(trainer.model, dict(batch))
    trainer.end_token_weight = 3.0
    weighted = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    log_probs = torch.log_softmax(logits.float(), -1).gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    ends = labels == tokenizer.eos_token_id
    assert ends.sum() == len(batch["input_ids"])  # one end token per answer
    eos_share = -log_probs[ends].sum() / (labels != -100).sum()
    assert torch.allclose(weighted - plain, 2 * eos_share, atol=1e-4), (weighted, plain, eos_share)


def test_end_token_weight_refuses_a_loss_it_does_not_weigh(tiny_model_dir, tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text(f"model: {tiny_model_dir}\ndataset: x.jsonl\nend_token_weight: 3\ntraining:\n  loss_type: dft\n")
    with pytest.raises(InputError, match=r"sft.yaml.*end_token_weight=3.0 weighs TRL's nll loss"):
        load_config(SFTRecipe, path)
