"""LoRA supervised fine-tuning on promptbake's prompt-completion rows, with TRL's SFTTrainer.

    promptbake train sft configs/sft/demo_lora.yaml [key=value ...] [--resume]
    accelerate launch -m sft.train configs/sft/demo_lora.yaml          # same run under Accelerate

The loss covers the completion only (TRL's default for prompt-completion rows), and the completion ends
with the chat template's end-of-turn token, which is the tokenizer's EOS: the tuned model learns to stop.
Writes `<output_dir>/adapter` (the LoRA weights, tokenizer and `promptbake_run.json` naming the base model)
and intermediate checkpoints under `<output_dir>/checkpoints`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PositiveInt

from promptbake.config import InputError, StrictModel, load_config

Precision = Literal["auto", "fp32", "bf16", "fp16"]


class LoraSpec(StrictModel):
    r: PositiveInt = 16
    """Adapter rank. Higher ranks can learn more and cost more memory and time."""
    alpha: PositiveInt = 32
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    """Which layers get adapters; `all-linear` covers attention and MLP projections."""


class TrainingSpec(StrictModel):
    num_train_epochs: float = Field(3.0, gt=0)
    per_device_train_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 1
    """Raises the effective batch without more memory, at the same cost per example."""
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = Field(0, ge=0)
    max_length: PositiveInt = 256
    """Prompt + completion tokens; longer rows are truncated (their end, and so their EOS, is lost)."""
    gradient_checkpointing: bool = False
    """Saves activation memory at ~1/3 more compute; off because small models fit without it."""
    logging_steps: PositiveInt = 5
    save_steps: PositiveInt = 50
    """Checkpoint every N optimizer steps; `--resume` restarts from the last complete one."""
    save_total_limit: PositiveInt = 2
    seed: int = 0


class SFTRecipe(StrictModel):
    model: str = "smollm2-135m-instruct"
    """Base model: a short name, hub id, local directory or .gguf file."""
    dataset: str
    """`sft_train.jsonl` written by `promptbake data build` (or a directory that holds it)."""
    output_dir: str = "runs/sft"
    method: Literal["lora"] = "lora"
    lora: LoraSpec = LoraSpec()
    training: TrainingSpec = TrainingSpec()
    precision: Precision = "auto"
    """auto: fp32 on CPU (bf16 is emulated there and ~15x slower), bf16 on GPUs that support it, else fp16."""
    report_to: Literal["wandb", "none"] = "wandb"
    """W&B runs offline (files under ./wandb, `wandb sync` later) when WANDB_API_KEY is not set."""
    run_name: str | None = None
    trust_remote_code: bool = False


def choose_precision(requested: Precision) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def dataset_file(path: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "sft_train.jsonl"
    if not p.is_file():
        raise InputError(f"dataset {path!r}: file not found (expected sft_train.jsonl from `promptbake data build`)")
    return p


def load_rows(path: Path):
    """Load prompt-completion rows, refusing anything that is not TRL's conversational format."""
    from datasets import load_dataset

    from promptbake.io import iter_jsonl

    for lineno, row in iter_jsonl(path):
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), list) or not row[key]:
                raise InputError(f"{path}:{lineno}: field {key!r} must be a non-empty list of messages "
                                 "(TRL conversational prompt-completion format)")
    return load_dataset("json", data_files=str(path), split="train")


def main(recipe: SFTRecipe, resume: bool = False) -> Path:
    """Train and return the adapter directory."""
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from sft.models import RUN_INFO_FILE, load_model_and_tokenizer

    rows_path = dataset_file(recipe.dataset)
    train_rows = load_rows(rows_path)
    precision = choose_precision(recipe.precision)
    out = Path(recipe.output_dir)
    if recipe.report_to == "wandb" and not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    print(f"[promptbake] precision={precision} model={recipe.model} rows={len(train_rows)} "
          f"report_to={recipe.report_to}{' (offline)' if os.environ.get('WANDB_MODE') == 'offline' else ''}")

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float32}[precision]
    model, tokenizer = load_model_and_tokenizer(recipe.model, dtype=dtype,
                                                trust_remote_code=recipe.trust_remote_code)
    t = recipe.training
    args = SFTConfig(
        output_dir=str(out / "checkpoints"),
        run_name=recipe.run_name or out.name,
        num_train_epochs=t.num_train_epochs,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        max_length=t.max_length,
        gradient_checkpointing=t.gradient_checkpointing,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        completion_only_loss=True,
        report_to=[] if recipe.report_to == "none" else [recipe.report_to],
        dataloader_num_workers=0,
    )
    peft_config = LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                             target_modules=recipe.lora.target_modules, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer,
                         peft_config=peft_config)
    warn_truncation(trainer.train_dataset, t.max_length)
    last = last_complete_checkpoint(out / "checkpoints") if resume else None
    if resume and last is None:
        print("[promptbake] --resume: no complete checkpoint found; starting from the beginning")
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    if recipe.report_to == "wandb":
        import wandb

        wandb.finish()  # close the run now, not at interpreter exit, so later stages don't log into it

    adapter_dir = out / "adapter"
    if trainer.is_world_process_zero():
        trainer.save_model(str(adapter_dir))
        tokenizer.save_pretrained(str(adapter_dir))
        info = {"base_model": recipe.model, "dataset": str(rows_path), "precision": precision,
                "recipe": recipe.model_dump(mode="json")}
        manifest = rows_path.parent / "manifest.json"
        if manifest.exists():
            info["data_manifest"] = json.loads(manifest.read_text())
        (adapter_dir / RUN_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        print(f"[promptbake] adapter saved to {adapter_dir}")
    return adapter_dir


def warn_truncation(dataset, max_length: int) -> None:
    """Rows longer than max_length lose their end, EOS included; say how many before training starts."""
    lengths = [len(ids) for ids in dataset["input_ids"]]
    over = sum(n >= max_length for n in lengths)
    if over:
        print(f"[promptbake] warning: {over} of {len(lengths)} rows reach max_length={max_length} and are "
              f"truncated (longest {max(lengths)} tokens); raise training.max_length")


def last_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint that has trainer state written (its last file); incomplete ones are skipped."""
    if not ckpt_dir.is_dir():
        return None
    candidates = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                        key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for path in candidates:
        if (path / "trainer_state.json").exists() and (path / "adapter_model.safetensors").exists():
            return path
        print(f"[promptbake] skipping incomplete checkpoint {path}")
    return None


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="LoRA SFT on prompt-completion rows (TRL SFTTrainer).")
    parser.add_argument("config", help="training recipe YAML, e.g. configs/sft/demo_lora.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.num_train_epochs=1")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    return parser


if __name__ == "__main__":
    from promptbake.cli import run_main

    cli_args = make_parser().parse_args()
    run_main(lambda: main(load_config(SFTRecipe, cli_args.config, cli_args.overrides), resume=cli_args.resume))
