"""sft.fast_paths: the CPU fast paths go on for single-process CPU fp32 runs only, are in place for the block
and gone after it, and an upstream that changed the function a path relies on leaves that path off with one
warning while the rest run."""

from __future__ import annotations

import warnings
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import torch
import trl.trainer.utils as trl_utils
from accelerate.utils import DistributedType
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear
from transformers.models.llama.modeling_llama import LlamaModel

import promptbake.core.cpu_memory as cpu_memory
from promptbake.core.models import load_model_and_tokenizer
from sft.fast_paths import cpu_fast_paths, decide, training_setup
from sft.lm_head import LogProbHead

ALL_ON = "[promptbake] CPU fast paths: on (single-process CPU fp32): lm_head, fused_lora, padding_mask, cpu_memory"


def fake_trainer(model=None, device="cpu", processes=1, distributed=DistributedType.NO, mixed="no"):
    """What `training_setup` reads from a transformers Trainer."""
    return SimpleNamespace(model=model, args=SimpleNamespace(device=torch.device(device)),
                           accelerator=SimpleNamespace(num_processes=processes, distributed_type=distributed,
                                                       mixed_precision=mixed))


@pytest.mark.parametrize(("trainer", "precision", "decision"), [
    (fake_trainer(), "fp32", (True, "single-process CPU fp32")),
    (fake_trainer(), "bf16", (False, "bf16")),
    (fake_trainer(mixed="bf16"), "fp32", (False, "bf16")),  # accelerate launch --mixed_precision bf16
    (fake_trainer(processes=2, distributed=DistributedType.MULTI_CPU), "fp32", (False, "2 processes")),
    (fake_trainer(distributed=DistributedType.DEEPSPEED), "fp32", (False, "DEEPSPEED")),
    (fake_trainer(distributed=DistributedType.FSDP), "fp32", (False, "FSDP")),
    (fake_trainer(device="cuda"), "fp32", (False, "cuda device")),
])
def test_on_for_single_process_cpu_fp32_only(trainer, precision, decision):
    assert decide(**training_setup(trainer, precision)) == decision


def test_switch_turns_them_off(monkeypatch):
    monkeypatch.setenv("PROMPTBAKE_FAST_PATHS", "0")
    assert decide("cpu", 1, "NO", "fp32") == (False, "PROMPTBAKE_FAST_PATHS=0")


def test_a_real_trainer_on_this_cpu_is_single_process_fp32(tiny_model_dir, tmp_path):
    from transformers import Trainer, TrainingArguments

    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    trainer = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[]))
    assert training_setup(trainer, "fp32") == dict(device="cpu", processes=1, distributed="NO", precision="fp32")


@pytest.fixture
def lora_model(tiny_model_dir):
    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))


def installed(model) -> dict:
    """Which fast paths are in place on `model` and in TRL."""
    return {"lm_head": isinstance(trl_utils._ChunkedLogProbFunction, LogProbHead),
            "fused_lora": [m for m in model.modules() if "forward" in vars(m)] != [],
            "padding_mask": len(model.get_base_model().model._forward_pre_hooks) > 0}


@pytest.mark.parametrize("fails", [False, True])
def test_block_installs_each_path_and_removes_it(lora_model, capsys, monkeypatch, fails):
    trims = []
    monkeypatch.setattr(cpu_memory, "return_free_heap_memory", lambda: trims.append(1) or True)
    trl_switch, trl_function = trl_utils._use_triton, trl_utils._ChunkedLogProbFunction
    with pytest.raises(KeyboardInterrupt) if fails else nullcontext():
        with cpu_fast_paths(fake_trainer(lora_model), "fp32"):
            assert capsys.readouterr().out.strip() == ALL_ON
            assert installed(lora_model) == {"lm_head": True, "fused_lora": True, "padding_mask": True}
            if fails:
                raise KeyboardInterrupt  # a run stopped mid-training
    assert installed(lora_model) == {"lm_head": False, "fused_lora": False, "padding_mask": False}
    assert trl_utils._use_triton is trl_switch and trl_utils._ChunkedLogProbFunction is trl_function
    assert trims == [1]  # the heap's free pages handed back


def test_off_installs_nothing(lora_model, capsys):
    with cpu_fast_paths(fake_trainer(lora_model, mixed="bf16"), "fp32"):
        assert capsys.readouterr().out.strip() == "[promptbake] CPU fast paths: off (bf16)"
        assert installed(lora_model) == {"lm_head": False, "fused_lora": False, "padding_mask": False}


def renamed_switch(dev):  # TRL's _use_triton with its parameter renamed
    return False


def forward_with_new_keyword(self, x, *args, adapter_names=None, **kwargs):  # PEFT's lora.Linear.forward
    raise AssertionError("not called")


def forward_with_renamed_cache(self, input_ids=None, attention_mask=None, past=None, **kwargs):  # LlamaModel's
    raise AssertionError("not called")


@pytest.mark.parametrize(("path", "owner", "name", "fake"), [
    ("lm_head", trl_utils, "_use_triton", renamed_switch),
    ("fused_lora", LoraLinear, "forward", forward_with_new_keyword),
    ("padding_mask", LlamaModel, "forward", forward_with_renamed_cache),
])
def test_an_upstream_change_leaves_that_path_off_with_one_warning(lora_model, capsys, monkeypatch, path, owner,
                                                                  name, fake):
    monkeypatch.setattr(owner, name, fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with cpu_fast_paths(fake_trainer(lora_model), "fp32"):
            ran = True  # training goes on
            on = installed(lora_model)
    assert ran and on == {key: key != path for key in on}
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and f"CPU fast path {path} is off" in messages[0]
    assert f"revisit sft/{path}.py" in messages[0]
    line = capsys.readouterr().out.strip()
    assert line.startswith("[promptbake] CPU fast paths: on") and line.endswith(f"(not in use: {path})")


def test_decode_falls_back_to_generate_when_dynamic_layer_changes(monkeypatch):
    """The same check guards data_tools/decode.py's subclass of transformers' DynamicLayer."""
    from transformers import LlamaConfig
    from transformers.cache_utils import DynamicLayer

    from data_tools import decode

    model = SimpleNamespace(config=LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, num_key_value_heads=1, vocab_size=50))
    decode.dynamic_layer_as_recorded.cache_clear()
    assert decode.plain_cache_layout(model) is True
    monkeypatch.setattr(DynamicLayer, "update", lambda self, keys, values, layer_idx, cache_kwargs=None: None)
    decode.dynamic_layer_as_recorded.cache_clear()
    try:
        with pytest.warns(RuntimeWarning, match="revisit data_tools/decode.py") as caught:
            assert decode.plain_cache_layout(model) is False
            assert decode.plain_cache_layout(model) is False  # checked once per process: one warning
        assert len(caught) == 1
    finally:
        decode.dynamic_layer_as_recorded.cache_clear()
