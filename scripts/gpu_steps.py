"""Run a promptbake trainer and time every training step: tokens/s and MFU per step (used by scripts/gpu_check.sh).

    python scripts/gpu_steps.py sft.train configs/sft/demo_lora.yaml [key=value ...]
    accelerate launch --config_file configs/accelerate/fsdp.yaml --num_processes 1 \
        scripts/gpu_steps.py sft.train configs/sft/demo_lora.yaml method=full [key=value ...]

The trainer runs exactly as `python -m MODULE` (or `accelerate launch -m MODULE`) runs it; this harness only
wraps transformers' `Trainer.training_step` to read, after each step, the clock (the GPU synchronised first) and
the step's non-padding tokens (the attention mask's sum; a DPO batch holds prompt+chosen and prompt+rejected).
With gradient accumulation 1, as in the check's runs, a training step is an optimizer step. A step's time runs
from the end of the step before, so the optimizer update, data loading and logging in between count; the first
step's from its own start (it allocates every buffer: the summary leaves it out). Tokens are this process's.

FLOPs per token, N = the base model's parameters (the tied LM head counted once, 4-bit weights at their
unpacked size, ZeRO-3 partitions at their full size): 6N for full fine-tuning (forward 2N, backward 4N); 4N for
LoRA and QLoRA (frozen weights get no weight gradient: the backward is the 2N of input gradients); DPO adds the
reference forward, 2N, unless its reference log-probs were computed before training. Attention's own FLOPs are
left out (~1% of 6N at the demo's ~100-token rows on SmolLM2-135M). MFU = FLOPs/token x tokens/s / peak: 989
TFLOP/s for an H100 or H200 (SXM, bf16 dense), else $PEAK_TFLOPS (MFU is not printed without a peak).

Prints a line per step and then `gpu_steps: run=LABEL steps=S tokens_per_s=X mfu=Y` (medians over the steps
after the first; LABEL from $GPU_STEPS_LABEL, else the module).
"""

from __future__ import annotations

import importlib
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when launched as a plain script

BF16_DENSE_PEAK = {"H100": 989e12, "H200": 989e12}
"""bf16 dense tensor-core peak, FLOP/s, by GPU name (NVIDIA's SXM figures; an H100 PCIe peaks at 756e12)."""


def peak_flops() -> float | None:
    if os.environ.get("PEAK_TFLOPS"):
        return float(os.environ["PEAK_TFLOPS"]) * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((peak for key, peak in BF16_DENSE_PEAK.items() if key in name), None)


def base_parameters(model) -> int:
    """Parameters of the model without its adapters, at their full size however they are stored."""
    n = 0
    for name, p in model.named_parameters():  # tied weights are listed once
        if "lora_" in name:
            continue
        quant_state = getattr(p, "quant_state", None)  # bitsandbytes packs two 4-bit values per byte
        n += getattr(p, "ds_numel", None) or (math.prod(quant_state.shape) if quant_state is not None else p.numel())
    return n


def flops_per_token(trainer) -> float:
    n = base_parameters(trainer.model)
    adapters = any("lora_" in name for name, _ in trainer.model.named_parameters())
    flops = (4 if adapters else 6) * n
    if type(trainer).__name__.startswith("DPO") and not getattr(trainer.args, "precompute_ref_log_probs", False):
        flops += 2 * n
    return flops


class StepClock:
    """Per-step records `{step, tokens, seconds}` from the wrapped `training_step`."""

    def __init__(self):
        self.records: list[dict] = []
        self.flops_per_token: float | None = None
        self.last: float | None = None

    def now(self) -> float:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def wrap(self, training_step):
        def timed_step(trainer, model, inputs, *args, **kwargs):
            if self.last is None:
                self.last = self.now()
                self.flops_per_token = flops_per_token(trainer)
            loss = training_step(trainer, model, inputs, *args, **kwargs)
            end = self.now()
            mask = inputs.get("attention_mask")
            tokens = int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            self.records.append({"step": len(self.records) + 1, "tokens": tokens, "seconds": end - self.last})
            self.last = end
            self.report(self.records[-1])
            return loss
        return timed_step

    def mfu(self, tokens_per_s: float) -> float | None:
        peak = peak_flops()
        return self.flops_per_token * tokens_per_s / peak if peak and self.flops_per_token else None

    def report(self, record: dict) -> None:
        if int(os.environ.get("RANK", "0")) != 0:
            return
        rate = record["tokens"] / record["seconds"]
        mfu = self.mfu(rate)
        print(f"[gpu_steps] step {record['step']}: {record['tokens']} tokens in {record['seconds']:.3f} s = "
              f"{rate:,.0f} tokens/s" + (f", MFU {mfu:.1%}" if mfu is not None else ""), flush=True)

    def summary(self, label: str) -> str:
        steady = self.records[1:] or self.records
        rate = statistics.median(r["tokens"] / r["seconds"] for r in steady) if steady else 0.0
        mfu = self.mfu(rate) if steady else None
        return (f"gpu_steps: run={label} steps={len(self.records)} flops_per_token={self.flops_per_token or 0:.3g} "
                f"tokens_per_s={rate:.0f} mfu={'n/a' if mfu is None else f'{mfu:.2%}'}")


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise SystemExit(__doc__)
    module, args = argv[0], argv[1:]
    clock = StepClock()
    transformers.Trainer.training_step = clock.wrap(transformers.Trainer.training_step)
    from promptbake.core.entry import run_command

    try:
        run_command(importlib.import_module(module).make_parser(), args)
    finally:
        if int(os.environ.get("RANK", "0")) == 0:
            print(clock.summary(os.environ.get("GPU_STEPS_LABEL", module)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
