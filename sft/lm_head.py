"""TRL's fused LM head, made fast on a CPU: score only the label positions, and fold the logits with torch's
own softmax kernels.

TRL's trainers (SFT, DPO, GRPO, RLOO, KTO) compute the loss through a fused, chunked LM head
(`trl.trainer.utils.add_fused_lm_head` -> `ChunkedLogProbFunction`): the backbone's hidden states are projected
onto the vocabulary in tiles and folded into per-token log-probs, entropy and top-1 flags without ever holding
the `[tokens, vocab]` logits. That design is for GPUs, and on a CPU it costs twice:

1. Off Triton devices TRL projects every position, prompt and padding included, so that compilers with static
   shapes (Neuron) do not recompile per batch. On the demo batch (8 rows, 568 positions, ~160 completion tokens)
   that wasted projection was 51% of a step. `fast_cpu_lm_head` makes CPUs take TRL's compact path.
2. Off Triton devices each tile is folded by a chain of torch ops (scale, max, exp, sums, products, then in the
   backward the same again plus the gradient), ~20 passes over a tile of tokens x 32768 floats, and the backward
   projects every tile a second time. `CpuLogProbFunction` replaces that fold on CPU fp32 tensors: log_softmax,
   softmax and the log_softmax backward are single vectorised kernels, and when the logits of a call fit in
   `KEEP_LOGITS_ELEMENTS` they are kept for the backward instead of projected again. On the demo's 200 label
   tokens: TRL 199 ms, this 100 ms per forward + backward (the three projections alone are ~70 ms).

Both give the same loss, gradients and metrics (tests/test_lm_head.py compares them with TRL's own paths). GPUs
and other devices, bf16/fp16 or autocast, and soft-capped logits keep TRL's implementation unchanged. Both replace
private names of TRL, so they are installed only around a training call that sft/fast_paths.py finds them fit
for, and only while TRL's functions take the parameters recorded below.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from sft.upstream import check_upstream

TOKENS_X_VOCAB_PER_CHUNK = 1 << 23
"""Logits held at once while folding: 8M floats (32 MiB); 170 tokens of a 49k vocabulary."""
KEEP_LOGITS_ELEMENTS = 1 << 25
"""Keep the forward's log-probs (up to 128 MiB) for the backward rather than project the hidden states again."""


