"""Supervised fine-tuning (LoRA, QLoRA, DoRA or full) on promptbake's prompt-completion rows, with TRL's
SFTTrainer.

    promptbake train sft configs/sft/demo_lora.yaml [key=value ...] [--resume]
    accelerate launch -m sft.train configs/sft/demo_lora.yaml          # same run under Accelerate

The loss covers the completion only (TRL's default for prompt-completion rows), and the completion ends
with the chat template's end-of-turn token, which is the tokenizer's EOS: the tuned model learns to stop.
Writes `<output_dir>/adapter` (the adapter weights, tokenizer and `promptbake_run.json` naming the base model;
`<output_dir>/model` for full fine-tuning) and intermediate checkpoints under `<output_dir>/checkpoints`.
"""

from __future__ import annotations

from pathlib import Path

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

# Attention implementations that keep packed samples apart. TRL's padding-free batches carry each sample's
# positions (restarting at 0) and no attention mask: flash attention reads the sequence boundaries from them,
# and for sdpa and eager attention transformers (>= 5) builds a block-diagonal causal mask from them whenever
# there is no attention mask and no cache. tests/test_methods.py checks that packed rows score as they would
# alone under each of sdpa and eager. Any other kernel is refused rather than trusted.
PACKING_SAFE_ATTENTION = ("flash_attention_2", "flash_attention_3", "sdpa", "eager")


class SFTRecipe(BaseRecipe):
    output_dir: str = "runs/sft"
    packing: bool = False
    """Pack several rows into each max_length sequence (best-fit decreasing, no padding). Samples stay apart
    (see PACKING_SAFE_ATTENTION). With sdpa/eager attention the kernel computes the whole packed row under a
    block mask (masked scores included), so attention costs more than for the same rows padded."""


def main(recipe: SFTRecipe, resume: bool = False, callbacks: list | None = None) -> Path:
    """Train and return the adapter directory (or the model directory for full fine-tuning). `callbacks`
    (transformers TrainerCallbacks, e.g. sft.validation.ValidationCallback) join the trainer's own."""
    from trl import SFTConfig, SFTTrainer

    rows_path = dataset_file(recipe.dataset, "sft_train.jsonl")
    train_rows = load_rows(rows_path, ("prompt", "completion"))
    precision = choose_precision(recipe.precision)
    tracking = setup_tracking(recipe)
    print(f"[promptbake] sft method={recipe.method} precision={precision} model={recipe.model} "
          f"rows={len(train_rows)} tracking={tracking}")
    model, tokenizer = load_for_training(recipe, precision)
    # transformers 5 has a public setter (set_attn_implementation) but no getter: the config's property is read,
    # and a transformers without it refuses packing rather than trusting an unknown kernel
    attention = getattr(model.config, "_attn_implementation", None)
    if recipe.packing and attention not in PACKING_SAFE_ATTENTION:
        known = f"runs {attention!r} attention" if attention else "does not say which attention kernel it runs"
        raise InputError(f"packing: the model {known}, which is not known to keep packed samples apart; packing "
                         f"needs one of {PACKING_SAFE_ATTENTION}")
    args = SFTConfig(**trainer_args(recipe, precision), max_length=recipe.training.max_length,
                     completion_only_loss=True, packing=recipe.packing, padding_free=recipe.packing)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer,
                         peft_config=peft_config(recipe),
                         callbacks=callbacks)
    check_lengths(trainer.train_dataset, len(train_rows), recipe.training.max_length)
    return train_and_save(trainer, recipe, tokenizer, rows_path, precision, resume)


def check_lengths(dataset, n_rows: int, max_length: int) -> None:
    """Before training starts: refuse a max_length that leaves no response token in any row (TRL drops such
    rows, which would leave nothing to train on), and count rows that lose their end (and EOS) to truncation."""
    if len(dataset) == 0:
        raise InputError(f"training.max_length={max_length} leaves no response token in any of the {n_rows} rows "
                         "(every prompt is at least that long); raise training.max_length")
    dropped = n_rows - len(dataset)
    lengths = [len(ids) for ids in dataset["input_ids"]]
    over = sum(n >= max_length for n in lengths)
    if over or dropped:
        print(f"[promptbake] warning: {over} of {n_rows} rows reach max_length={max_length} and are truncated, "
              f"{dropped} more are dropped with no response token left; raise training.max_length")


def make_parser(subparsers=None):
    """`promptbake train sft` (added to `subparsers`) or `python -m sft.train`."""
    return trainer_parser(subparsers, "sft", SFTRecipe, main,
                          "SFT (LoRA/QLoRA/DoRA/full) on prompt-completion rows", "configs/sft/demo_lora.yaml")


if __name__ == "__main__":
    from promptbake.entry import run_command

    run_command(make_parser())
