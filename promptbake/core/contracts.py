"""What one stage hands the next, typed: the data build's manifest, the eval's metrics and the bake's verdict.

The files stay plain JSON (a user reads them, W&B logs them); these models say which fields a reader relies on
and check them where a file is read, so that a run directory written by an older promptbake, or edited by hand,
fails with the file and the field named instead of a KeyError deep in the verdict. Fields a reader does not rely
on pass through unchecked (`extra="allow"`): adding a figure to a stage does not break an older reader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from promptbake.core.config import InputError


class Contract(BaseModel):
    model_config = ConfigDict(extra="allow")


class ManifestCounts(Contract):
    inputs: int
    train_inputs: int
    val_inputs: int = 0
    eval_inputs: int
    sft_rows: int
    pref_rows: int = 0
    rejects: int = 0


class Manifest(Contract):
    """`manifest.json` of a data build (data_tools/build.py; a merged shard build: data_tools/merge.py)."""

    spec: str
    spec_hash: str
    counts: ManifestCounts
    provenance: dict[str, int] = {}
    raw_pass_rate_per_rule: dict[str, float]
    raw_all_rules_pass_rate: float
    time_s: float


class ArmMetrics(Contract):
    """One arm's figures in `metrics.json` (evals/arms.py:score_answers and the arm's cost)."""

    n: int
    all_rules_passed: int
    all_rules_adherence: float
    all_rules_ci95: list[float]
    per_rule: dict[str, float]
    answer_diversity: float
    prompt_tokens_per_request: float
    generated_tokens_per_request: float
    latency_s_per_request: float
    label_match: float | None = None


class EvalMetrics(Contract):
    """`metrics.json` of an eval (evals/run.py) as the bake's verdict reads it: the two arms every bake runs,
    the others where they ran, the McNemar p-values against the prompted base."""

    base_prompted: ArmMetrics
    tuned_unprompted: ArmMetrics
    constant: ArmMetrics | None = None
    base_prompted_repaired: ArmMetrics | None = None
    base_prompted_best_of_n: ArmMetrics | None = None
    vs_base_prompted: dict[str, float] = {}
    profile_s: dict[str, float] = {}


class Verdict(Contract):
    """`verdict.json` of a bake: promptbake/verdict.py's judgement of the eval, then the bake's facts about the run
    (read by scripts/bench_bake.py, bench_methods.py and bench_all.py)."""

    outcome: Literal["won", "undecided", "not won"]
    won: bool
    relation: str
    base_prompted: float
    tuned_unprompted: float
    n: int
    mcnemar_p: float
    constant: float | None = None
    label_match: dict[str, float | None] = {}
    judge: dict | None = None
    reasons: list[str]
    statement: str
    alternatives: str | None = None
    cheapest_reaching_tuned: str | None = None
    min_decisive_n: int
    provenance: dict[str, int] | None = None
    diagnosis: list[str]
    try_first: str | None = None
    spec: str
    run_dir: str
    time_s: float
    stage_times_s: dict[str, float] = {}
    """Seconds per stage run by this process (a resumed bake's finished stages are not in it)."""
    profile_s: dict[str, dict[str, float]] = {}
    """Inside each stage: where its time went."""
    budget_steps: int
    kept_step: int | None = None
    drift: dict | None = None
    """evals/drift.py:drift_summary (None when the drift arm did not run)."""
    drift_warning: str | None = None
    strength: float | None = None
    """The adapter's strength the strength stage kept (None when it did not run)."""


C = TypeVar("C", bound=Contract)


def check_contract(model: type[C], data: object, source: str | Path) -> C:
    """`data` validated as `model`; an InputError naming `source` and the first wrong field otherwise."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise InputError(f"{source}: field '{field}': {first['msg']} ({model.__name__}; a file from an older "
                         "promptbake or edited by hand: run the stage that writes it again)") from None


def read_contract(model: type[C], path: str | Path) -> C:
    """The JSON file at `path` validated as `model` (InputError naming the file, and the field when one is
    wrong)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot read it as JSON ({e})") from None
    return check_contract(model, data, path)
