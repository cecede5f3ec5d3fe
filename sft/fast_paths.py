"""The CPU fast paths, on only where they were measured: one decision per training run, printed before it
trains, and the paths installed around `trainer.train()` and removed after it.

Four changes make a CPU training step cheaper without changing a loss or a gradient (each has a test comparing
it with the library's own path): TRL's fused LM head on label positions with torch's softmax kernels
(sft/lm_head.py), LoRA layers as one autograd function (sft/fused_lora.py), no attention mask for right-padded
batches (sft/padding_mask.py) and freed memory kept in glibc's heap (promptbake/core/cpu_memory.py). The first three
replace or hook private parts of TRL, PEFT and transformers, and all four were measured in one CPU process in
fp32 only. Elsewhere they were never measured, and some would be wrong: under DeepSpeed ZeRO-3 or FSDP a
parameter is gathered when its own module runs, which fused LoRA's direct read of `base_layer.weight` may bypass.
So:

- `decide` turns them on for single-process CPU fp32 runs only, judged from the trainer's accelerator
  (`training_setup`), which has read `accelerate launch`'s process count, DeepSpeed/FSDP and mixed-precision
  settings; `PROMPTBAKE_FAST_PATHS=0` turns them off;
- `cpu_fast_paths` installs them for the training call only, and takes them out however the call ends;
- each path first checks the upstream function it replaces or hooks against the parameters it was written for
  (`sft/upstream.py`); where they differ it leaves the library's code in place with one RuntimeWarning, and
  training goes on, slower. constraints.txt records the versions the checks and tests passed on.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager

SWITCH = "PROMPTBAKE_FAST_PATHS"
"""Environment variable: 0 (or off/false/no) keeps the fast paths off in every run."""


def decide(device: str, processes: int, distributed: str, precision: str) -> tuple[bool, str]:
    """Whether the fast paths go on, and why: `device` the training device type, `processes` how many take part,
    `distributed` accelerate's distributed type ("NO" for a plain single process; "DEEPSPEED", "FSDP", ...),
    `precision` what the weights and activations compute in ("fp32", "bf16", "fp16", "fp8")."""
    if os.environ.get(SWITCH, "1").strip().lower() in ("0", "off", "false", "no"):
        return False, f"{SWITCH}={os.environ[SWITCH]}"
    if processes != 1:
        return False, f"{processes} processes"
    if distributed != "NO":
        return False, distributed
    if device != "cpu":
        return False, f"{device} device"
    if precision != "fp32":
        return False, precision
    return True, "single-process CPU fp32"


def training_setup(trainer, precision: str) -> dict:
    """`decide`'s arguments, read from the trainer: its accelerator's process count, distributed type and mixed
    precision (`accelerate launch --mixed_precision bf16` turns an fp32 recipe into a bf16 run), its device."""
    accelerator = trainer.accelerator
    mixed = accelerator.mixed_precision
    return dict(device=trainer.args.device.type, processes=accelerator.num_processes,
                distributed=accelerator.distributed_type.value, precision=precision if mixed == "no" else mixed)


@contextmanager
def cpu_fast_paths(trainer, precision: str):
    """The fast paths that apply to `trainer.model`, installed for the block when `decide` says so; prints the
    decision, its reason and the paths in use. Everything is taken out again when the block ends."""
    on, reason = decide(**training_setup(trainer, precision))
    if not on:
        print(f"[promptbake] CPU fast paths: off ({reason})")
        yield
        return
    from promptbake.core.cpu_memory import freed_memory_kept_in_heap
    from sft.fused_lora import fused_lora_layers
    from sft.lm_head import fast_cpu_lm_head
    from sft.padding_mask import right_padding_without_mask

    paths = {"lm_head": fast_cpu_lm_head(), "fused_lora": fused_lora_layers(trainer.model),
             "padding_mask": right_padding_without_mask(trainer.model), "cpu_memory": freed_memory_kept_in_heap()}
    with ExitStack() as stack:
        used = [name for name, path in paths.items() if stack.enter_context(path)]
        unused = [name for name in paths if name not in used]
        print(f"[promptbake] CPU fast paths: on ({reason}): {', '.join(used) or 'none'}"
              + (f" (not in use: {', '.join(unused)})" if unused else ""))
        yield
