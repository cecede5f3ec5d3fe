"""Online RL with TRL's GRPOTrainer: the model answers each training input several times, and each answer
is rewarded by the prompt spec's own checks (and/or a trained reward model).

    python -m sft.rl configs/rl/demo_grpo.yaml dataset=runs/demo/data/sft_train.jsonl [key=value ...] [--resume]
    accelerate launch -m sft.rl configs/rl/demo_grpo.yaml dataset=...             # same run under Accelerate

The "checks" reward is the fraction of the spec's checked rules an answer passes (0..1), scored by
`data_tools.scoring.score` against the input: the same checks that picked the training data and that grade
the evals. GRPO compares the `num_generations` answers to the same input, so an answer is pushed up or down
by how it scores relative to its siblings; a group whose answers all score the same teaches nothing.

Prompts are the bare training inputs (no rules, no system prompt), as in SFT: the model is rewarded for
following the rules unprompted. The dataset is a prompt-only JSONL (`{"prompt": [user message]}`) or an
`sft_train.jsonl`, whose `completion` column is ignored. Generation runs in transformers by default, so the
same recipe runs on a CPU. On a GPU machine with vLLM installed, `training.use_vllm: true` (TRL's GRPOConfig field,
in TRL's colocate mode: vLLM shares the training GPU, `training.vllm_gpu_memory_utilization` of it, and takes the
policy's weights after each step) generates with vLLM instead: generation is the known bottleneck of online RL.
Start from an SFT run by setting `model` to its adapter directory (merged into the base in memory; a new adapter
trains on top).

Writes `<output_dir>/adapter` (or `<output_dir>/model`) with `promptbake_run.json`, and checkpoints under
`<output_dir>/checkpoints`. TRL logs the mean total reward as `reward` and each source as
`rewards/checks/mean`, `rewards/reward_model/mean`.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from data_tools.scoring import score
from data_tools.spec import PromptSpec, Rule, load_spec
from promptbake.core.config import FieldError, InputError
from promptbake.core.layout import DatasetLayout
from sft.recipe import BaseRecipe, peft_config, run_trainer, trainer_parser
from sft.training import TRAINING_DEFAULTS, TrainingSpec


class GRPOTraining(TrainingSpec):
    """`training:` for GRPO: any field of TRL's GRPOConfig (https://huggingface.co/docs/trl/grpo_trainer). GRPO
    samples its own batches (each input `num_generations` times), so no sampling strategy applies."""

    config_path = "trl.GRPOConfig"
    defaults = TRAINING_DEFAULTS


class RLRecipe(BaseRecipe):
    output_dir: str = "runs/rl"
    training: GRPOTraining = GRPOTraining()
    spec: str
    """The prompt spec YAML whose checked rules are the "checks" reward."""
    reward: Literal["checks", "reward_model", "both"] = "checks"
    """checks: share of the spec's checks passed; reward_model: a trained reward model's score (for rules no
    check captures); both: their weighted sum."""
    reward_model: str | None = None
    """A reward run directory from `python -m sft.reward` (needed for reward_model and both)."""
    reward_weights: list[float] | None = None
    """One weight per reward source ([checks, reward_model] for both); None weighs them equally. A reward model's
    score is unbounded while checks lie in 0..1: raise the checks weight to let the hard rules dominate."""
    num_generations: int = Field(4, ge=2)
    """Answers sampled per input. More answers give a steadier comparison within the group and cost more
    generation. training.per_device_train_batch_size counts answers, so it must be a multiple of this."""
    max_completion_length: PositiveInt = 48
    """New tokens per answer; longer answers are cut, which usually fails length and ending rules. (It takes the
    place of training.max_length, which GRPO does not use: prompts are never cut.)"""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature. Higher temperature makes answers in a group differ more (more to learn from) and
    makes each answer less likely to be good."""
    beta: float = Field(0.0, ge=0)
    """KL penalty towards the starting model. 0 (TRL's default) skips the reference forward pass; raising it
    (e.g. 0.04) keeps the policy closer to where it started. With an adapter the reference is the model with
    the adapter switched off: no second copy in memory."""

    @field_validator("num_generations")
    @classmethod
    def _batch_counts_answers(cls, n: int, info: ValidationInfo) -> int:
        """Checked as the field is read, before GRPOConfig's own check of the same (less plainly worded)."""
        training = info.data.get("training")
        if training is not None:
            answers = training.per_device_train_batch_size * training.gradient_accumulation_steps
            if isinstance(answers, int) and answers % n:  # not a number yet: the config's check says so
                raise ValueError(f"training.per_device_train_batch_size x gradient_accumulation_steps ({answers}) "
                                 f"counts answers and must be a multiple of num_generations ({n})")
        return n

    @model_validator(mode="after")
    def _rewards_fit(self):
        if self.reward != "checks" and self.reward_model is None:
            raise ValueError(f"reward {self.reward!r} needs `reward_model`: a reward run directory")
        if self.reward == "checks" and self.reward_model is not None:
            raise ValueError("`reward_model` is set but reward is 'checks'; set reward to reward_model or both")
        n_sources = 2 if self.reward == "both" else 1
        if self.reward_weights is not None and len(self.reward_weights) != n_sources:
            raise ValueError(f"reward_weights needs {n_sources} value(s) for reward {self.reward!r}, "
                             f"got {len(self.reward_weights)}")
        return self

    @model_validator(mode="after")
    def _vllm_is_importable(self):
        """Said when the recipe loads, not after the model did: TRL checks only when the trainer starts."""
        if self.training.use_vllm and importlib.util.find_spec("vllm") is None:
            raise FieldError([(("training", "use_vllm"), "generates with vLLM, and `vllm` is not importable in this "
                                                         "environment: install it on the GPU machine (pip install "
                                                         "vllm) or leave use_vllm off (transformers generates)")])
        return self

    def settings(self):
        return super().settings() | {name: (getattr(self, name), f"use the recipe's `{name}`") for name in
                                     ("num_generations", "max_completion_length", "temperature", "beta",
                                      "reward_weights")}


