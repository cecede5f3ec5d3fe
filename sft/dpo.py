"""Direct preference optimisation (DPO) on promptbake's preference rows, with TRL's DPOTrainer.

    python -m sft.dpo configs/dpo/demo_dpo.yaml dataset=runs/demo/data/prefs_train.jsonl [key=value ...] [--resume]
    accelerate launch -m sft.dpo configs/dpo/demo_dpo.yaml dataset=...          # same run under Accelerate

Each row pairs a bare input with an answer that passed every check (`chosen`) and one that failed
(`rejected`). DPO raises the policy's log-probability margin chosen - rejected relative to a frozen reference
policy, with `beta` limiting how far it moves from that reference.

The reference costs no second copy of the model with an adapter (lora/qlora/dora): TRL gets it by switching
the adapter off. `ref_model=None` together with `peft_config` makes DPOTrainer keep `self.ref_model = None`
("If PEFT is used, the reference model is not needed since the adapter can be disabled", dpo_trainer.py
`__init__`) and compute the reference log-probs inside `use_adapter(model, adapter_name=None)`, i.e.
`model.disable_adapter()` (`_compute_loss`). So:

- a fresh adapter (`init_adapter` unset): the reference is `model` itself, the base. Start from an SFT run by
  setting `model` to its adapter directory: the SFT adapter is merged into the base in memory, a new adapter
  trains on top, and the reference is the merged SFT model.
- `init_adapter` (continue training an SFT run's adapter): the model is passed as a trainable PeftModel and no
  `peft_config`. TRL (with peft >= 0.20) then copies the starting adapter into a frozen second adapter named
  "ref" and computes the reference with it active (`model.add_adapter("ref", ...)` in `__init__`;
  `use_adapter(model, adapter_name="ref")` in `_compute_loss`): the reference is base + the SFT adapter as it
  was before DPO, not the bare base. Only that adapter's weights are duplicated, and the "ref" copy is dropped
  from the saved output.
- full fine-tuning: the reference is a frozen copy of the starting model, a second copy in memory (passed as
  `ref_model`: left to itself TRL would reload the reference from `config._name_or_path`, which for an SFT
  adapter merged in memory names the bare base). `precompute_ref_log_probs` computes every reference log-prob
  once before training instead, from the model as it starts, and keeps no copy.

Writes `<output_dir>/adapter` (or `<output_dir>/model` for full fine-tuning) with `promptbake_run.json`, and
checkpoints under `<output_dir>/checkpoints`.
"""

from __future__ import annotations

import copy
import shutil
import warnings
from pathlib import Path

from pydantic import Field, field_validator

from promptbake.core.config import InputError
from promptbake.core.layout import DatasetLayout
from sft.recipe import (
    ContinuingRecipe,
    check_init_adapter,
    load_for_training,
    load_init_adapter,
    peft_config,
    run_trainer,
    trainer_parser,
)
from sft.training import TRAINING_DEFAULTS, TrainingSpec, documented_values

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")


class DPOTraining(TrainingSpec):
    """`training:` for DPO: any field of TRL's DPOConfig (https://huggingface.co/docs/trl/dpo_trainer). Pairs are
    batched at random (TRL's default): transformers' group-by-length sampler measures an `input_ids` column, and
    TRL's tokenized pairs have none (they hold prompt_ids / chosen_ids / rejected_ids)."""

    config_path = "trl.DPOConfig"
    defaults = TRAINING_DEFAULTS


class DPORecipe(ContinuingRecipe):
    output_dir: str = "runs/dpo"
    training: DPOTraining = DPOTraining()
    beta: float = Field(0.1, gt=0)
    """How strongly the policy is held to the reference: the loss reads the log-prob margins scaled by beta.
    Higher beta keeps the policy closer to the reference (safer, learns the preference more slowly); lower beta
    lets it move further (typical 0.05-0.5)."""
    loss_type: str | list[str] = "sigmoid"
    """sigmoid: the original DPO loss; ipo: squared loss that does not push margins to infinity (more robust on
    noisy or easy pairs); others, and lists of them weighted by `training.loss_weights`, as in TRL's DPOConfig."""
    precompute_ref_log_probs: bool = False
    """Compute every reference log-prob once before training. Saves the reference forward pass on each step,
    and with full fine-tuning the memory of a second model; costs one pass over the data up front."""

    @field_validator("loss_type")
    @classmethod
    def _loss_type_known(cls, value):
        """DPOConfig takes any string and DPOTrainer refuses an unknown one only at its first step; the values
        TRL documents are checked here, so that a typo fails before any model loads."""
        known = documented_values(DPOTraining.config_path, "loss_type")
        unknown = [v for v in ([value] if isinstance(value, str) else value) if known and v not in known]
        if unknown:
            raise ValueError(f"unknown loss type {', '.join(map(repr, unknown))}: TRL's DPOConfig knows "
                             f"{sorted(known)}")
        return value

    def settings(self):
        return super().settings() | {name: (getattr(self, name), f"use the recipe's `{name}`")
                                     for name in ("beta", "loss_type", "precompute_ref_log_probs")}


