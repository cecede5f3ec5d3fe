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

from pydantic import Field, PositiveInt, model_validator

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
    end_token_weight: float = Field(1.0, gt=0.0)
    """The loss weight of the token that ends each answer (the end-of-turn token, the tokenizer's EOS) against 1
    for every other answer token (sft/end_weight.py). Above 1 the model learns harder to stop where the answers
    stop; 1 is TRL's loss. Needs TRL's default loss (`loss_type: nll`, no label smoothing)."""
    retention_rows: str | None = None
    """A JSONL file of prompt-completion rows outside the task (the bake's replay rows: the base's own answers to
    general questions). With it every training step adds `retention_weight` x KL(base || tuned) on a batch of these
    rows, the base being the model with its adapter off (sft/retention.py): the tuned model is held to what the
    base would say there. The rows are not trained on as answers. Needs an adapter (lora, qlora or dora)."""
    retention_weight: float = Field(1.0, gt=0.0)
    """The KL term's weight against SFT's loss (both are means per token)."""
    retention_batch_size: PositiveInt = 4
    """Retention rows per micro-batch (per process)."""

    @model_validator(mode="after")
    def _end_weight_has_its_loss(self):
        if self.end_token_weight != 1.0:
            if self.training.loss_type != "nll":
                raise ValueError(f"end_token_weight={self.end_token_weight} weighs TRL's nll loss; training.loss_type "
                                 f"is {self.training.loss_type!r}: set end_token_weight to 1 or loss_type to nll")
            if self.training.label_smoothing_factor:
                raise ValueError(f"end_token_weight={self.end_token_weight} weighs TRL's nll loss, which label "
                                 "smoothing replaces: set end_token_weight to 1 or training.label_smoothing_factor "
                                 "to 0")
        return self

    @model_validator(mode="after")
    def _retention_has_a_base(self):
        if self.retention_rows is not None and self.method == "full":
            raise ValueError("retention_rows holds the model to its base, which is the adapter switched off: pick "
                             "lora, qlora or dora, or leave retention_rows out")
        return self

    def settings(self):
        packing = (self.packing, "use the recipe's `packing` (it checks the attention kernel)")
        return super().settings() | {"packing": packing, "padding_free": packing}


def main(recipe: SFTRecipe, resume: bool = False, callbacks: list | None = None) -> Path:
    """Train and return the adapter directory (or the model directory for full fine-tuning). `callbacks`
    (transformers TrainerCallbacks, e.g. sft.validation.ValidationCallback) join the trainer's own."""
    return run_trainer(recipe, resume, name="sft", rows_file=DatasetLayout.SFT_TRAIN, fields=("prompt", "completion"),
                       load=load_model, build=build_trainer, callbacks=callbacks, precheck=precheck)


def precheck(recipe: SFTRecipe, rows_path: Path) -> None:
    """What the rows files show wrong, before the model loads: the training rows' prompt lengths, the retention rows'
    format (errors name file, line and field)."""
    check_prompt_lengths(recipe, rows_path)
    if recipe.retention_rows is not None:
        from sft.recipe import load_rows

        load_rows(Path(recipe.retention_rows), ("prompt", "completion"))


def check_prompt_lengths(recipe: SFTRecipe, rows_path: Path) -> None:
    """The too-small max_length, refused in a second rather than after torch, TRL and the model load: each row's
    prompt rendered by the model's chat template (jinja2, as transformers renders it) and tokenized by the
    `tokenizers` library (no torch); when it reaches max_length in every row, no row keeps a response token.
    The exact check (check_lengths, on TRL's own tokenization) still runs when training starts; a model without a
    tokenizer.json and a chat template in its directory, or a template this rendering cannot run, is left to it."""
    from promptbake.core.io import iter_jsonl

    render = prompt_renderer(recipe.model)
    if render is None:
        return
    max_length = recipe.training.max_length
    n = 0
    for _, row in iter_jsonl(rows_path):
        n += 1
        length = render(row["prompt"])
        if length is None or length < max_length:
            return
    raise InputError(f"training.max_length={max_length} leaves no response token in any of the {n} rows "
                     "(every prompt is at least that long); raise training.max_length")


def prompt_renderer(model: str):
    """A function from a prompt (messages) to its token count with the generation prompt, or None when the
    model's directory lacks what it needs. The function returns None for a prompt its template cannot render."""
    import json

    from promptbake.core.models import resolve_model_path

    try:
        root = Path(resolve_model_path(model))
    except InputError:
        return None
    config_path, tokenizer_path = root / "tokenizer_config.json", root / "tokenizer.json"
    if not (config_path.is_file() and tokenizer_path.is_file()):
        return None
    config = json.loads(config_path.read_text(encoding="utf-8"))
    template = config.get("chat_template")
    if template is None and (root / "chat_template.jinja").is_file():
        template = (root / "chat_template.jinja").read_text(encoding="utf-8")
    if not isinstance(template, str):
        return None
    from jinja2 import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from tokenizers import Tokenizer

    def token(name: str) -> str | None:
        value = config.get(name)
        return value.get("content") if isinstance(value, dict) else value

    # transformers' own environment for chat templates (trim_blocks, lstrip_blocks, loop controls)
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    try:
        compiled = env.from_string(template)
    except TemplateError:
        return None
    tokenizer = Tokenizer.from_file(str(tokenizer_path))

    def length(messages: list[dict]) -> int | None:
        try:
            text = compiled.render(messages=messages, add_generation_prompt=True, bos_token=token("bos_token"),
                                   eos_token=token("eos_token"))
        except Exception:  # a template that needs transformers' extra globals: left to the exact check
            return None
        return len(tokenizer.encode(text, add_special_tokens=False).ids)

    return length


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

    from sft.end_weight import EndTokenWeighting
    from sft.retention import RetentionKL, RetentionRows
    from sft.sampling import SeededLengthGrouping

    class SeededSFTTrainer(RetentionKL, EndTokenWeighting, SeededLengthGrouping, SFTTrainer):
        """TRL's SFTTrainer with a shuffle that depends on the seed and the epoch only (sft/sampling.py), an
        optional heavier loss on the answer's end token (sft/end_weight.py) and an optional KL retention term on
        rows outside the task (sft/retention.py)."""

    trainer = SeededSFTTrainer(model=model, args=config, train_dataset=rows, processing_class=tokenizer,
                               peft_config=peft_config(recipe))
    trainer.end_token_id, trainer.end_token_weight = tokenizer.eos_token_id, recipe.end_token_weight
    if recipe.retention_rows is not None:
        trainer.retention = RetentionRows.from_file(Path(recipe.retention_rows), tokenizer, config.max_length,
                                                    recipe.retention_batch_size, config.seed)
        trainer.retention_weight = recipe.retention_weight
        print(f"[promptbake] retention: KL to the base on {len(trainer.retention.encoded)} rows of "
              f"{recipe.retention_rows}, {recipe.retention_batch_size} a step, weight {recipe.retention_weight:g}")
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
