"""Training throughput: promptbake's SFT recipe vs the `trl sft` command, side by side in one run.

    .venv/bin/python scripts/bench_train.py [--steps 12] [--dataset runs/demo/data/sft_train.jsonl]

Both arms train LoRA (r=16, all linear layers) on the default model with the same rows, batch size, max_length
and number of steps. The `trl sft` arm keeps TRL's defaults except `--bf16 false` (TRL autocasts to bf16 even
on a CPU, which this CPU emulates at a few tokens/s: a meaningless baseline). Only non-padding tokens count
(TRL's `num_tokens`). Each arm runs in its own process, so its peak RSS is its own. A third process trains
QLoRA with promptbake's recipe for the peak-memory comparison.

Throughput is measured in steady state, the same way for both arms: each arm trains once for 1 step and once
for steps + 1, and tokens/s = (difference in tokens) / (difference in train_runtime), so set-up and the first
step (which allocates every buffer: ~1 s more than a later step here) drop out. The whole-run figure of the
longer run, warm-up included, is printed too.

MFU = (4·N_params + attention) FLOPs per token × tokens/s ÷ the fp32 matmul peak measured here, now. 4·N: a
LoRA step runs the forward (2N) and the input-gradient half of the backward (2N); frozen weights get no
weight gradients. Attention adds 3 × 4·layers·hidden·(mean length / 2) (causal). For scale, a fourth arm
runs a bare LoRA loop on the same batches (PEFT model, forward with labels, backward, AdamW: no trainer, no
data collator, no logging): the eager-PyTorch reference the recipe's MFU can be read against. The last line
is `train_speedup_vs_trl=<ratio> tokens_per_s=<x> mfu=<y> peak_rss_mb=<z> trl_mfu=... bare_loop_mfu=...
speedup_ceiling=... matmul_peak_gflops=...`; speedup_ceiling = 1 / trl_mfu is the speedup ours would reach at MFU
1.0, the bound on any speedup target.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def matmul_peak_gflops(n: int = 2048, repeats: int = 10, windows: int = 5) -> float:
    """The best of `windows` timings of `repeats` n x n fp32 matmuls: a peak is the fastest the CPU was seen
    to go (a noisy neighbour slows a window down, never up)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm up
    best = 0.0
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def synthetic_rows(path: Path, count: int = 96) -> None:
    """Demo-shaped rows (question -> short rule-following answer) when no built dataset is at hand."""
    asks = ["How do I", "What are three tips to", "What is the best way to", "Why should I learn to"]
    tasks = ["bake bread", "train a puppy", "plan a road trip", "grow tomatoes", "paint a room", "cook rice",
             "start running", "study for an exam"]
    rows = []
    for i in range(count):
        ask, task = asks[i % len(asks)], tasks[(i // len(asks)) % len(tasks)]
        answer = "quick answer: " + " ".join(["keep it simple and steady"] * (1 + i % 4)) + ". practice daily."
        rows.append({"prompt": [{"role": "user", "content": f"{ask} {task}?"}],
                     "completion": [{"role": "assistant", "content": answer}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def bare_lora_loop(model_dir: str, rows_path: Path, steps: int, batch: int, max_length: int) -> float:
    """Tokens/s of a bare LoRA loop (r=16, all linear layers, no dropout) on length-sorted batches of the rows,
    timed after one warm-up step; only non-padding tokens count."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear"))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    examples = []
    for line in rows_path.open():
        row = json.loads(line)
        prompt = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        ids = tokenizer(full, add_special_tokens=False)["input_ids"][:max_length]
        examples.append((ids, len(p_ids)))
    examples.sort(key=lambda e: len(e[0]))
    batches = [examples[i : i + batch] for i in range(0, len(examples), batch)]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    tokens, start = 0, 0.0
    for step in range(steps + 1):
        group = batches[step % len(batches)]
        width = max(len(ids) for ids, _ in group)
        input_ids = torch.full((len(group), width), pad)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for i, (ids, _) in enumerate(group):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        labels = input_ids.masked_fill(mask == 0, -100)
        for i, (_, prompt_len) in enumerate(group):
            labels[i, :prompt_len] = -100
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step == 0:
            start = time.perf_counter()  # the first step warms up allocators and kernels
        else:
            tokens += int(mask.sum())
    return tokens / (time.perf_counter() - start)


def run_arm(cmd: list[str], env: dict) -> tuple[dict, float]:
    """Run one arm in its own process; return its train metrics and its own peak RSS in MB."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage, unlike RUSAGE_CHILDREN
    if status != 0:
        sys.exit(f"arm failed: {' '.join(cmd)}\n{out[-3000:]}")
    logs = [ast.literal_eval(m) for m in re.findall(r"^\{'.*\}$", out, flags=re.M)]
    tokens = max(float(log["num_tokens"]) for log in logs if "num_tokens" in log)
    runtime = next(float(log["train_runtime"]) for log in logs if "train_runtime" in log)
    return {"tokens": tokens, "runtime_s": runtime, "tokens_per_s": tokens / runtime}, usage.ru_maxrss / 1024


def steady_state(cmd_for_steps, env: dict, steps: int) -> tuple[dict, float]:
    """Train for 1 step, then for steps + 1; the difference is `steps` steps past set-up and warm-up. Returns
    steady-state tokens and tokens/s, the longer run's whole-run tokens/s, and its peak RSS in MB."""
    warm, _ = run_arm(cmd_for_steps(1), env)
    full, rss = run_arm(cmd_for_steps(steps + 1), env)
    tokens, runtime = full["tokens"] - warm["tokens"], full["runtime_s"] - warm["runtime_s"]
    result = {"tokens": tokens, "tokens_per_s": tokens / runtime, "whole_run_tokens_per_s": full["tokens_per_s"]}
    print(f"[bench]   {result['tokens_per_s']:.1f} tokens/s in steady state ({full['tokens_per_s']:.1f} over the "
          f"whole {steps + 1}-step run, set-up and first step included), peak RSS {rss:.0f} MB", flush=True)
    return result, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--dataset", default="runs/demo/data/sft_train.jsonl")
    parser.add_argument("--skip-qlora", action="store_true")
    args = parser.parse_args()

    from transformers import AutoConfig

    from promptbake.core.models import DEFAULT_MODEL, resolve_model_path

    model_dir = resolve_model_path(DEFAULT_MODEL)
    work = Path(tempfile.mkdtemp(prefix="bench_train."))
    data_dir = work / "data"
    data_dir.mkdir()
    rows = data_dir / "train.jsonl"
    if Path(args.dataset).is_file():
        rows.write_text(Path(args.dataset).read_text())
    else:
        print(f"[bench] {args.dataset} not found; using synthetic demo-shaped rows")
        synthetic_rows(rows)
    import torch

    # the same thread count on both sides, said out loud: unset, `accelerate launch` (which `trl sft` runs
    # through) sets OMP_NUM_THREADS=1 for its child on this machine, while a plain process uses every core
    threads = torch.get_num_threads()
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(threads)}
    common = dict(steps=args.steps, batch=args.batch, max_length=args.max_length)
    print(f"[bench] model={model_dir} rows={sum(1 for _ in rows.open())} {common} threads={threads} (each arm)",
          flush=True)

    peak = matmul_peak_gflops()
    print(f"[bench] fp32 matmul peak: {peak:.1f} GFLOP/s", flush=True)

    trl_cmd = [str(Path(PY).parent / "trl"), "sft", "--model_name_or_path", model_dir, "--dataset_name", str(data_dir),
               "--output_dir", str(work / "trl"), "--use_peft", "--lora_r", "16", "--lora_alpha", "32",
               "--lora_target_modules", "all-linear",
               "--per_device_train_batch_size", str(args.batch), "--max_length", str(args.max_length),
               "--bf16", "false", "--report_to", "none", "--save_strategy", "no", "--logging_steps", "1"]
    # --verbose: the trainer prints its raw log dicts (num_tokens, train_runtime), which run_arm reads
    ours_cmd = [PY, "-m", "sft.train", "--verbose", str(REPO / "configs/sft/demo_lora.yaml"), f"dataset={rows}",
                f"output_dir={work / 'ours'}", "report_to=none",
                f"training.per_device_train_batch_size={args.batch}", f"training.max_length={args.max_length}",
                "training.save_steps=100000", "training.logging_steps=1"]
    print("[bench] arm 1/3: trl sft (defaults, --bf16 false)", flush=True)
    trl, trl_rss = steady_state(lambda n: trl_cmd + ["--max_steps", str(n)], env, args.steps)
    print("[bench] arm 2/3: promptbake recipe (LoRA)", flush=True)
    ours, ours_rss = steady_state(lambda n: ours_cmd + [f"training.max_steps={n}"], env, args.steps)
    if not args.skip_qlora:
        print("[bench] arm 3/3: promptbake recipe (QLoRA, nf4)", flush=True)
        # a few steps suffice for the memory figure; 4-bit matmuls are slow on a CPU
        qlora, qlora_rss = run_arm(ours_cmd + ["method=qlora", f"output_dir={work / 'qlora'}",
                                               f"training.max_steps={min(args.steps, 3)}"], env)
        print(f"[bench]   {qlora['tokens_per_s']:.1f} tokens/s, peak RSS {qlora_rss:.0f} MB "
              f"(LoRA {ours_rss:.0f} MB)", flush=True)

    print("[bench] reference: bare LoRA loop (no trainer)", flush=True)
    bare = bare_lora_loop(model_dir, rows, args.steps, args.batch, args.max_length)

    config = AutoConfig.from_pretrained(model_dir)
    from safetensors import safe_open

    with safe_open(str(Path(model_dir) / "model.safetensors"), "pt") as f:
        n_params = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())
    mean_len = ours["tokens"] / (args.steps * args.batch)
    attention = 3 * 4 * config.num_hidden_layers * config.hidden_size * mean_len / 2
    flops_per_token = 4 * n_params + attention
    mfu = flops_per_token * ours["tokens_per_s"] / (peak * 1e9)
    speedup = ours["tokens_per_s"] / trl["tokens_per_s"]
    trl_mfu = flops_per_token * trl["tokens_per_s"] / (peak * 1e9)
    bare_mfu = flops_per_token * bare / (peak * 1e9)
    print(f"[bench] N={n_params / 1e6:.1f}M mean_len={mean_len:.0f} flops/token={flops_per_token / 1e6:.0f}M "
          f"trl_mfu={trl_mfu:.2f}")
    print(f"[bench] bare LoRA loop: {bare:.1f} tokens/s, mfu={bare_mfu:.2f}; "
          f"recipe / bare loop = {ours['tokens_per_s'] / bare:.2f}")
    print(f"[bench] whole runs, set-up and first step included: recipe {ours['whole_run_tokens_per_s']:.1f} tokens/s, "
          f"trl {trl['whole_run_tokens_per_s']:.1f}, speedup "
          f"{ours['whole_run_tokens_per_s'] / trl['whole_run_tokens_per_s']:.2f}, "
          f"mfu {flops_per_token * ours['whole_run_tokens_per_s'] / (peak * 1e9):.2f}")
    # The ceiling of the speedup: at MFU 1.0 (every matmul at the measured peak) ours would run 1 / trl_mfu times
    # trl sft. A speedup target above it cannot be met on this CPU by any implementation; the record keeps it.
    print(f"train_speedup_vs_trl={speedup:.2f} tokens_per_s={ours['tokens_per_s']:.1f} mfu={mfu:.2f} "
          f"peak_rss_mb={ours_rss:.0f} trl_mfu={trl_mfu:.3f} bare_loop_mfu={bare_mfu:.2f} "
          f"speedup_ceiling={1 / trl_mfu:.2f} matmul_peak_gflops={peak:.1f}")


if __name__ == "__main__":
    main()
