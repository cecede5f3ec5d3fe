"""Shared fixtures: a tiny random model of SmolLM2's architecture (Llama) with the real SmolLM2 tokenizer.

The tokenizer comes from the embedded default model (converted once into the model cache), so chat
template, special tokens and vocabulary are the real ones; the weights are random and tiny so that
generation and training take seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests need a CUDA device: without one they are skipped, with the reason shown (-ra)."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_tests:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device; scripts/gpu_check.sh runs it on a GPU machine")
        for item in gpu_tests:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from promptbake.core.models import DEFAULT_MODEL, load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("tiny-smollm2")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def trained_adapter(tiny_model_dir, tmp_path):
    """A LoRA adapter with non-zero B (a fresh one is the base exactly), saved as a run's adapter directory."""
    import json

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    out = tmp_path / "adapter"
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(str(out))
    (out / "promptbake_run.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "method": "lora"}))
    return out


TINY_SPEC = """\
name: tiny
system_prompt: You answer briefly.
rules:
  - id: lowercase
    text: Write in lowercase.
    check: {{kind: lowercase}}
  - id: no_commas
    text: No commas.
    check: {{kind: no_commas}}
  - id: short
    text: At most 6 words.
    check: {{kind: max_words, n: 6}}
  - id: prefix
    text: Start with "ok:".
    check: {{kind: starts_with, prefix: "ok:"}}
examples:
  - input: say hi
    output: "ok: hi"
inputs:
  template: "Tell me about {{thing}}."
  slots:
    thing: [cats, dogs, rain, snow, tea, bread, maps, ships, stars, trees, books, rivers]
teacher:
  model: {model}
  sampling: {{n: 2, temperature: 1.0, max_new_tokens: 8, seed: 0}}
  batch_size: 8
split: {{eval_fraction: 0.25, seed: 0}}
output_dir: {out}
"""


@pytest.fixture
def tiny_spec(tmp_path, tiny_model_dir) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(TINY_SPEC.format(model=tiny_model_dir, out=tmp_path / "data"))
    return path


@pytest.fixture
def as_after_the_demo(tmp_path, monkeypatch):
    """Validate a shipped config as it is once the demo has run: from a scratch working directory in which every
    `runs/...` model the config names exists (as an adapter directory). Call it with the config's path."""
    from promptbake.core.config import read_yaml

    monkeypatch.chdir(tmp_path)

    def make_its_models(config_path: Path) -> None:
        data, _ = read_yaml(config_path)
        for field, value in data.items():
            if field.endswith("model") and isinstance(value, str) and value.startswith("runs/"):
                (tmp_path / value).mkdir(parents=True, exist_ok=True)
                (tmp_path / value / "adapter_config.json").write_text("{}")

    return make_its_models


@pytest.fixture
def reliability_log():
    """Record what a reliability test exercised (faults injected, bad inputs, secrets found, rows lost, the
    slowest refusal), for scripts/reliability_report.py, which runs these tests with PROMPTBAKE_RELIABILITY_LOG
    set. Counts are summed; a figure logged with how="max" reports its largest value."""
    import json

    def log(kind: str, count: float, how: str = "sum") -> None:
        path = os.environ.get("PROMPTBAKE_RELIABILITY_LOG")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"kind": kind, "count": count, "how": how}) + "\n")
    return log


@pytest.fixture(scope="session")
def warm_trainer_fields():
    """Every trainer's config fields cached (sft/config_schema.py), as after the first recipe a user loads: the
    cache is written by the first process that needs it, which imports TRL to read them."""
    from sft.config_schema import config_fields
    from sft.distill import DistillTraining
    from sft.dpo import DPOTraining
    from sft.reward import RewardTraining
    from sft.rl import GRPOTraining
    from sft.training import TrainingSpec

    for spec in (TrainingSpec, DPOTraining, RewardTraining, GRPOTraining, DistillTraining):
        config_fields(spec.config_path)


@pytest.fixture
def fresh_wandb(tmp_path, monkeypatch):
    """An offline W&B writing under this test's tmp_path. wandb keeps process-wide settings (its run directory
    among them) from its first init, so it is torn down around the test."""
    import wandb

    wandb.teardown()
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield tmp_path / "wandb"
    wandb.teardown()
