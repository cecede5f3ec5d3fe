"""The trainer table: every training method promptbake runs, one row each.

    promptbake train sft|distill|dpo|reward|rl CONFIG      # the CLI lists these modules (promptbake/cli.py)
    recipe_cls, train = TRAINERS["dpo"].load()           # the bake's rounds load their trainer through it

A row names the module that holds the method's recipe class and its `main(recipe, resume, callbacks, ...)`, and
the rows file of a build directory it reads. Adding a method is its module plus one row here: the CLI command and
the rounds' access follow. Importing this file loads nothing heavy (the modules are imported on `load`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from promptbake.core.layout import DatasetLayout


@dataclass(frozen=True)
class Trainer:
    name: str
    """The method's name: `promptbake train NAME`, `python -m MODULE`."""
    module: str
    recipe: str
    """The recipe class's name inside `module` (a promptbake.core.config.StrictModel read from YAML)."""
    rows_file: str
    """What it trains on, in a build directory."""
    what: str

    def load(self) -> tuple[type, Callable]:
        """The recipe class and the `main` that trains it (imports the module: TRL and torch, seconds)."""
        module = importlib.import_module(self.module)
        return getattr(module, self.recipe), module.main


TRAINERS: dict[str, Trainer] = {t.name: t for t in (
    Trainer("sft", "sft.train", "SFTRecipe", DatasetLayout.SFT_TRAIN,
            "supervised fine-tuning (LoRA, QLoRA or full) on prompt/completion rows"),
    Trainer("distill", "sft.distill", "DistillRecipe", DatasetLayout.SFT_TRAIN,
            "on-policy prompt distillation: the student's own answers under a per-token divergence to the prompted "
            "base"),
    Trainer("dpo", "sft.dpo", "DPORecipe", DatasetLayout.PREFS_TRAIN, "direct preference optimization on chosen/"
            "rejected pairs"),
    Trainer("reward", "sft.reward", "RewardRecipe", DatasetLayout.PREFS_TRAIN,
            "a reward model trained on chosen/rejected pairs"),
    Trainer("rl", "sft.rl", "RLRecipe", DatasetLayout.SFT_TRAIN, "GRPO rewarded by the spec's checks (or a reward "
            "model)"),
)}
