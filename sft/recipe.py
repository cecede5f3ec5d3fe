"""What every training recipe shares: the model and how it is adapted (LoRA, QLoRA, DoRA, full), precision,
the optimisation knobs, tracking, checkpoints and the saved output. SFT, DPO, reward and RL recipes extend
`BaseRecipe`; each trainer module stays a thin script over TRL.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, PositiveInt, model_validator

from promptbake.config import DEFAULT_MODEL, InputError, StrictModel, load_config
from promptbake.entry import stage_parser
from promptbake.io import atomic_dir

Precision = Literal["auto", "fp32", "bf16", "fp16"]
Method = Literal["lora", "qlora", "dora", "full"]


class LoraSpec(StrictModel):
    r: PositiveInt = 16
    """Adapter rank. Higher ranks can learn more and cost more memory and time."""
    alpha: PositiveInt = 32
    """Scaling numerator: the update is scaled by alpha / r."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on each adapter's input. 0 (as in LLaMA-Factory and Unsloth) skips it entirely: on a CPU the
    random masks (one per adapted layer and step) took ~20% of a LoRA step on the demo model."""
    target_modules: str | list[str] = "all-linear"
    """Which layers get adapters; `all-linear` covers attention and MLP projections."""


class TrainingSpec(StrictModel):
    num_train_epochs: float = Field(3.0, gt=0)
    max_steps: int = -1
    """Stop after this many optimizer steps (overrides epochs when > 0)."""
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
    sampling_strategy: Literal["random", "group_by_length"] = "group_by_length"
    """group_by_length: batches of rows of similar length (shuffled in mega-batches), so less compute goes to
    padding; random: the classic shuffle. SFT and distillation only: the preference trainers' paired rows
    have no single length, so DPO and reward training always shuffle."""
    logging_steps: PositiveInt = 5
    save_steps: PositiveInt = 50
    """Checkpoint every N optimizer steps; `--resume` restarts from the last complete one."""
    save_total_limit: PositiveInt = 2
    seed: int = 0


class BaseRecipe(StrictModel):
    model: str = DEFAULT_MODEL
    """Base model: a short name, hub id, local directory or .gguf file."""
    dataset: str
    """A JSONL file written by `promptbake data build` (or the directory that holds it)."""
    output_dir: str = "runs/train"
    method: Method = "lora"
    """lora; qlora (LoRA on a 4-bit nf4 base via bitsandbytes: ~4x less weight memory); dora (weight-decomposed
    LoRA: often better at low rank, slower); full (every weight trains: most memory, no adapter)."""
    lora: LoraSpec = LoraSpec()
    training: TrainingSpec = TrainingSpec()
    precision: Precision = "auto"
    """auto: fp32 on CPU (bf16 is emulated there and ~15x slower), bf16 on GPUs that support it, else fp16."""
    report_to: Literal["wandb", "none"] = "wandb"
    """W&B runs offline (files under ./wandb, `wandb sync` later) when WANDB_API_KEY is not set."""
    run_name: str | None = None
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _full_has_no_adapter(self):
        if self.method == "full" and "lora" in self.model_fields_set:
            raise ValueError("method 'full' trains every weight; remove the `lora` section or pick lora/qlora/dora")
        return self


def choose_precision(requested: Precision) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def dataset_file(path: str, default_name: str) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / default_name
    if not p.is_file():
        raise InputError(f"dataset {path!r}: file not found (expected {default_name} from `promptbake data build`)")
    return p


def load_rows(path: Path, message_fields: tuple[str, ...]):
    """Load TRL conversational rows, refusing a row whose `message_fields` are not lists of messages."""
    from datasets import load_dataset

    from promptbake.io import iter_jsonl

    count = 0
    for lineno, row in iter_jsonl(path):
        count += 1
        for key in message_fields:
            value = row.get(key)
            if not isinstance(value, list) or not value or not all(isinstance(m, dict) and "role" in m
                                                                   and "content" in m for m in value):
                raise InputError(f"{path}:{lineno}: field {key!r} must be a non-empty list of messages "
                                 f"({{'role', 'content'}}, TRL conversational format)")
    if count == 0:
        raise InputError(f"{path}: no rows (the file is empty)")
    return load_dataset("json", data_files=str(path), split="train")


def setup_tracking(recipe: BaseRecipe) -> str:
    """Decide W&B's mode once, before the trainer starts; returns a label for the start-of-run banner."""
    if recipe.report_to == "none":
        return "none"
    if not os.environ.get("WANDB_API_KEY"):
        os.environ.setdefault("WANDB_MODE", "offline")
    return f"wandb ({os.environ.get('WANDB_MODE', 'online')})"


