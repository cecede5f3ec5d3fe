"""What every training recipe shares: the model and how it is adapted (LoRA, QLoRA, DoRA, full), precision,
the trainer's own TRL config (`training:`, sft/training.py), tracking, checkpoints and the saved output; and the
run every trainer shares (`run_trainer`: setup -> train -> save). SFT, DPO, reward, RL and distillation recipes
extend `BaseRecipe`; each trainer module says only what differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PositiveInt, PrivateAttr, ValidationInfo, model_validator

from promptbake.core.config import DEFAULT_MODEL, InputError, StrictModel, describe_problems, load_config
from promptbake.core.entry import stage_parser
from promptbake.core.io import atomic_dir, check_output_dir
from promptbake.core.layout import DatasetLayout
from sft.training import TrainingSpec, check_config, check_training, lift_top_level_fields

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
    """Fields of the trainer's TRL config under their TRL names (sft/training.py)."""
    precision: Precision = "auto"
    """auto: fp32 on CPU (bf16 is emulated there and ~15x slower), bf16 on GPUs that support it, else fp16."""
    report_to: Literal["wandb", "none"] = "wandb"
    """W&B's files go under <output_dir>/wandb; offline (`wandb sync` later) unless WANDB_API_KEY is set and
    W&B accepts it (promptbake/core/tracking.py)."""
    run_name: str | None = None
    trust_remote_code: bool = False
    _where: tuple[str, dict, set[str]] = PrivateAttr(default=("", {}, set()))
    """The file it was read from, the line of each key and the training fields given at the top level: where
    trainer_config places what the config class refuses."""

    @model_validator(mode="wrap")
    @classmethod
    def _training_fits_its_config(cls, data, handler, info: ValidationInfo):
        """Top-level config fields join `training`; once the recipe is valid, `training` is checked against the
        config class's fields (without importing it; the config is built by trainer_config)."""
        top_level: set[str] = set()
        if isinstance(data, dict):
            spec = cls.model_fields["training"].annotation
            data, top_level = lift_top_level_fields(data, set(cls.model_fields), spec)
        recipe = handler(data)
        check_training(recipe, top_level)
        context = info.context or {}
        recipe._where = (context.get("source", cls.__name__), context.get("lines", {}), top_level)
        return recipe

    @model_validator(mode="after")
    def _full_has_no_adapter(self):
        if self.method == "full" and "lora" in self.model_fields_set:
            raise ValueError("method 'full' trains every weight; remove the `lora` section or pick lora/qlora/dora")
        return self

    @model_validator(mode="after")
    def _model_exists(self):
        from promptbake.core.models import check_model_fields

        check_model_fields({"model": self.model})
        return self

    def settings(self) -> dict[str, tuple[Any, str]]:
        """The config fields promptbake sets itself, each with its value and where to set it instead: `training`
        may not. The device's (precision, use_cpu) are None here: they need torch, and `setting_values` adds them."""
        out = Path(self.output_dir)
        return {"output_dir": (str(out / "checkpoints"), "use the recipe's `output_dir` (checkpoints go to "
                                                         "<output_dir>/checkpoints)"),
                "run_name": (self.run_name or out.name, "use the recipe's `run_name`"),
                "report_to": ([] if self.report_to == "none" else [self.report_to], "use the recipe's `report_to`"),
                "bf16": (None, "use the recipe's `precision`"),
                "fp16": (None, "use the recipe's `precision`"),
                "use_cpu": (None, "a run trains on the GPU when there is one (CUDA_VISIBLE_DEVICES= keeps it on the "
                                  "CPU)")}

    def setting_values(self) -> dict[str, Any]:
        import torch

        precision = choose_precision(self.precision)
        device = {"bf16": precision == "bf16", "fp16": precision == "fp16", "use_cpu": not torch.cuda.is_available()}
        return {name: value for name, (value, _) in self.settings().items()} | device

    def build_config(self):
        """The trainer's config as given: promptbake's defaults, then `training`, then `setting_values()`."""
        return self.training.config_class()(**self.training.config_values(), **self.setting_values())

    def trainer_config(self):
        """The trainer's config, checked by the class itself (imports TRL and torch: seconds, so when the trainer
        starts rather than when the recipe loads): a deprecated name, or a value it refuses, is an InputError at
        the recipe's file, line and field."""
        source, lines, top_level = self._where
        if problems := check_config(self, top_level):
            raise InputError(describe_problems(problems, source, lines))
        return self.build_config()