class CpuLogProbFunction(torch.autograd.Function):
    """`trl.kernels.ChunkedLogProbFunction` for fp32 CPU tensors without soft-capping: same arguments, same
    outputs (log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1; None where not requested), same
    gradients for the hidden states, the head's weight and bias."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
                logit_scale=1.0, outputs=("log_probs",)):
        ctx.set_materialize_grads(False)  # entropy is often for logging only: no gradient, no work
        n_tokens, vocab = hidden.shape[0], weight.shape[0]
        scale = logit_scale / temperature
        step = max(1, TOKENS_X_VOCAB_PER_CHUNK // vocab)
        keep = n_tokens * vocab <= KEEP_LOGITS_ELEMENTS
        new = lambda: hidden.new_empty(n_tokens, dtype=torch.float32)  # noqa: E731
        log_probs = new()
        entropy = new() if "entropy" in outputs else None
        log_sum_sq_probs = new() if "log_sum_sq_probs" in outputs else None
        mean_logits = new() if "mean_logits" in outputs else None
        is_top1 = torch.empty(n_tokens, dtype=torch.bool) if "is_top1" in outputs else None
        kept = []
        for start in range(0, n_tokens, step):
            end = min(start + step, n_tokens)
            z = _logits(hidden[start:end], weight, bias, scale)
            log_p = torch.log_softmax(z, dim=-1)
            target = targets[start:end].unsqueeze(-1)
            log_probs[start:end] = log_p.gather(-1, target).squeeze(-1)
            if entropy is not None:
                entropy[start:end] = -(torch.softmax(z, dim=-1) * log_p).sum(-1)
            if log_sum_sq_probs is not None:
                log_sum_sq_probs[start:end] = torch.logsumexp(2 * log_p, dim=-1)
            if mean_logits is not None:
                mean_logits[start:end] = z.mean(-1)
            if is_top1 is not None:
                # max returns the first maximum's index: a tie with an earlier token is not a top-1 prediction (as
                # in TRL). Same answer as argmax, which took 10.5 ms here for 170 x 49k logits against max's 2.4 ms.
                is_top1[start:end] = z.max(-1).indices == target.squeeze(-1)
            if keep:
                kept.append(log_p)
        ctx.save_for_backward(hidden, weight, bias, targets, entropy if entropy is not None else log_probs)
        ctx.kept, ctx.scale, ctx.step = kept, scale, step
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq_probs, mean_logits, is_top1) if x is not None))
        return log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, bias, targets, entropy = ctx.saved_tensors
        needs_hidden, needs_weight, needs_bias = ctx.needs_input_grad[:3]
        grad_hidden = torch.zeros_like(hidden) if needs_hidden else None
        grad_weight = torch.zeros_like(weight) if needs_weight else None
        grad_bias = torch.zeros_like(bias) if needs_bias else None
        for i, start in enumerate(range(0, hidden.shape[0], ctx.step)):
            end = min(start + ctx.step, hidden.shape[0])
            if ctx.kept:
                log_p = ctx.kept[i]
            else:
                log_p = torch.log_softmax(_logits(hidden[start:end], weight, bias, ctx.scale), dim=-1)
            # d/dz of sum_t g_t log p_t(target): g (onehot - p), by log_softmax's own backward kernel
            grad_log_p = torch.zeros_like(log_p)
            if grad_log_probs is not None:
                grad_log_p.scatter_(-1, targets[start:end].unsqueeze(-1), grad_log_probs[start:end].unsqueeze(-1))
            grad_z = torch._log_softmax_backward_data(grad_log_p, log_p, -1, log_p.dtype)
            if grad_entropy is not None:
                # d(entropy)/dz_j = -p_j (log p_j + entropy)
                p = torch.softmax(log_p, dim=-1)
                grad_z -= grad_entropy[start:end].unsqueeze(-1) * p * (log_p + entropy[start:end].unsqueeze(-1))
            if ctx.scale != 1.0:
                grad_z.mul_(ctx.scale)
            if grad_hidden is not None:
                grad_hidden[start:end].addmm_(grad_z, weight)
            if grad_weight is not None:
                grad_weight.addmm_(grad_z.t(), hidden[start:end])
            if grad_bias is not None:
                grad_bias += grad_z.sum(0)
        ctx.kept = None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float) -> torch.Tensor:
    z = hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())
    return z.mul_(scale) if scale != 1.0 else z


class LogProbHead:
    """Stands in for `trl.trainer.utils._ChunkedLogProbFunction`: fp32 CPU calls without soft-capping or autocast
    go to `CpuLogProbFunction`, everything else to TRL's own function (`trl_original`)."""

    def __init__(self, trl_original):
        self.trl_original = trl_original

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=("log_probs",)):
        ours = (hidden.device.type == "cpu" and hidden.dtype == weight.dtype == torch.float32
                and final_logit_softcapping is None and not torch.is_autocast_enabled("cpu"))
        function = CpuLogProbFunction if ours else self.trl_original
        return function.apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping,
                              logit_scale, outputs)


USE_TRITON_PARAMETERS = ("device",)
"""`trl.trainer.utils._use_triton`, TRL's compact-or-not switch that `fast_cpu_lm_head` wraps (TRL 1.16)."""
LOG_PROB_PARAMETERS = ("ctx", "hidden", "weight", "bias", "targets", "temperature", "chunk_size",
                       "final_logit_softcapping", "logit_scale", "outputs")
"""`trl.trainer.utils._ChunkedLogProbFunction.forward`, whose arguments `CpuLogProbFunction` takes (TRL 1.16)."""


@contextmanager
def fast_cpu_lm_head():
    """Both CPU changes in TRL's fused LM head for the block; TRL's own switch and function are back after it.
    TRL's fused forward (`add_fused_lm_head`) looks both up in trl.trainer.utils at each call, so installing them
    after the trainer patched its model, just around `trainer.train()`, is enough. Yields True when installed;
    False, with nothing changed, where this TRL lacks either or takes other parameters (one RuntimeWarning:
    training still works, CPU steps are slower)."""
    import trl.trainer.utils as trl_utils

    use_triton = getattr(trl_utils, "_use_triton", None)
    function = getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if isinstance(function, LogProbHead):  # an enclosing block installed it and will restore TRL's
        yield True
        return
    if not (check_upstream("lm_head", "trl.trainer.utils._use_triton", use_triton, USE_TRITON_PARAMETERS)
            and check_upstream("lm_head", "trl.trainer.utils._ChunkedLogProbFunction.forward",
                               getattr(function, "forward", None), LOG_PROB_PARAMETERS)):
        yield False
        return

    # Read by add_fused_lm_head only, for its compact-or-not decision; the tile kernels look up Triton through
    # their own module (trl.kernels.chunked_logprob) and keep their torch fallback on a CPU.
    def compact_everywhere(device: torch.device) -> bool:
        return device.type == "cpu" or use_triton(device)

    trl_utils._use_triton, trl_utils._ChunkedLogProbFunction = compact_everywhere, LogProbHead(function)
    try:
        yield True
    finally:
        trl_utils._use_triton, trl_utils._ChunkedLogProbFunction = use_triton, function
