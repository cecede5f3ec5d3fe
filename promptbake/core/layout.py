"""Where things are on disk: every file name a data build or a bake run writes, owned here once.

A stage that writes a file and a stage that reads it name it through these classes, so that a renamed file is
one edit and a reader never guesses. Plain paths, no I/O: the readers validate what they read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetLayout:
    """A data build's output directory (`promptbake data build`, the bake's `data/`)."""

    root: Path

    MANIFEST = "manifest.json"
    SFT_TRAIN = "sft_train.jsonl"
    PREFS_TRAIN = "prefs_train.jsonl"
    EVAL_INPUTS = "eval_inputs.jsonl"
    VAL_INPUTS = "val_inputs.jsonl"
    TRAIN_INPUTS = "train_inputs.jsonl"
    REJECTS = "rejects.jsonl"
    SYNTHESIZED = "synthesized.jsonl"

    @property
    def manifest(self) -> Path:
        """Written last: its presence means the build finished."""
        return self.root / self.MANIFEST

    @property
    def sft_train(self) -> Path:
        """TRL prompt-completion rows: the bare input and the checked teacher answer."""
        return self.root / self.SFT_TRAIN

    @property
    def prefs_train(self) -> Path:
        """TRL preference rows (chosen: the kept answer, rejected: a failing sample)."""
        return self.root / self.PREFS_TRAIN

    @property
    def eval_inputs(self) -> Path:
        """The held-out inputs (prompt-only rows, labels where the spec has them): the final eval's."""
        return self.root / self.EVAL_INPUTS

    @property
    def val_inputs(self) -> Path:
        """The validation slice, carved from the training side; absent when the split has none."""
        return self.root / self.VAL_INPUTS

    @property
    def train_inputs(self) -> Path:
        """The training inputs as prompt-only rows (on-policy rounds answer these)."""
        return self.root / self.TRAIN_INPUTS

    @property
    def rejects(self) -> Path:
        return self.root / self.REJECTS

    @property
    def synthesized(self) -> Path:
        return self.root / self.SYNTHESIZED


@dataclass(frozen=True)
class RunLayout:
    """A bake's run directory: one subdirectory per stage and the files the pipeline writes at its top."""

    root: Path

    STATE = "bake.json"
    VERDICT = "verdict.json"
    REPORT_MD = "report.md"
    REPORT_HTML = "report.html"
    STAGE_DIRS = {"data": "data", "replay": "replay", "sft": "sft", "replay_choice": "replay_choice",
                  "rounds": "rounds", "strength": "strength", "eval": "eval", "export": "merged"}
    """Where each stage writes inside the run directory."""

    def stage_dir(self, stage: str) -> Path:
        return self.root / self.STAGE_DIRS[stage]

    @property
    def data(self) -> DatasetLayout:
        return DatasetLayout(self.stage_dir("data"))

    @property
    def sft(self) -> Path:
        return self.stage_dir("sft")

    @property
    def rounds(self) -> Path:
        return self.stage_dir("rounds")

    @property
    def eval(self) -> Path:
        return self.stage_dir("eval")

    @property
    def merged(self) -> Path:
        return self.stage_dir("export")

    @property
    def state(self) -> Path:
        return self.root / self.STATE

    @property
    def verdict(self) -> Path:
        return self.root / self.VERDICT
