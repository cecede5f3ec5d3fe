"""Score only the label positions in TRL's fused LM head on a CPU too, not just on Triton devices.

TRL's trainers compute the loss through a fused, chunked LM head (`trl.trainer.utils.add_fused_lm_head`): the
backbone's hidden states are projected onto the vocabulary in tiles and folded into per-token log-probs,
entropy and top-1 flags. On CUDA/XPU (Triton) it projects only the positions whose label is not -100 (the
completion tokens); elsewhere it projects every position, prompt and padding included, so that compilers with
static shapes (Neuron) do not recompile per batch. A CPU running eager PyTorch has no such constraint, and
there the full projection is the largest cost of a step: on the demo batch (8 rows, 568 positions, ~160
completion tokens) the fused head took 51% of the step under torch.profiler. Both paths give the same loss,
gradients and metrics (tests/test_lm_head.py compares them), so promptbake asks TRL for the compact one.
"""

from __future__ import annotations

import torch


def score_label_positions_only() -> None:
    """Make TRL's fused LM head project only label positions on a CPU (idempotent). Raises if TRL no
    longer has the switch, so a TRL upgrade that moves it fails here instead of silently going slow."""
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None:
        raise RuntimeError("trl.trainer.utils._use_triton is gone: TRL changed how its fused LM head picks "
                           "label positions; revisit sft/lm_head.py for this TRL version")
    if hasattr(original, "trl_original"):
        return  # already switched

    # Read by add_fused_lm_head only, for its compact-or-not decision; the tile kernels look up Triton through
    # their own module (trl.kernels.chunked_logprob) and keep their torch fallback on a CPU.
    def compact_everywhere(device: torch.device) -> bool:
        return device.type == "cpu" or original(device)

    compact_everywhere.trl_original = original  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_everywhere
