"""LoRA linear layers as one autograd function: fewer passes over each layer's output (the same idea as
Unsloth's LoRA kernels, in plain torch ops).

PEFT computes a LoRA layer as `base(x) + lora_B(lora_A(x)) * scaling`: the rank-r product is written out at
full width, scaled in a second pass and added in a third, and the backward scales the full-width gradient once
more before autograd adds the two input gradients together. `LoraLinearFunction` writes the base output once
and accumulates the low-rank product into it in place (`addmm_` with alpha = scaling); the backward applies
the scaling on the rank-r side and accumulates the input gradient in place too. On the demo LoRA run (CPU,
r=16 on every linear layer) steps got ~4% faster and the first step, which allocates every buffer, ~7%.

`fused_lora_layers` switches every plain LoRA linear layer of a model to it for a block (the training call) and
gives each its PEFT forward back after it; it does so only while PEFT's `lora.Linear` has the forward and the
state fields recorded below, and otherwise leaves PEFT alone with one warning. Each call still checks that the
layer is in the plain state the function computes (one active adapter, not merged, adapters enabled, no
dropout, no DoRA or other variant, no LoRA bias, no autocast, one dtype); anything else goes through PEFT's own
forward, so merging, disabling adapters (DPO's reference model), dropout and DoRA behave exactly as in PEFT.
Weights, state dicts and saved adapters are untouched: only the forward's arithmetic is regrouped.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn

from sft.upstream import check_upstream, fall_back

PEFT_FORWARD_PARAMETERS = ("self", "x", "args", "kwargs")
"""`peft.tuners.lora.layer.Linear.forward`, which the fused forward stands in for (PEFT 0.21)."""
PEFT_LAYER_STATE = ("base_layer", "fan_in_fan_out", "disable_adapters", "merged", "active_adapters", "lora_A",
                    "lora_B", "lora_variant", "lora_bias", "lora_dropout", "scaling")
"""The fields of a PEFT LoRA layer that `_plain_adapter` and the fused forward read."""


class LoraLinearFunction(torch.autograd.Function):
    """y = x W^T + b + scaling * (x A^T) B^T, with gradients for whichever inputs require them."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling: float):
        x2 = x.reshape(-1, x.shape[-1])
        out = nn.functional.linear(x2, weight, bias)
        low_rank = x2 @ lora_a.t()  # [tokens, r]
        out.addmm_(low_rank, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x2, weight, lora_a, lora_b, low_rank)
        ctx.scaling, ctx.x_shape = scaling, x.shape
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        x2, weight, lora_a, lora_b, low_rank = ctx.saved_tensors
        needs_x, needs_weight, needs_bias, needs_a, needs_b = ctx.needs_input_grad[:5]
        s = ctx.scaling
        g2 = grad_out.reshape(-1, grad_out.shape[-1])
        grad_low_rank = g2 @ lora_b  # [tokens, r]; times s is d(loss)/d(low_rank)
        grad_x = grad_weight = grad_bias = grad_a = grad_b = None
        if needs_x:
            grad_x = g2 @ weight
            grad_x.addmm_(grad_low_rank, lora_a, alpha=s)
            grad_x = grad_x.view(ctx.x_shape)
        if needs_weight:
            grad_weight = g2.t() @ x2
        if needs_bias:
            grad_bias = g2.sum(0)
        if needs_a:
            grad_a = (grad_low_rank.t() @ x2).mul_(s)
        if needs_b:
            grad_b = (g2.t() @ low_rank).mul_(s)
        return grad_x, grad_weight, grad_bias, grad_a, grad_b, None


def _plain_adapter(layer, x: torch.Tensor, args: tuple, kwargs: dict) -> str | None:
    """The active adapter's name when `layer` is in the state LoraLinearFunction computes, else None."""
    if args or kwargs or layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    name = layer.active_adapters[0]
    if name not in layer.lora_A or name in layer.lora_variant or layer.lora_bias.get(name, False):
        return None
    if not isinstance(layer.lora_dropout[name], nn.Identity) or torch.is_autocast_enabled(x.device.type):
        return None
    dtype = layer.base_layer.weight.dtype
    if not x.dtype == dtype == layer.lora_A[name].weight.dtype == layer.lora_B[name].weight.dtype:
        return None
    return name


def _fused_forward(layer):
    peft_forward = type(layer).forward

    def forward(x, *args, **kwargs):
        name = _plain_adapter(layer, x, args, kwargs)
        if name is None:
            return peft_forward(layer, x, *args, **kwargs)
        base = layer.base_layer
        return LoraLinearFunction.apply(x, base.weight, base.bias, layer.lora_A[name].weight,
                                        layer.lora_B[name].weight, layer.scaling[name])

    return forward


@contextmanager
def fused_lora_layers(model: nn.Module):
    """Route every plain LoRA linear layer of `model` (PEFT's `lora.Linear` over an `nn.Linear`) through
    LoraLinearFunction for the block, and give each its PEFT forward back after it. Yields how many layers were
    switched: 0 for full fine-tuning, quantized bases, or a PEFT whose `lora.Linear` changed (one warning).
    A layer whose forward is already replaced on the instance (an enclosing block, accelerate's device hooks)
    is left as it is."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    lora = [module for module in model.modules() if type(module) is LoraLinear]
    if not lora or not check_upstream("fused_lora", "peft.tuners.lora.layer.Linear.forward", LoraLinear.forward,
                                      PEFT_FORWARD_PARAMETERS):
        yield 0
        return
    missing = [name for name in PEFT_LAYER_STATE if not hasattr(lora[0], name)]
    if missing:
        fall_back("fused_lora", f"peft's lora.Linear has no {', '.join(missing)}")
        yield 0
        return
    layers = [layer for layer in lora if type(layer.base_layer) is nn.Linear and not layer.fan_in_fan_out
              and "forward" not in vars(layer)]
    for layer in layers:
        layer.forward = _fused_forward(layer)
    try:
        yield len(layers)
    finally:
        for layer in layers:
            del layer.forward  # the instance attribute: PEFT's own forward answers again
