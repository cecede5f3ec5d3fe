"""The bake's plan: what it will do, decided once from the spec and the bake config before any model loads.

`make_plan` computes it (the validation slice from the inputs, the synthesis target, the token limit that
validation and the eval share, the arms), the bake prints it and stores it in bake.json, and each stage takes
its part from this one typed object instead of recomputing it. The stage configs are the user's spec and
config with the plan's fields set (`model_copy(update=...)`), never override strings parsed back.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ConfigDict

from promptbake.core.config import StrictModel
from promptbake.core.layout import RunLayout

EVAL_MIN_NEW_TOKENS = 64
"""Validation and the eval give every answer at least this many new tokens: a model that rambles past a length
rule must be seen doing it, whatever the teacher's own limit."""


class BakePlan(StrictModel):
    model_config = ConfigDict(frozen=True)

    run_dir: str
    inputs: int
    """Distinct inputs the spec gives."""
    train_side_inputs: int
    """Of those, the ones on the training side of the held-out split (the validation slice comes from these)."""
    synthesis_min_inputs: int
    """Inputs the data stage tops the training side up to with synthesized ones (0: none)."""
    validation_inputs: int
    """The validation slice (0: none; training then runs its whole budget and keeps the last step)."""
    validation_evaluations: int
    validation_patience: int
    max_new_tokens: int
    """New tokens per answer for validation, the eval arms and the on-policy rounds."""
    eval_batch_size: int
    arms: list[str]
    judge: bool
    """Whether the pairwise content judge runs (specs without labels)."""
    rounds: str
    export: bool
    strength_search: bool = False
    """Whether the adapter's strength is chosen on the validation slice (promptbake/strength.py)."""
    replay_fraction: float = 0.0
    """Replay rows (the base's own answers to general questions) per spec row mixed into SFT (0: none)."""
    replay_when: str = "always"
    """always, or sft_drifts: replay trained only when the SFT adapter keeps under the goal of the base's correct
    general answers (promptbake/replay.py)."""

    @property
    def layout(self) -> RunLayout:
        return RunLayout(Path(self.run_dir))

    def describe(self) -> str:
        validation = (f"validation on {self.validation_inputs} inputs, {self.validation_evaluations} measurements "
                      f"at most, patience {self.validation_patience}" if self.validation_inputs
                      else "no validation slice")
        synthesis = (f", synthesized up to {self.synthesis_min_inputs}" if self.synthesis_min_inputs > self.inputs
                     else "")
        return (f"[promptbake] plan: {self.inputs} inputs ({self.train_side_inputs} on the training side"
                f"{synthesis}); {validation}; answers up to {self.max_new_tokens} new tokens; eval arms "
                f"{', '.join(self.arms)}{' + content judge' if self.judge else ''}; rounds {self.rounds}; "
                f"{'strength chosen on validation; ' if self.strength_search else ''}"
                f"{f'replay rows {self.replay_fraction:g} per spec row' if self.replay_fraction else ''}"
                f"{' if SFT drifts' if self.replay_fraction and self.replay_when == 'sft_drifts' else ''}"
                f"{'; ' if self.replay_fraction else ''}"
                f"export {'on' if self.export else 'off'}; run directory {self.run_dir}")


def validation_size(n_train: int, v, n_given: int | None = None) -> int:
    """How many of the training inputs to set aside. `n_train` counts the training inputs there will be,
    synthesized ones included; the slice comes from the `n_given` given ones, at most half of them."""
    n = min(v.max_inputs, round(v.fraction * n_train))
    if n < v.min_inputs:
        n = v.min_inputs if n_train - v.min_inputs >= v.min_train_inputs else 0
    if n_given is not None and n > n_given // 2:
        n = n_given // 2 if n_given // 2 >= v.min_inputs else 0
    return n


def synthesis_target(spec, config) -> int:
    """The spec's synthesis.min_inputs, else the bake's default where synthesis can apply (not to logs)."""
    if spec.synthesis.min_inputs:
        return spec.synthesis.min_inputs
    if spec.inputs.format == "chat_logs":
        return 0
    return config.synthesis_min_inputs


def make_plan(user_spec, config, run: Path) -> BakePlan:
    """The plan for baking `user_spec` (a loaded PromptSpec) with `config` (a BakeConfig) into `run`."""
    from data_tools.inputs import load_inputs, split_inputs

    texts = list(load_inputs(user_spec, quiet=True))  # to plan the slice; the build reports repeats
    train, _ = split_inputs(texts, user_spec.split.eval_fraction, user_spec.split.seed)
    synth = synthesis_target(user_spec, config)
    # labelled synthesized inputs count only where the teacher confirms their label (often a small share, known
    # only after the build): the slice is planned on the ones that are sure to train
    planned = 0 if user_spec.inputs.label_names() else max(0, synth - len(texts))
    arms = ["base_prompted", "tuned_unprompted", "constant",
            *(["base_prompted_repaired", "base_prompted_best_of_n"] if config.inference_arms else []),
            *(["drift"] if config.drift else [])]
    return BakePlan(run_dir=str(run), inputs=len(texts), train_side_inputs=len(train), synthesis_min_inputs=synth,
                    validation_inputs=validation_size(len(train) + planned, config.validation, len(train)),
                    validation_evaluations=config.validation.evaluations,
                    validation_patience=config.validation.patience,
                    max_new_tokens=max(EVAL_MIN_NEW_TOKENS, user_spec.teacher.sampling.max_new_tokens),
                    eval_batch_size=config.eval_batch_size, arms=arms,
                    judge=bool((config.judge if config.judge is not None else config.judge_model)
                               and not user_spec.inputs.label_names()),
                    rounds=config.rounds.method, export=config.export, strength_search=config.strength.search,
                    replay_fraction=config.replay.fraction, replay_when=config.replay.when)


def data_spec(user_spec, plan: BakePlan):
    """The spec the data stage builds: the user's, writing into the run directory, with the plan's validation
    slice and synthesis target."""
    return user_spec.model_copy(update={
        "output_dir": str(plan.layout.data.root),
        "split": user_spec.split.model_copy(update={"validation_size": plan.validation_inputs}),
        "synthesis": user_spec.synthesis.model_copy(update={"min_inputs": plan.synthesis_min_inputs})})