class ContinuingRecipe(BaseRecipe):
    """A recipe that may continue an earlier run's adapter (`init_adapter`) instead of starting a fresh one: the
    usual SFT -> DPO flow, and the bake's on-policy rounds (DPO, distillation)."""

    init_adapter: str | None = None
    """An adapter directory to continue training (e.g. an SFT run's). Its rank and targets come from the adapter,
    so a `lora` section is refused."""

    @model_validator(mode="after")
    def _init_adapter_fits(self):
        if self.init_adapter is not None:
            if self.method == "full":
                raise ValueError("init_adapter continues a LoRA adapter; it does not combine with method 'full'")
            if "lora" in self.model_fields_set:
                raise ValueError("init_adapter fixes the adapter's rank and target modules; remove the `lora` section")
        return self


def check_init_adapter(recipe: ContinuingRecipe) -> None:
    """init_adapter must be an adapter directory trained on this recipe's base model (checked before any model
    loads)."""
    from promptbake.core.models import read_run_info

    path = Path(recipe.init_adapter)
    if not (path / "adapter_config.json").is_file():
        raise InputError(f"init_adapter {recipe.init_adapter!r}: not an adapter directory (no adapter_config.json)")
    info = read_run_info(str(path))
    if info is not None and info["base_model"] != recipe.model:
        raise InputError(f"init_adapter {recipe.init_adapter!r} was trained on base {info['base_model']!r}, "
                         f"not {recipe.model!r}: set model={info['base_model']}")


def load_init_adapter(model, recipe: ContinuingRecipe):
    """The base `model` with the recipe's init_adapter on it, trainable."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, recipe.init_adapter, is_trainable=True)


def choose_precision(requested: Precision) -> str:
    if requested != "auto":
        return requested
    import torch

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
    from promptbake.core.io import iter_jsonl

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
    from datasets import load_dataset  # after the rows are checked: importing it takes a second

    return load_dataset("json", data_files=str(path), split="train")


def setup_tracking(recipe: BaseRecipe) -> str:
    """Decide W&B's mode once, before the trainer starts (promptbake/core/tracking.py: offline without a key W&B
    accepts); returns a label for the start-of-run banner."""
    if recipe.report_to == "none":
        return "none"
    from promptbake.core.tracking import wandb_mode

    return f"wandb ({wandb_mode()})"


def start_tracking(trainer, recipe: BaseRecipe) -> None:
    """Start the W&B run that transformers' WandbCallback would (same project and name; it logs into a run it
    finds), but with its files in the recipe's output_dir and offline when W&B refuses the key."""
    if recipe.report_to != "wandb":
        return  # wandb is not imported at all: a machine without it trains with report_to=none
    import wandb

    from promptbake.core.tracking import start_wandb_run

    if trainer.is_world_process_zero() and wandb.run is None:
        start_wandb_run(recipe.output_dir, project=os.getenv("WANDB_PROJECT", "huggingface"),
                        name=trainer.args.run_name)


def quantization_for(recipe: BaseRecipe, precision: str):
    """QLoRA's 4-bit config (nf4 storage, double-quantised constants, matmuls in the training dtype), else None."""
    if recipe.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16 if precision == "bf16" else torch.float32)


