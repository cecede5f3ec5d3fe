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

from promptbake.core.config import InputError
from promptbake.core.layout import DatasetLayout
from sft.recipe import BaseRecipe, load_for_training, peft_config, run_trainer, trainer_parser

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

    def settings(self):
        packing = (self.packing, "use the recipe's `packing` (it checks the attention kernel)")
        return super().settings() | {"packing": packing, "padding_free": packing}


def main(recipe: SFTRecipe, resume: bool = False, callbacks: list | None = None) -> Path:
    """Train and return the adapter directory (or the model directory for full fine-tuning). `callbacks`
    (transformers TrainerCallbacks, e.g. sft.validation.ValidationCallback) join the trainer's own."""
    return run_trainer(recipe, resume, name="sft", rows_file=DatasetLayout.SFT_TRAIN, fields=("prompt", "completion"),
                       load=load_model, build=build_trainer, callbacks=callbacks)


def load_model(recipe: SFTRecipe, precision: str):
    """The model and tokenizer; with packing, only under an attention kernel that keeps packed samples apart."""
    model, tokenizer = load_for_training(recipe, precision)
    # transformers 5 has a public setter (set_attn_implementation) but no getter: the config's property is read,
    # and a transformers without it refuses packing rather than trusting an unknown kernel
    attention = getattr(model.config, "_attn_implementation", None)
    if recipe.packing and attention not in PACKING_SAFE_ATTENTION:
        known = f"runs {attention!r} attention" if attention else "does not say which attention kernel it runs"
        raise InputError(f"packing: the model {known}, which is not known to keep packed samples apart; packing "
                         f"needs one of {PACKING_SAFE_ATTENTION}")
    return model, tokenizer


def build_trainer(recipe: SFTRecipe, model, tokenizer, rows, config):
    from trl import SFTTrainer

    trainer = SFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer,
                         peft_config=peft_config(recipe))
    check_lengths(trainer.train_dataset, len(rows), config.max_length)
    return trainer


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
    from promptbake.core.entry import run_command

    run_command(make_parser())
