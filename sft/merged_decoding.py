"""LoRA merged into its base layers for the length of a decode inside training, base weights restored bit for bit.

Validation answers its slice with the model being trained. Unmerged, every LoRA layer runs three matmuls per
step (base, A, B) where a merged one runs one: on the demo's validation slice (17 inputs, SmolLM2-135M, one CPU
thread) decoding took 8.0 s unmerged and 5.75 s merged, and the bake measures 8-9 times. PEFT's own
`merge()`/`unmerge()` round trip leaves rounding changes in the frozen base weights (W + BA - BA is not W in
floating point), so training after it would differ from a run resumed from a checkpoint (which loads the base
fresh) — the kill-anywhere test compares those bit for bit. So the weights are copied before the merge and
copied back after it.

The copy costs the memory of every adapted weight for the decode's length: fine for a small model in CPU
memory, not for a large one on an accelerator. It is used only where every LoRA layer wraps a plain fp32
`nn.Linear` on the CPU with one active, unmerged, plain (not DoRA) adapter; elsewhere the decode runs unmerged,
as before.
"""

from __future__ import annotations

from contextlib import contextmanager


def mergeable_lora_layers(model) -> list:
    """The model's LoRA layers when all of them can be merged and restored here, else []."""
    import torch
    from peft.tuners.lora import LoraLayer
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]

    def plain(m) -> bool:
        base = m.base_layer
        return (type(base) is nn.Linear and base.weight.device.type == "cpu" and base.weight.dtype == torch.float32
                and not m.merged and not m.disable_adapters and len(m.active_adapters) == 1
                and not m.use_dora.get(m.active_adapters[0], False))

    return layers if layers and all(plain(m) for m in layers) else []


@contextmanager
def lora_merged(model):
    """Inside the block the LoRA layers compute as merged linear layers; after it they are exactly as before."""
    import torch

    layers = mergeable_lora_layers(model)
    saved = []
    try:
        with torch.no_grad():
            for layer in layers:
                saved.append((layer, layer.base_layer.weight.detach().clone()))
                layer.merge()
        yield bool(layers)
    finally:
        with torch.no_grad():
            for layer, weight in saved:
                if layer.merged:
                    layer.unmerge()  # PEFT's bookkeeping (the `merged` flag); the bits come from the copy
                layer.base_layer.weight.copy_(weight)