def text_of(messages: str | list[dict], role: str) -> str:
    """The content of the last `role` message of a conversation (a plain string passes through)."""
    if isinstance(messages, str):
        return messages
    return next(m["content"] for m in reversed(messages) if m["role"] == role)


def checks(prompts: list, completions: list, rules: list[Rule], **_) -> list[float]:
    """GRPO reward function: the share of checked rules each completion passes, judged against its input
    (the last user message). TRL calls it with `prompts`, `completions` and the dataset's other columns."""
    rewards = []
    for prompt, completion in zip(prompts, completions, strict=True):
        results = score(rules, text_of(prompt, "user"), text_of(completion, "assistant"))
        rewards.append(sum(r.passed for r in results.values()) / len(results))
    return rewards


def reward_model(prompts: list, completions: list, scorer, **_) -> list[float]:
    """GRPO reward function: a trained reward model's score for each (conversation, answer)."""
    return scorer.score_batch(prompts, [text_of(c, "assistant") for c in completions])


def main(recipe: RLRecipe, resume: bool = False, callbacks: list | None = None,
         spec: PromptSpec | None = None) -> Path:
    """Train and return the adapter directory (or the model directory for full fine-tuning). `callbacks`
    (transformers TrainerCallbacks, e.g. sft.validation.ValidationCallback) join the trainer's own; `spec` is the
    spec as loaded by the caller (the bake's, with its overrides), else `recipe.spec` is loaded."""
    spec = spec or load_spec(recipe.spec)
    if not any(r.check is not None for r in spec.rules):
        raise InputError(f"{recipe.spec}: no rule has a check, so there is nothing for the checks reward to score")
    reward_funcs, scorer = [], None
    if recipe.reward in ("checks", "both"):
        reward_funcs.append(functools.partial(checks, rules=spec.rules))
    if recipe.reward in ("reward_model", "both"):
        from sft.reward import load_reward_model

        scorer = load_reward_model(recipe.reward_model)
        reward_funcs.append(functools.partial(reward_model, scorer=scorer))
    build = functools.partial(build_trainer, reward_funcs=reward_funcs, scorer=scorer)
    return run_trainer(recipe, resume, name="rl (grpo)", rows_file=DatasetLayout.SFT_TRAIN, fields=("prompt",),
                       build=build, callbacks=callbacks,
                       details=f" reward={recipe.reward} answers_per_prompt={recipe.num_generations}")


def build_trainer(recipe: RLRecipe, model, tokenizer, rows, config, reward_funcs: list, scorer):
    from trl import GRPOTrainer

    trainer = GRPOTrainer(model=model, reward_funcs=reward_funcs, args=config,
                          train_dataset=rows.select_columns(["prompt"]), processing_class=tokenizer,
                          peft_config=peft_config(recipe))
    if scorer is not None:
        scorer.model.to(trainer.accelerator.device)
    return trainer


def make_parser(subparsers=None):
    """`promptbake train rl` (added to `subparsers`) or `python -m sft.rl`."""
    return trainer_parser(subparsers, "rl", RLRecipe, main,
                          "online RL (GRPO) with the spec's checks and/or a reward model as reward",
                          "configs/rl/demo_grpo.yaml")


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
