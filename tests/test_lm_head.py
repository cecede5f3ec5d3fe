"""sft.lm_head: TRL's fused LM head scoring only label positions on a CPU gives the same loss, gradients and
metrics as scoring every position (TRL's own CPU behaviour)."""

from __future__ import annotations

import torch
import trl.trainer.utils as trl_utils
from peft import LoraConfig, get_peft_model
from trl.trainer.utils import add_fused_lm_head

from sft.lm_head import score_label_positions_only
from sft.models import load_model_and_tokenizer


def fused_loss_and_grads(model_dir, compact: bool, monkeypatch):
    original = getattr(trl_utils._use_triton, "trl_original", trl_utils._use_triton)  # other tests switched it
    monkeypatch.setattr(trl_utils, "_use_triton", original)
    if compact:
        score_label_positions_only()
        assert trl_utils._use_triton(torch.device("cpu")) is True
    else:
        assert trl_utils._use_triton(torch.device("cpu")) is False  # TRL's own choice on a CPU
    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(str(model_dir))
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0,
                                             init_lora_weights=False))
    ids = torch.randint(0, 1000, (3, 20))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0  # padding
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :8] = -100  # the prompt
    out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_compact_scoring_matches_full_scoring(tiny_model_dir, monkeypatch):
    full, full_grads = fused_loss_and_grads(tiny_model_dir, compact=False, monkeypatch=monkeypatch)
    compact, compact_grads = fused_loss_and_grads(tiny_model_dir, compact=True, monkeypatch=monkeypatch)
    torch.testing.assert_close(compact.loss, full.loss)
    torch.testing.assert_close(compact.entropy, full.entropy)
    assert torch.equal(compact.is_top1, full.is_top1)
    assert full_grads.keys() == compact_grads.keys() and len(full_grads) > 0
    for name in full_grads:
        torch.testing.assert_close(compact_grads[name], full_grads[name], rtol=1e-4, atol=1e-6)


def test_switch_is_idempotent_and_leaves_gpus_to_trl(monkeypatch):
    calls = []
    monkeypatch.setattr(trl_utils, "_use_triton", lambda device: calls.append(device.type) or False)
    score_label_positions_only()
    patched = trl_utils._use_triton
    score_label_positions_only()
    assert trl_utils._use_triton is patched  # not wrapped twice
    assert patched(torch.device("cpu")) is True and calls == []
    assert patched(torch.device("meta")) is False and calls == ["meta"]  # other devices: TRL decides
