"""Prompt baking by distillation: the student (base + LoRA, NO prompt) learns to match the token distributions
of the teacher (the same base WITH the spec's full prompt) on the responses.

    python -m sft.distill configs/distill/demo_distill.yaml dataset=runs/demo/data/sft_train.jsonl

This is context distillation (Askell et al., 2021; Snell et al., 2022) / "Prompt Baking" (Bhargava et al.,
2024). Where SFT fits only the chosen tokens, the KL target carries the prompted model's whole next-token
distribution at every position. The teacher is the student's own base with the adapter switched off, so no
second copy of the model sits in memory; that is why full fine-tuning is not offered here.

On-policy: with `divergence: reverse_kl` on rows whose answers the student itself sampled, this is on-policy
distillation (GKD, Agarwal et al., 2024): the teacher scores every token the student says. The bake runs it as
`rounds.method=distill` (promptbake/rounds.py): each round samples the current adapter's answers to the training
inputs with the batched decoder, trains this trainer from that adapter (`init_adapter`) on them, and is kept only
when the validation slice improves. Sampling once per round rather than every step keeps decoding batched on a
CPU; within a round the samples grow slightly off-policy.

TRL's DistillationTrainer feeds teacher and student the same input ids; here they must differ (the teacher's
context has the prompt), so this is a small `transformers.Trainer` with its own loss, on the same recipe,
checkpoints, tracking and saved adapter as every other promptbake trainer.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from data_tools.spec import PromptSpec, load_spec
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
from sft.training import GROUP_BY_LENGTH, TRAINING_DEFAULTS, TrainingSpec


class DistillTraining(TrainingSpec):
    """`training:` for distillation: any field of transformers' TrainingArguments (the trainer is a plain
    transformers Trainer), and `max_length`, which cuts each pair's student and teacher to the same answer tokens."""

    config_path = "transformers.TrainingArguments"
    defaults = TRAINING_DEFAULTS | GROUP_BY_LENGTH


class DistillRecipe(ContinuingRecipe):
    output_dir: str = "runs/distill"
    training: DistillTraining = DistillTraining()
    spec: str
    """The prompt spec whose full prompt (system prompt, rules, few-shot examples) is the teacher's context."""
    with_examples: bool = True
    """Give the teacher the spec's few-shot examples too (as the data-building teacher saw them)."""
    temperature: float = Field(1.0, gt=0)
    """Softens both distributions; higher values transfer more of the teacher's ranking of unlikely tokens."""
    ce_weight: float = Field(0.0, ge=0)
    """Adds this much plain cross-entropy on the response tokens (0: pure divergence)."""
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"
    """forward_kl: KL(teacher || student), for answers the student did not write (the data's). reverse_kl:
    KL(student || teacher), mode-seeking, for the student's own samples (on-policy distillation: the bake's
    `rounds.method=distill`). jsd: GKD's generalised Jensen-Shannon divergence, weighted by `beta`."""
    beta: float = Field(0.5, ge=0.0, le=1.0)
    """jsd only: 0 is the forward KL, 1 the reverse KL (TRL's GKD convention)."""

    @model_validator(mode="after")
    def _needs_adapter(self):
        if self.method == "full":
            raise ValueError("distillation uses the adapter-disabled base as the teacher: pick lora, qlora or dora")
        return self

    def settings(self):
        return super().settings() | {"remove_unused_columns": (False, "the pair collator reads every column")}


def encode(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], int]:
    """Token ids of prompt + completion and where the completion starts. Prompt and completion are tokenized
    separately, so teacher and student see exactly the same completion tokens after different prompts."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("the chat template renders the prompt differently inside the full conversation")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    return prompt_ids + completion_ids, len(prompt_ids)


def main(recipe: DistillRecipe, resume: bool = False, callbacks: list | None = None,
         spec: PromptSpec | None = None) -> Path:
    """Train and return the adapter directory. `callbacks` (transformers TrainerCallbacks, e.g.
    sft.validation.ValidationCallback) join the trainer's own; `spec` is the spec as loaded by the caller (the
    bake's, with its overrides), else `recipe.spec` is loaded."""
    spec = spec or load_spec(recipe.spec)
    if recipe.init_adapter is not None:
        check_init_adapter(recipe)  # before any model loads
    return run_trainer(recipe, resume, name="distill", rows_file=DatasetLayout.SFT_TRAIN,
                       fields=("prompt", "completion"), callbacks=callbacks,
                       load=load_student, build=functools.partial(build_trainer, spec=spec),
                       details=f" teacher=base+full prompt of {spec.name} divergence={recipe.divergence}"
                               f" init_adapter={recipe.init_adapter}")


def load_student(recipe: DistillRecipe, precision: str):
    """The base with a new adapter (or `init_adapter`, trainable): the student; with the adapter switched off,
    the teacher."""
    from peft import get_peft_model

    model, tokenizer = load_for_training(recipe, precision)
    if recipe.init_adapter is not None:
        return load_init_adapter(model, recipe), tokenizer
    return get_peft_model(model, peft_config(recipe)), tokenizer


def build_trainer(recipe: DistillRecipe, model, tokenizer, rows, config, spec):
    from sft.distill_loss import DistillTrainer, PairCollator

    max_length = recipe.training.max_length

    def pair(row):
        user = row["prompt"][-1]["content"]
        student_ids, student_start = encode(tokenizer, row["prompt"], row["completion"])
        teacher_ids, teacher_start = encode(tokenizer, spec.prompted_messages(user, recipe.with_examples),
                                            row["completion"])
        # truncate the student to max_length and the teacher to the same number of response tokens
        keep = min(len(student_ids), max_length) - student_start
        return {"student_ids": student_ids[: student_start + keep], "student_start": student_start,
                "teacher_ids": teacher_ids[: teacher_start + keep], "teacher_start": teacher_start,
                # what group_by_length sorts by (the trainer's `length_column_name`)
                "length": len(teacher_ids[: teacher_start + keep])}

    return DistillTrainer(model=model, args=config, train_dataset=rows.map(pair, remove_columns=rows.column_names),
                          processing_class=tokenizer, data_collator=PairCollator(tokenizer.pad_token_id),
                          temperature=recipe.temperature, ce_weight=recipe.ce_weight,
                          divergence=recipe.divergence, beta=recipe.beta)


def make_parser(subparsers=None):
    """`promptbake train distill` (added to `subparsers`) or `python -m sft.distill`."""
    return trainer_parser(subparsers, "distill", DistillRecipe, main,
                          "prompt baking: match the prompted base's distributions (KL or JSD)",
                          "configs/distill/demo_distill.yaml")


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