def quantization_for(recipe: BaseRecipe, precision: str):
    """QLoRA's 4-bit config (nf4 storage, double-quantised constants, matmuls in the training dtype), else None."""
    if recipe.method != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if precision == "bf16" else torch.float32)


def load_for_training(recipe: BaseRecipe, precision: str):
    """The model to train and its tokenizer: full precision for lora/dora/full, 4-bit nf4 for qlora."""
    from promptbake.models import load_model_and_tokenizer

    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    model, tokenizer = load_model_and_tokenizer(recipe.model, dtype=dtype, trust_remote_code=recipe.trust_remote_code,
                                                quantization_config=quantization_for(recipe, precision))
    if recipe.method == "full":
        # a run's adapter directory loads merged, with PEFT's inference-time freezing still on every weight
        model.requires_grad_(True)
    if recipe.method == "qlora" and not torch.cuda.is_available():
        own_unquantized_parameters(model)
    return model, tokenizer


def own_unquantized_parameters(model) -> None:
    """QLoRA on a CPU: quantizing reads the whole full-precision checkpoint through its file mapping, and the
    parameters left unquantized (embeddings, norms) still point into that mapping, so all the pages read stay
    resident with it (405 of the demo checkpoint's 513 MB), next to the freed full-precision copies in the heap.
    Copying those parameters into their own memory lets the mapping go, and the heap is trimmed: 1005 -> 676 MB
    resident after loading the demo model (LoRA: 558 MB)."""
    import gc

    from promptbake.cpu_memory import return_free_heap_memory

    for param in model.parameters():
        if param.device.type == "cpu" and param.dtype.is_floating_point:
            param.data = param.data.clone()
    gc.collect()  # the loader's last references to the mapping
    return_free_heap_memory()


def peft_config(recipe: BaseRecipe, task_type: str = "CAUSAL_LM"):
    """The adapter config (None for full fine-tuning)."""
    if recipe.method == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(r=recipe.lora.r, lora_alpha=recipe.lora.alpha, lora_dropout=recipe.lora.dropout,
                      target_modules=recipe.lora.target_modules, use_dora=recipe.method == "dora",
                      task_type=task_type)


def trainer_args(recipe: BaseRecipe, precision: str) -> dict:
    """Keyword arguments shared by TRL's SFT/DPO/Reward/GRPO configs."""
    t = recipe.training
    out = Path(recipe.output_dir)
    return dict(
        output_dir=str(out / "checkpoints"),
        run_name=recipe.run_name or out.name,
        num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_steps,
        gradient_checkpointing=t.gradient_checkpointing,
        train_sampling_strategy=t.sampling_strategy,
        logging_steps=t.logging_steps,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        report_to=[] if recipe.report_to == "none" else [recipe.report_to],
        dataloader_num_workers=0,
    )


