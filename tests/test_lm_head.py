"""sft.lm_head: on a CPU, TRL's fused LM head with promptbake's changes (label positions only, torch softmax
kernels) gives the same loss, gradients and metrics as TRL's own CPU path, and leaves other cases to TRL."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import trl.trainer.utils as trl_utils
from peft import LoraConfig, get_peft_model
from trl.kernels import ChunkedLogProbFunction
from trl.trainer.utils import add_fused_lm_head

import sft.lm_head as lm_head
from promptbake.core.models import load_model_and_tokenizer
from sft.lm_head import CpuLogProbFunction, LogProbHead, fast_cpu_lm_head

OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def fused_loss_and_grads(model_dir, ours: bool):
    """The model is patched by TRL first and the head installed afterwards, as trainer.train() comes after the
    trainer patched its model: TRL must look the head up at each forward for ours to be used."""
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
    calls = []

    class Spy(CpuLogProbFunction):
        @staticmethod
        def forward(ctx, *args):
            calls.append(args[0].shape)
            return CpuLogProbFunction.forward(ctx, *args)

    with pytest.MonkeyPatch.context() as patch, fast_cpu_lm_head() if ours else nullcontext():
        patch.setattr(lm_head, "CpuLogProbFunction", Spy)
        # ours scores label positions only; TRL's own choice on a CPU is every position
        assert trl_utils._use_triton(torch.device("cpu")) is ours
        out = model(input_ids=ids, attention_mask=mask, labels=labels, fused_lm_head=True)
        out.loss.backward()
    assert calls == ([(int((labels[:, 1:] != -100).sum()), 32)] if ours else [])
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_model_loss_metrics_and_grads_match_trl(tiny_model_dir):
    trl, trl_grads = fused_loss_and_grads(tiny_model_dir, ours=False)
    ours, our_grads = fused_loss_and_grads(tiny_model_dir, ours=True)
    torch.testing.assert_close(ours.loss, trl.loss)
    torch.testing.assert_close(ours.entropy, trl.entropy)
    assert torch.equal(ours.is_top1, trl.is_top1)
    assert trl_grads.keys() == our_grads.keys() and len(trl_grads) > 0
    for name in trl_grads:
        torch.testing.assert_close(our_grads[name], trl_grads[name], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("keep_logits", [True, False])
def test_function_matches_trl_kernel(keep_logits, monkeypatch):
    """Every output and the gradients of hidden states, weight and bias (through log-probs and entropy), with
    temperature and logit scale, over several token chunks, keeping or recomputing the logits."""
    monkeypatch.setattr(lm_head, "TOKENS_X_VOCAB_PER_CHUNK", 7 * 300)  # 7 tokens per chunk: 3 chunks
    monkeypatch.setattr(lm_head, "KEEP_LOGITS_ELEMENTS", 1 << 30 if keep_logits else 0)
    torch.manual_seed(0)
    hidden, weight, bias = torch.randn(19, 16), torch.randn(300, 16), torch.randn(300)
    targets = torch.randint(0, 300, (19,))
    weight[250] = weight[10] = hidden[5] * 2  # tokens 10 and 250 tie for the maximum of rows 5 and 6
    bias[250] = bias[10] = 0.0
    hidden[6] = hidden[5]
    targets[5], targets[6] = 250, 10  # a tie with an earlier token is not top-1; the earlier token is
    targets[3] = int((hidden[3] @ weight.t() + bias).argmax())  # at least one top-1 hit
    results = []
    for function in (ChunkedLogProbFunction, CpuLogProbFunction):
        leaves = [t.clone().requires_grad_(True) for t in (hidden, weight, bias)]
        out = function.apply(*leaves, targets, 0.7, 64, None, 1.3, OUTPUTS)
        (out[0] * torch.linspace(1, 2, 19)).sum().add(out[1].sum() * 0.5).backward()
        results.append((out, [leaf.grad for leaf in leaves]))
    (trl_out, trl_grads), (our_out, our_grads) = results
    for name, a, b in zip(OUTPUTS, our_out, trl_out):
        if name == "is_top1":
            assert torch.equal(a, b) and a[3] and not a[5] and a[6]
        else:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    for a, b in zip(our_grads, trl_grads):  # the tied rows' large logits (~30) put fp32 rounding at ~2e-5
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_other_dtypes_and_softcapping_stay_with_trl(monkeypatch):
    calls = []

    class Recorder:
        @staticmethod
        def apply(*args):
            calls.append(args[0].dtype)
            return "trl"

    head = LogProbHead(Recorder)
    weight, targets = torch.randn(50, 8), torch.randint(0, 50, (4,))
    assert head.apply(torch.randn(4, 8).bfloat16(), weight.bfloat16(), None, targets, 1.0, 64) == "trl"
    assert head.apply(torch.randn(4, 8), weight, None, targets, 1.0, 64, 30.0) == "trl"  # soft-capped logits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert head.apply(torch.randn(4, 8), weight, None, targets, 1.0, 64) == "trl"
    assert len(calls) == 3
    out = head.apply(torch.randn(4, 8), weight, None, targets, 1.0, 64)
    assert out[0].shape == (4,) and len(calls) == 3  # fp32 on a CPU: ours


def test_block_installs_and_puts_trl_back(monkeypatch):
    calls = []

    def use_triton(device):
        calls.append(device.type)
        return False

    monkeypatch.setattr(trl_utils, "_use_triton", use_triton)
    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", ChunkedLogProbFunction)
    with fast_cpu_lm_head() as installed:
        switch, function = trl_utils._use_triton, trl_utils._ChunkedLogProbFunction
        assert installed and isinstance(function, LogProbHead) and function.trl_original is ChunkedLogProbFunction
        assert switch(torch.device("cpu")) is True and calls == []
        assert switch(torch.device("meta")) is False and calls == ["meta"]  # other devices: TRL decides
        with fast_cpu_lm_head() as nested:  # not wrapped twice, and the outer block restores
            assert nested and trl_utils._use_triton is switch and trl_utils._ChunkedLogProbFunction is function
        assert trl_utils._ChunkedLogProbFunction is function
    assert trl_utils._use_triton is use_triton and trl_utils._ChunkedLogProbFunction is ChunkedLogProbFunction
    with pytest.raises(KeyboardInterrupt), fast_cpu_lm_head():
        raise KeyboardInterrupt  # a run stopped mid-training
    assert trl_utils._use_triton is use_triton and trl_utils._ChunkedLogProbFunction is ChunkedLogProbFunction


def test_block_warns_when_trl_moves_its_head(monkeypatch):
    monkeypatch.delattr(trl_utils, "_ChunkedLogProbFunction")
    with pytest.warns(RuntimeWarning, match="revisit sft/lm_head.py"), fast_cpu_lm_head() as installed:
        assert installed is False and not hasattr(trl_utils, "_ChunkedLogProbFunction")
