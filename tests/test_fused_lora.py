"""sft.fused_lora: the fused LoRA layers compute what PEFT's layers compute (outputs and every gradient), hand
every state they do not cover (merged, adapters disabled, dropout, DoRA, autocast) back to PEFT, and give the
layers their PEFT forward back when the block ends."""

from __future__ import annotations

import copy
from contextlib import ExitStack

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from promptbake.core.models import load_model_and_tokenizer
from sft.fused_lora import _plain_adapter, fused_lora_layers


class Block(nn.Module):
    """Linear layers with and without bias, and an input that needs its own gradient."""

    def __init__(self):
        super().__init__()
        self.up = nn.Linear(12, 20)
        self.down = nn.Linear(20, 12, bias=False)

    def forward(self, x):
        return self.down(torch.relu(self.up(x)))


@pytest.fixture
def stack():
    with ExitStack() as blocks:
        yield blocks


def peft_pair(base: nn.Module, stack: ExitStack, **lora):
    """The same PEFT model twice: PEFT's own layers, and fused layers (for the test's duration)."""
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"], init_lora_weights=False, **lora)
    torch.manual_seed(0)
    reference = get_peft_model(copy.deepcopy(base), config)
    fused = copy.deepcopy(reference)
    return reference, fused, stack.enter_context(fused_lora_layers(fused))


def outputs_and_grads(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


def assert_same(a, b, adapter_grads: bool = True):
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a[1], b[1], rtol=1e-5, atol=1e-6)
    assert a[2].keys() == b[2].keys() and (len(a[2]) > 0) == adapter_grads
    for name in a[2]:
        torch.testing.assert_close(a[2][name], b[2][name], rtol=1e-5, atol=1e-6)


def test_fused_layers_match_peft_outputs_and_gradients(stack):
    torch.manual_seed(1)
    reference, fused, count = peft_pair(Block(), stack)
    assert count == 2
    x = torch.randn(3, 5, 12)
    assert_same(outputs_and_grads(fused, x), outputs_and_grads(reference, x))
    with fused_lora_layers(fused) as nested:
        assert nested == 0  # already fused: not wrapped twice
    assert_same(outputs_and_grads(fused, x), outputs_and_grads(reference, x))


def test_layers_get_their_peft_forward_back_after_the_block():
    torch.manual_seed(1)
    model = get_peft_model(Block(), LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"]))
    layers = [model.base_model.model.up, model.base_model.model.down]
    with pytest.raises(KeyboardInterrupt), fused_lora_layers(model) as count:
        assert count == 2 and all("forward" in vars(layer) for layer in layers)
        raise KeyboardInterrupt  # a run stopped mid-training
    assert not any("forward" in vars(layer) for layer in layers)
    assert layers[0].forward.__func__ is type(layers[0]).forward  # PEFT's own


def test_fused_llama_matches_peft_and_trains_the_same(tiny_model_dir):
    base, _ = load_model_and_tokenizer(str(tiny_model_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    torch.manual_seed(0)
    reference = get_peft_model(copy.deepcopy(base), config)
    fused = copy.deepcopy(reference)
    ids = torch.randint(0, 1000, (2, 9))
    losses = {}
    with fused_lora_layers(fused) as count:
        assert count == 2 * 7  # q k v o gate up down, two layers
        for name, model in (("reference", reference), ("fused", fused)):
            out = model(input_ids=ids, labels=ids)
            out.loss.backward()
            losses[name] = (out.loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses["fused"][0], losses["reference"][0])
    for name, grad in losses["reference"][1].items():
        torch.testing.assert_close(losses["fused"][1][name], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("state", ["merged", "disabled", "dropout", "dora", "no_grad"])
def test_states_the_fused_function_does_not_cover_go_to_peft(state, stack):
    torch.manual_seed(2)
    lora = {"lora_dropout": 0.3} if state == "dropout" else {"use_dora": True} if state == "dora" else {}
    reference, fused, count = peft_pair(Block(), stack, **lora)
    assert count == 2  # switched; each call decides
    x = torch.randn(4, 12)
    if state == "merged":
        reference.merge_adapter()
        fused.merge_adapter()
    if state == "dropout":
        layer = fused.base_model.model.up
        assert _plain_adapter(layer, x, (), {}) is None  # training-mode dropout is random: check the decision
        reference.eval()  # and the arithmetic in eval mode, where PEFT still calls its dropout module
        fused.eval()
    if state == "disabled":
        with reference.disable_adapter(), fused.disable_adapter():
            torch.testing.assert_close(fused(x), reference(x))
        return
    if state == "no_grad":
        with torch.no_grad():
            torch.testing.assert_close(fused(x), reference(x), rtol=1e-5, atol=1e-6)
        return
    # merged weights hold the adapters' product: no gradient reaches the adapter matrices, in PEFT either
    assert_same(outputs_and_grads(fused, x), outputs_and_grads(reference, x), adapter_grads=state != "merged")


def test_autocast_goes_to_peft(stack):
    torch.manual_seed(3)
    reference, fused, _ = peft_pair(Block(), stack)
    x = torch.randn(4, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(fused(x), reference(x))