def load_for_training(recipe: BaseRecipe, precision: str):
    """The model to train and its tokenizer: full precision for lora/dora/full, 4-bit nf4 for qlora."""
    import torch

    from promptbake.core.models import load_model_and_tokenizer

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

    from promptbake.core.cpu_memory import return_free_heap_memory

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
    import torch
    from transformers.trainer_pt_utils import safe_globals  # the trainer's own allowlist for RNG state

    for path in sorted(p for p in checkpoint.iterdir() if p.suffix in (".pt", ".pth")):
        try:
            with safe_globals():
                torch.load(path, weights_only=True, map_location="cpu")
        except Exception as e:  # UnpicklingError for a forbidden global, others for a corrupt file
            raise InputError(f"{path}: refused to resume: not a plain tensor file "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None


def run_trainer(recipe: BaseRecipe, resume: bool, *, name: str, rows_file: str, fields: tuple[str, ...],
                build: Callable, load: Callable = load_for_training, details: str = "",
                callbacks: list | None = None, after_save: Callable | None = None,
                precheck: Callable | None = None) -> Path:
    """Every trainer's run, setup -> train -> save. Finds and checks the rows (`rows_file` in a build directory,
    each of `fields` a list of messages), decides precision and tracking and says so, then
    `load(recipe, precision)` gives the model and tokenizer and `build(recipe, model, tokenizer, rows, config)` the
    trainer (checking what it made of the rows); `callbacks` join the trainer's own; `precheck(recipe, rows_path)`
    refuses what the rows show wrong before the trainer's libraries load. Trains and saves
    (train_and_save); `after_save(trainer, save_dir)` tidies the saved output. Returns the saved directory."""
    from promptbake.core.models import is_run_output

    check_output_dir(*saved_output(recipe), legacy=is_run_output)  # refused now, not after training
    rows_path = dataset_file(recipe.dataset, rows_file)
    rows = load_rows(rows_path, fields)
    if precheck is not None:
        precheck(recipe, rows_path)
    config = recipe.trainer_config()  # the config class's own checks, before any model loads
    precision = choose_precision(recipe.precision)
    print(f"[promptbake] {name} method={recipe.method} precision={precision} model={recipe.model} rows={len(rows)}"
          f"{details} tracking={setup_tracking(recipe)}")
    model, tokenizer = load(recipe, precision)
    trainer = build(recipe, model, tokenizer, rows, config)
    from sft.progress import quiet_progress

    quiet_progress(trainer)
    for callback in callbacks or []:
        trainer.add_callback(callback)
    save_dir = train_and_save(trainer, recipe, tokenizer, rows_path, precision, resume)
    if after_save is not None and trainer.is_world_process_zero():  # the process that saved tidies what it saved
        after_save(trainer, save_dir)
    leave_process_group(trainer)
    return save_dir


def leave_process_group(trainer) -> None:
    """Under `accelerate launch`, every process waits here until rank 0 has saved and tidied, then leaves the
    process group. A rank that reaches interpreter exit with gloo's threads still running can abort ("terminate
    called without an active exception", SIGABRT) while rank 0 is still saving, and the launcher then kills rank 0:
    a finished training reported as failed, once in a CI run of the two-process distillation test."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        trainer.accelerator.wait_for_everyone()
        dist.destroy_process_group()


def saved_output(recipe: BaseRecipe) -> tuple[Path, str]:
    """Where a trainer saves its result, and the kind of output that is: OUTPUT_DIR/adapter, or OUTPUT_DIR/model
    for full fine-tuning."""
    return (Path(recipe.output_dir) / "model", "model") if recipe.method == "full" else \
        (Path(recipe.output_dir) / "adapter", "adapter")


def train_and_save(trainer, recipe: BaseRecipe, tokenizer, rows_path: Path, precision: str,
                   resume: bool) -> Path:
    """Run the trainer (from the last complete checkpoint with `resume`) and save the result with a
    `promptbake_run.json` naming the base model; returns the adapter (or full model) directory."""
    from promptbake.core.models import RUN_INFO_FILE, is_run_output
    from sft.fast_paths import cpu_fast_paths

    out = Path(recipe.output_dir)
    last = last_complete_checkpoint(out / "checkpoints") if resume else None
    if resume and last is None:
        print("[promptbake] --resume: no complete checkpoint found; starting from the beginning")
    elif last is not None:
        print(f"[promptbake] resuming from {last}")
    start_tracking(trainer, recipe)
    with cpu_fast_paths(trainer, precision):  # single-process CPU fp32 only: same losses, less work per step
        trainer.train(resume_from_checkpoint=str(last) if last else None)
    if recipe.report_to == "wandb" and trainer.is_world_process_zero():
        import wandb

        if wandb.run is not None:
            log_sample_completions(trainer.model, tokenizer, rows_path)
            log_provenance(wandb.run, rows_path.parent / DatasetLayout.MANIFEST)
        wandb.finish()  # close the run now, not at interpreter exit, so later stages don't log into it
    save_dir, kind = saved_output(recipe)
    if trainer.is_world_process_zero():
        # a kill mid-save never leaves a half adapter in place
        with atomic_dir(save_dir, kind, legacy=is_run_output) as tmp:
            trainer.save_model(str(tmp))
            tokenizer.save_pretrained(str(tmp))
            # `training` as the trainer got it: promptbake's defaults and the recipe's fields (TRL's for the rest)
            info = {"base_model": recipe.model, "method": recipe.method, "dataset": str(rows_path),
                    "precision": precision,
                    "recipe": recipe.model_dump(mode="json") | {"training": recipe.training.config_values()}}
            manifest = rows_path.parent / DatasetLayout.MANIFEST
            if manifest.exists():
                info["data_manifest"] = json.loads(manifest.read_text())
            (tmp / RUN_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        print(f"[promptbake] {'model' if recipe.method == 'full' else 'adapter'} saved to {save_dir}")
    return save_dir


def sample_prompts(rows_path: Path, n: int) -> list[list[dict]]:
    """A few prompts to show what the trained model does: held-out ones when the data build wrote them."""
    from promptbake.core.io import iter_jsonl

    held_out = rows_path.parent / DatasetLayout.EVAL_INPUTS
    source = held_out if held_out.exists() else rows_path
    prompts = []
    for _, row in iter_jsonl(source):
        prompts.append(row["prompt"])
        if len(prompts) == n:
            break
    return prompts


def log_provenance(run, manifest_path: Path) -> None:
    """The training rows counted by where their answers came from (teacher, teacher with a label hint, the
    label itself, ...; the data build's manifest) into the W&B run's summary, beside the loss curve they made."""
    if manifest_path.exists():
        provenance = json.loads(manifest_path.read_text()).get("provenance") or {}
        run.summary.update({f"data/provenance/{k}": v for k, v in provenance.items()})


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
