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
from typing import Literal

from pydantic import Field, model_validator

from promptbake.config import InputError
from sft.recipe import (
    BaseRecipe,
    choose_precision,
    dataset_file,
    load_for_training,
    load_rows,
    peft_config,
    setup_tracking,
    train_and_save,
    trainer_args,
    trainer_parser,
)

PREFERENCE_FIELDS = ("prompt", "chosen", "rejected")
# TRL's DPO loss variants (DPOConfig.loss_type), checked here so that a typo fails before any model loads
LossType = Literal["sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
                   "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]


class DPORecipe(BaseRecipe):
    output_dir: str = "runs/dpo"
    beta: float = Field(0.1, gt=0)
    """How strongly the policy is held to the reference: the loss reads the log-prob margins scaled by beta.
    Higher beta keeps the policy closer to the reference (safer, learns the preference more slowly); lower beta
    lets it move further (typical 0.05-0.5)."""
    loss_type: LossType = "sigmoid"
    """sigmoid: the original DPO loss; ipo: squared loss that does not push margins to infinity (more robust on
    noisy or easy pairs); others as in TRL's DPOConfig."""
    precompute_ref_log_probs: bool = False
    """Compute every reference log-prob once before training. Saves the reference forward pass on each step,
    and with full fine-tuning the memory of a second model; costs one pass over the data up front."""
    init_adapter: str | None = None
    """An SFT run's adapter directory to continue training (the usual SFT -> DPO flow). The reference is then
    the starting adapter, frozen. Its rank and targets come from the adapter, so a `lora` section is refused."""

    @model_validator(mode="after")
    def _init_adapter_fits(self):
        if self.init_adapter is not None:
            if self.method == "full":
                raise ValueError("init_adapter continues a LoRA adapter; it does not combine with method 'full'")
            if "lora" in self.model_fields_set:
                raise ValueError("init_adapter fixes the adapter's rank and target modules; remove the `lora` section")
        return self


def main(recipe: DPORecipe, resume: bool = False, callbacks: list | None = None) -> Path:
    """Train and return the adapter directory (or the model directory for full fine-tuning). `callbacks`
    (transformers TrainerCallbacks, e.g. sft.validation.ValidationCallback) join the trainer's own."""
    from trl import DPOConfig, DPOTrainer

    rows_path = dataset_file(recipe.dataset, "prefs_train.jsonl")
    train_rows = load_rows(rows_path, PREFERENCE_FIELDS)
    precision = choose_precision(recipe.precision)
    tracking = setup_tracking(recipe)
    print(f"[promptbake] dpo method={recipe.method} beta={recipe.beta} loss={recipe.loss_type} "
          f"precision={precision} model={recipe.model} init_adapter={recipe.init_adapter} "
          f"pairs={len(train_rows)} tracking={tracking}")
    if recipe.init_adapter is not None:
        check_init_adapter(recipe)  # before any model loads
    model, tokenizer = load_for_training(recipe, precision)
    adapter = peft_config(recipe) if recipe.init_adapter is None else None
    if recipe.init_adapter is not None:
        from peft import PeftModel

        # trainable; passed without a peft_config, which TRL refuses next to a PeftModel
        model = PeftModel.from_pretrained(model, recipe.init_adapter, is_trainable=True)
    args = DPOConfig(**preference_args(recipe, precision), max_length=recipe.training.max_length, beta=recipe.beta,
                     loss_type=[recipe.loss_type], precompute_ref_log_probs=recipe.precompute_ref_log_probs)
    full_copy = recipe.method == "full" and not recipe.precompute_ref_log_probs
    trainer = DPOTrainer(model=model, ref_model=copy.deepcopy(model) if full_copy else None, args=args,
                         train_dataset=train_rows, processing_class=tokenizer, peft_config=adapter,
                         callbacks=callbacks)
    warn_truncation(trainer.train_dataset, len(train_rows), recipe.training.max_length)
    save_dir = train_and_save(trainer, recipe, tokenizer, rows_path, precision, resume)
    drop_reference_adapter(trainer.model, save_dir)
    return save_dir


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


def preference_args(recipe: BaseRecipe, precision: str) -> dict:
    """`trainer_args` for the preference trainers (DPO, reward), which batch pairs at random: transformers'
    group-by-length sampler measures an `input_ids` column, and TRL's tokenized pairs have none (they hold
    prompt_ids / chosen_ids / rejected_ids)."""
    return {**trainer_args(recipe, precision), "train_sampling_strategy": "random"}


def check_init_adapter(recipe: DPORecipe) -> None:
    """init_adapter must be an adapter directory trained on this recipe's base model."""
    from promptbake.models import read_run_info

    path = Path(recipe.init_adapter)
    if not (path / "adapter_config.json").is_file():
        raise InputError(f"init_adapter {recipe.init_adapter!r}: not an adapter directory (no adapter_config.json)")
    info = read_run_info(str(path))
    if info is not None and info["base_model"] != recipe.model:
        raise InputError(f"init_adapter {recipe.init_adapter!r} was trained on base {info['base_model']!r}, "
                         f"not {recipe.model!r}: set model={info['base_model']}")


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
    from promptbake.entry import run_command

    run_command(make_parser())
