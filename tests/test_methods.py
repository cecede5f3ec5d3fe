"""Adaptation methods on the tiny model: QLoRA (4-bit nf4 base, bitsandbytes on the CPU), DoRA and full
fine-tuning train, and export merges adapters into a full-precision base."""

import json
import sys

import pytest
import torch
from safetensors.torch import load_file

from promptbake.core.config import InputError
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