def main(recipe: DPORecipe, resume: bool = False, callbacks: list | None = None) -> Path:
    """Train and return the adapter directory (or the model directory for full fine-tuning). `callbacks`
    (transformers TrainerCallbacks, e.g. sft.validation.ValidationCallback) join the trainer's own."""
    if recipe.init_adapter is not None:
        check_init_adapter(recipe)  # before any model loads
    return run_trainer(recipe, resume, name="dpo", rows_file=DatasetLayout.PREFS_TRAIN, fields=PREFERENCE_FIELDS,
                       load=load_policy, build=build_trainer, callbacks=callbacks,
                       details=f" beta={recipe.beta} loss={recipe.loss_type} init_adapter={recipe.init_adapter}",
                       after_save=lambda trainer, save_dir: drop_reference_adapter(trainer.model, save_dir))


def load_policy(recipe: DPORecipe, precision: str):
    """The model to train: with init_adapter, the base with that adapter, trainable (and then no peft_config,
    which TRL refuses next to a PeftModel)."""
    model, tokenizer = load_for_training(recipe, precision)
    if recipe.init_adapter is not None:
        model = load_init_adapter(model, recipe)
    return model, tokenizer


def build_trainer(recipe: DPORecipe, model, tokenizer, rows, config):
    from trl import DPOTrainer

    full_copy = recipe.method == "full" and not recipe.precompute_ref_log_probs
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model) if full_copy else None, args=config,
                         train_dataset=rows, processing_class=tokenizer,
                         peft_config=peft_config(recipe) if recipe.init_adapter is None else None)
    warn_truncation(trainer.train_dataset, len(rows), config.max_length)
    return trainer


def drop_reference_adapter(model, save_dir: Path) -> None:
    """PeftModel.save_pretrained writes every adapter the model holds: the trained one at the top, any other in a
    subdirectory of its name. With init_adapter, TRL holds a frozen copy of the starting adapter named "ref"
    (DPOTrainer.__init__), which is not the result: its directory is removed, and only when the model holds an
    adapter of that name besides the trained one. Any other extra adapter (a TRL that renamed its copy) stays,
    with a warning, rather than being guessed at."""
    extra = set(getattr(model, "peft_config", {})) - {getattr(model, "active_adapter", None)}
    if "ref" in extra:
        shutil.rmtree(save_dir / "ref", ignore_errors=True)
    if extra - {"ref"}:
        warnings.warn(f"{save_dir}: saved with adapters {sorted(extra - {'ref'})} besides the trained one; TRL's "
                      "reference copy is no longer named 'ref' (revisit sft/dpo.py); the trained adapter is the "
                      "one at the top of the directory", RuntimeWarning, stacklevel=2)


def warn_truncation(dataset, n_rows: int, max_length: int) -> None:
    """TRL drops pairs whose prompt alone fills max_length and cuts the end (EOS included) of longer answers;
    say how many before training starts."""
    if len(dataset) == 0:
        raise InputError(f"every prompt is at least training.max_length={max_length} tokens long; raise it")
    dropped = n_rows - len(dataset)
    cut = sum(len(p) + max(len(c), len(r)) > max_length
              for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"]))
    if dropped or cut:
        print(f"[promptbake] warning: of {n_rows} pairs, {dropped} were dropped (prompt fills max_length={max_length})"
              f" and {cut} truncated; raise training.max_length")


def make_parser(subparsers=None):
    """`promptbake train dpo` (added to `subparsers`) or `python -m sft.dpo`."""
    return trainer_parser(subparsers, "dpo", DPORecipe, main,
                          "DPO on preference rows (reference: the adapter-disabled base)", "configs/dpo/demo_dpo.yaml")


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