def last_complete_checkpoint(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint whose trainer state was written (the trainer writes it after the weights);
    incomplete ones, e.g. from a kill mid-save, are skipped with a message."""
    if not ckpt_dir.is_dir():
        return None
    candidates = sorted((p for p in ckpt_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                        key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for path in candidates:
        weights = list(path.glob("*.safetensors"))
        if (path / "trainer_state.json").exists() and weights:
            refuse_unsafe_pickles(path)
            return path
        print(f"[promptbake] skipping incomplete checkpoint {path}")
    return None


def refuse_unsafe_pickles(checkpoint: Path) -> None:
    """Resuming loads the optimizer, scheduler and RNG state, which torch stores as pickles. The trainer loads
    them with `weights_only=True` (tensors, plain containers and, for the RNG state, numpy's array types);
    check each file the same way first, so a tampered one is refused with its name and a clear message
    instead of a traceback, and nothing in it ever runs. (training_args.bin is never loaded on resume.)"""
    from transformers.trainer_pt_utils import safe_globals  # the trainer's own allowlist for RNG state

    for path in sorted(p for p in checkpoint.iterdir() if p.suffix in (".pt", ".pth")):
        try:
            with safe_globals():
                torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # UnpicklingError for a forbidden global, others for a corrupt file
            raise InputError(f"{path}: refused to resume: not a plain tensor file "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def train_and_save(trainer, recipe: BaseRecipe, tokenizer, rows_path: Path, precision: str,
                   resume: bool) -> Path:
    """Run the trainer (from the last complete checkpoint with `resume`) and save the result with a
    `promptbake_run.json` naming the base model; returns the adapter (or full model) directory."""
    from promptbake.models import RUN_INFO_FILE
    from sft.fast_paths import cpu_fast_paths

    out = Path(recipe.output_dir)
    last = last_complete_checkpoint(out / "checkpoints") if resume else None
    if resume and last is None:
        print("[promptbake] --resume: no complete checkpoint found; starting from the beginning")
    elif last is not None:
        print(f"[promptbake] resuming from {last}")
    with cpu_fast_paths(trainer, precision):  # single-process CPU fp32 only: same losses, less work per step
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    if recipe.report_to == "wandb" and trainer.is_world_process_zero():
        import wandb

        if wandb.run is not None:
            log_sample_completions(trainer.model, tokenizer, rows_path)
        wandb.finish()  # close the run now, not at interpreter exit, so later stages don't log into it
    save_dir = out / ("model" if recipe.method == "full" else "adapter")
    if trainer.is_world_process_zero():
        with atomic_dir(save_dir) as tmp:  # a kill mid-save never leaves a half adapter in place
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            info = {"base_model": recipe.model, "method": recipe.method, "dataset": str(rows_path),
                    "precision": precision, "recipe": recipe.model_dump(mode="json")}
            manifest = rows_path.parent / "manifest.json"
            if manifest.exists():
                info["data_manifest"] = json.loads(manifest.read_text())
            (tmp / RUN_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        print(f"[promptbake] {'model' if recipe.method == 'full' else 'adapter'} saved to {save_dir}")
    return save_dir


def sample_prompts(rows_path: Path, n: int) -> list[list[dict]]:
    """A few prompts to show what the trained model does: held-out ones when the data build wrote them."""
    from promptbake.io import iter_jsonl

    held_out = rows_path.parent / "eval_inputs.jsonl"
    source = held_out if held_out.exists() else rows_path
    prompts = []
    for _, row in iter_jsonl(source):
        prompts.append(row["prompt"])
        if len(prompts) == n:
            break
    return prompts


def log_sample_completions(model, tokenizer, rows_path: Path, n: int = 4, max_new_tokens: int = 48) -> None:
    """Log a W&B table of the trained model's greedy answers to a few prompts (no system prompt, as served)."""
    import wandb

    from data_tools.backends import LocalBackend
    from data_tools.spec import Sampling

    prompts = sample_prompts(rows_path, n)
    backend = LocalBackend(model, tokenizer, batch_size=n)
    completions = backend.generate(prompts, Sampling(max_new_tokens=max_new_tokens))
    table = wandb.Table(columns=["prompt", "completion"],
                        data=[[p[-1]["content"], c.texts[0]] for p, c in zip(prompts, completions)])
    wandb.log({"samples/completions": table})


def trainer_parser(subparsers, method: str, recipe_cls: type[BaseRecipe], main, help: str,
                   example_config: str):
    """The command line of every trainer: `promptbake train METHOD CONFIG [key=value ...] [--resume]` when
    added to `subparsers`, else `python -m sft.<trainer> CONFIG ...`, the same run."""
    parser = stage_parser(subparsers, method, help)
    parser.add_argument("config", help=f"recipe YAML, e.g. {example_config}")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. training.num_train_epochs=1")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.set_defaults(run=lambda args: main(load_config(recipe_cls, args.config, args.overrides),
                                              resume=args.resume))
    return parser
