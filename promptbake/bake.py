"""Bake a prompt spec into a model in one run: data -> SFT chosen by validation -> final eval with a verdict ->
merged weights, all under one run directory, each stage resumable after a kill.

    promptbake bake configs/specs/style_rules.yaml [key=value ...] [spec.KEY=VALUE ...]

Defaults need no per-spec tuning: the training length comes from the data (a step budget with a floor, not a
fixed epoch count), a validation slice carved from the training inputs is answered by the model at intervals
and scored by the spec's checks, the best adapter is kept and training stops when validation adherence stops
improving. The eval compares the tuned model without the prompt with the prompted base and states a verdict;
when the tuned model does not win, the verdict says why, from the run's own data, and what to try first.

Run directory (default `runs/bake/<spec name>`):
    bake.json      the spec and config the bake ran with, and each finished stage (a re-run skips them)
    data/          the dataset build (val_inputs.jsonl: the validation slice)
    sft/           training: checkpoints/, validation.jsonl (the curve), best_adapter/, adapter/ (last step)
    eval/          metrics.json, answers, report.md/html
    merged/        the kept adapter merged into the base weights
    report.md      verdict, diagnosis, the validation curve
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from promptbake.bake_plan import data_spec, make_plan, validation_size  # noqa: F401 (validation_size: its API)
from promptbake.core.config import InputError, StrictModel, apply_overrides, load_config, validate
from promptbake.core.contracts import EvalMetrics, Manifest, Verdict, check_contract
from promptbake.core.io import check_creatable, describe_contents, iter_jsonl, write_json
from promptbake.core.layout import RunLayout
from promptbake.core.models import DEFAULT_MODEL, RUN_INFO_FILE, check_model_fields
from promptbake.replay import REPLAY_ROWS, ReplaySpec
from promptbake.rounds import RoundsSpec
from promptbake.strength import StrengthSpec

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class BudgetSpec(StrictModel):
    """How long SFT may train, from the number of training rows: ceil(epochs * rows / batch) optimizer steps,
    at least `min_steps` and at most `max_steps`. Validation usually stops the run before the budget ends."""

    epochs: float = Field(8.0, gt=0)
    """Passes over the rows the budget allows. Few rows need many passes to learn a format: 35 rows at 3
    epochs (15 steps) taught a closing phrase to 11% of answers, at 8 epochs to all of them."""
    min_steps: PositiveInt = 60
    """The floor: a small dataset still gets enough optimizer steps."""
    max_steps: PositiveInt = 240
    """The ceiling: bounds the time of a large dataset (~1.7 s a step for the default model on 2 CPU cores)."""


class ValidationSpec(StrictModel):
    """The validation slice: training inputs the teacher never answers, scored by the spec's checks while
    training. Its size is `fraction` of the training inputs, at most `max_inputs`; when that is under
    `min_inputs` it is raised to `min_inputs` if `min_train_inputs` still remain for training, and otherwise
    there is no validation and training runs the whole budget (the bake says so)."""

    fraction: float = Field(0.3, gt=0.0, lt=1.0)
    """0.3 and at most 30 since stop 44: on the demo's dev split (3 teacher seeds, 180 paired answers) a 25-input
    slice kept no early adapter and answered 155 against 140 with 17 inputs (exact McNemar p 0.011; README)."""
    min_inputs: PositiveInt = 8
    max_inputs: PositiveInt = 30
    min_train_inputs: PositiveInt = 32
    evaluations: PositiveInt = 8
    """Measurements over the budget (plus one before the first step): every ceil(budget / evaluations) steps."""
    patience: PositiveInt = 3
    """Stop after this many measurements without a better one."""


class BakeConfig(StrictModel):
    spec: str
    """The prompt spec to bake in."""
    output_dir: str | None = None
    """The run directory; default runs/bake/<spec name>."""
    model: str = DEFAULT_MODEL
    """The model to tune and the base the eval compares with (the teacher is the spec's `teacher.model`)."""
    recipe: str = str(CONFIGS / "sft" / "bake_lora.yaml")
    """The SFT recipe; the bake sets its model, dataset, output_dir and step budget."""
    budget: BudgetSpec = BudgetSpec()
    validation: ValidationSpec = ValidationSpec()
    synthesis_min_inputs: int = Field(100, ge=0)
    """A spec with fewer distinct inputs gets new ones written by its teacher, up to this many in all (training
    side only; not for chat logs; labelled ones count only where the teacher's own answer agrees with the label
    it wrote). A spec's own `synthesis.min_inputs` wins; 0 turns it off."""
    rounds: RoundsSpec = RoundsSpec()
    """On-policy rounds after SFT (dpo, rft, grpo or distill), kept while validation all-rules adherence rises; off
    by default."""
    replay: ReplaySpec = ReplaySpec()
    """Replay rows: the base's own answers to general questions (none the eval's drift arm asks) mixed into SFT,
    `fraction` of them per spec row (promptbake/replay.py); off by default (fraction 0)."""
    strength: StrengthSpec = StrengthSpec()
    """The adapter's strength (a multiplier of its scaling) chosen on the validation slice with drift second
    (promptbake/strength.py); off by default: strength 1."""
    eval_batch_size: PositiveInt = 64
    """Inputs answered together by validation and by every eval arm (best-of-n: these inputs with their n samples
    each). Wide batches cost little more per decode step than narrow ones on a CPU: the demo's 36 held-out inputs
    took 19.0 s in one batch and 36.9 s in batches of 16 (SmolLM2-135M, one thread)."""
    drift: bool = True
    """Also run the eval's `drift` arm: the tuned model vs the base, no prompt, on general questions outside the
    spec (KL per token, the share of the base's correct fact and arithmetic answers the tuned model keeps, format
    leaking into unrelated answers; evals/drift.py); the verdict reports it and warns when the tuned model drifted
    past the thresholds. What baking costs the model elsewhere is part of whether the bake won."""
    drift_questions: PositiveInt | None = 40
    """How many of the 100 shipped general questions the drift arm asks (the first N: facts, arithmetic, how-to
    and writing interleaved; 40 hold 23 fact and arithmetic ones); None asks all of them."""
    inference_arms: bool = True
    """Also measure what a user could do instead of training: the prompted base's answers repaired by the spec's
    repairs (base_prompted_repaired) and its best of n samples by the checks (base_prompted_best_of_n; about as
    long again as the base_prompted arm times n). The verdict names the cheapest arm that reaches the tuned
    model. The null arm (`constant`: one fixed answer for every input) always runs: it costs nothing."""
    best_of_n: PositiveInt | None = None
    """Samples per input of base_prompted_best_of_n; default the teacher's n, at least 4."""
    judge: bool | None = None
    """For specs without labels (no label match to read the content): a pairwise judge of the tuned model's answers
    against the prompted base's, both orders (evals/judge.py), on content rather than format; the verdict reports
    its wins, losses and sign-test p. Default: on when `judge_model` is given. The 135M default model as its own
    judge prefers one position whatever the answers (it decided none of 132 gallery inputs, at ~20 s a spec), so
    it runs only when asked for (`judge=true`) or given a bigger judge."""
    judge_model: str | None = None
    """The judge (a model name or directory); giving one turns the judge on. With `judge=true` and no judge_model,
    the bake's `model` judges."""
    export: bool = True
    """Merge the kept adapter into standalone weights at the end."""
    report_to: Literal["wandb", "none"] = "wandb"

    @model_validator(mode="after")
    def _model_exists(self):
        check_model_fields({"model": self.model})  # refused here, not after the data stage
        return self


def load_bake(spec_path: str, overrides: list[str] | tuple[str, ...] = ()) -> tuple[BakeConfig, list[str]]:
    """The bake config from `key=value` overrides; `spec.KEY=VALUE` ones are returned for the spec."""
    spec_overrides = [o[len("spec."):] for o in overrides if o.startswith("spec.")]
    data: dict = {"spec": spec_path}
    apply_overrides(data, [o for o in overrides if not o.startswith("spec.")])
    return validate(BakeConfig, data, "bake overrides"), spec_overrides


def budget_steps(rows: int, batch: int, b: BudgetSpec) -> int:
    return min(b.max_steps, max(b.min_steps, math.ceil(b.epochs * rows / batch)))


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changed_fields(old: dict, new: dict) -> list[str]:
    a, b = flat(old), flat(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


STAGES = ["data", "replay", "sft", "replay_choice", "rounds", "strength", "eval", "export"]
# the first stage each bake config field affects; a change is accepted while that stage has not finished, and
# the finished stages after it are run again (report_to changes nothing a stage produces)
FIELD_STAGE = {"model": "data", "synthesis_min_inputs": "data", "validation": "data", "recipe": "sft",
               "budget": "sft", "replay": "replay", "rounds": "rounds", "strength": "strength",
               "eval_batch_size": "eval",
               # the rounds' drift guard and the strength stage measure drift on the general questions after the
               # eval's drift questions (the strength stage only with drift on)
               "drift": "strength", "drift_questions": "rounds",
               "inference_arms": "eval", "best_of_n": "eval", "judge": "eval", "judge_model": "eval",
               "export": "export", "report_to": None}


# the first stage each figure of the bake's plan (promptbake/bake_plan.py) shapes. The plan is what the defaults and
# the input files make of the config: a promptbake upgrade that changes a default (the validation slice's size) or
# an input file edited in place changes it with the recorded config as it was, and the finished stages were made
# under the old plan
PLAN_STAGE = {"inputs": "data", "train_side_inputs": "data", "synthesis_min_inputs": "data",
              "validation_inputs": "data", "max_new_tokens": "data", "validation_evaluations": "sft",
              "validation_patience": "sft", "replay_fraction": "replay", "replay_when": "replay",
              "rounds": "rounds", "strength_search": "strength", "eval_batch_size": "eval", "arms": "eval",
              "judge": "eval", "export": "export"}


def plan_stage(key: str, old: dict, new: dict) -> str:
    """The first stage a changed figure of the plan shapes: replay's as `first_stage` says for its config fields."""
    if key.startswith("replay_"):
        as_config = [{"replay": {"fraction": p.get("replay_fraction", 0), "when": p.get("replay_when", "always")}}
                     for p in (old, new)]
        return "replay" if any(map(replay_feeds_sft, as_config)) else "replay_choice"
    return PLAN_STAGE[key]


def replay_feeds_sft(config_dump: dict) -> bool:
    """Whether a bake config (as recorded: defaults left out) mixes replay rows into the SFT stage itself
    (`replay.when: always`); with `sft_drifts` (or no replay) SFT trains on the spec's rows alone, and a replay
    change first affects the replay_choice stage after it."""
    replay = config_dump.get("replay", {})
    return replay.get("fraction", 0) > 0 and replay.get("when", "always") == "always"


def first_stage(field: str, old: dict, new: dict) -> str | None:
    """The first stage a changed bake config field (dotted) affects."""
    name = field.split(".")[0]
    if name == "replay" and not (replay_feeds_sft(old) or replay_feeds_sft(new)):
        return "replay_choice"
    return FIELD_STAGE.get(name, "data")


class RunState:
    """bake.json: what the run was started with, and each stage once it finished. Read and checked first (a run
    directory of another spec, another bake config or the user's files is refused, with nothing written); `begin`
    then records the start and clears what a changed field makes stale."""

    def __init__(self, run: Path, spec_dump: dict, config_dump: dict, source: str,
                 check_sources: dict[str, str] | None = None, plan_dump: dict | None = None):
        if run.exists() and not run.is_dir():
            raise InputError(f"{source}: {run} exists and is a file, not a bake's run directory; choose another "
                             "output_dir or move it away")
        check_creatable(run)
        layout = RunLayout(run)
        self.run, self.path = run, layout.state
        self.stale: list[Path] = []
        self.notes: list[str] = []
        if not self.path.exists():
            if run.is_dir() and any(run.iterdir()):  # it writes reports and directories there: not over the user's
                raise InputError(f"{source}: {run} is not a bake's run directory (no {RunLayout.STATE}) and holds "
                                 f"{describe_contents(run)}; choose another output_dir or move them away")
            self.data = {"spec": spec_dump, "config": config_dump, "stages": {}}
            if check_sources is not None:
                self.data["check_sources"] = check_sources
            return
        from data_tools.spec import NO_DATA_FIELDS  # what changes no answer: a resumed bake may change it
        self.data = json.loads(self.path.read_text())
        changed = [f for f in changed_fields(self.data["spec"], spec_dump) if f not in NO_DATA_FIELDS]
        if changed:
            raise InputError(f"{source}: {run} holds a bake of a different spec (changed: {', '.join(changed)}); "
                             f"choose another output_dir or delete {run}")
        # a python check's module can change with the YAML as it was (an edit, a promptbake upgrade): every
        # finished stage chose by the old checks (the rows kept, the step kept, the verdict). A run started before
        # the record existed has none to compare.
        old_sources = self.data.get("check_sources")
        if old_sources is not None and check_sources is not None and old_sources != check_sources:
            edited = sorted(m for m in old_sources.keys() | check_sources.keys()
                            if old_sources.get(m) != check_sources.get(m))
            raise InputError(f"{source}: {run} holds a bake scored by another version of the python check "
                             f"module{'s' if len(edited) > 1 else ''} {', '.join(edited)} (its source changed "
                             "since the bake started, so the rows, the kept step and the verdict follow the old "
                             f"checks); choose another output_dir or delete {run}")
        self.data["spec"] = spec_dump
        if check_sources is not None:
            self.data["check_sources"] = check_sources
        changed = changed_fields(self.data["config"], config_dump)
        stages = {first_stage(field, self.data["config"], config_dump) for field in changed} - {None}
        old_plan = self.data.get("plan") or {}
        replanned = [k for k in PLAN_STAGE if plan_dump is not None and k in old_plan and k in plan_dump
                     and old_plan[k] != plan_dump[k]]
        # no field the user gave changed, yet the plan did: a default of this promptbake version or an input file
        why = (" (no field you gave changed: a default of this promptbake version, or an input file, did)"
               if replanned and not changed else "")
        changed += [f"plan.{k} {old_plan[k]} -> {plan_dump[k]}" for k in replanned]
        stages |= {plan_stage(k, old_plan, plan_dump) for k in replanned}
        first = min(stages, key=STAGES.index) if stages else None
        if first is not None and first in self.data["stages"]:
            raise InputError(f"{source}: {run} holds a bake of a different bake config (changed: "
                             f"{', '.join(changed)}, which its finished {first} stage depends on){why}; choose "
                             f"another output_dir or delete {run}")
        if first is not None:
            redo = [s for s in STAGES[STAGES.index(first):] if s in self.data["stages"]]
            for stage in redo:
                del self.data["stages"][stage]
            # a stage killed part-way under the old settings left checkpoints (or a journal) that a resume would
            # continue: under other settings it starts again from nothing instead
            self.stale = [layout.stage_dir(s) for s in STAGES[STAGES.index(first):] if layout.stage_dir(s).exists()]
            self.notes.append(
                f"[promptbake] bake config changed ({', '.join(changed)}){why}: the {first} stage has not finished; "
                + (f"it was started under the old settings, so it starts again from scratch (removed "
                   f"{', '.join(str(p) for p in self.stale)}); " if self.stale else "")
                + (f"{', '.join(redo)} will run again" if redo else "continuing"))
        self.data["config"] = config_dump
        self.notes.append(f"[promptbake] resuming the bake in {run} (done: "
                          f"{', '.join(self.data['stages']) or 'nothing'})")

    def begin(self) -> None:
        """Record the start: remove the stale stage directories, write bake.json, say what resumes."""
        for path in self.stale:
            shutil.rmtree(path)
        self.save()
        for note in self.notes:
            print(note)

    def done(self, stage: str) -> dict | None:
        return self.data["stages"].get(stage)

    def finish(self, stage: str, result: dict) -> None:
        self.data["stages"][stage] = result
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


def main(config: BakeConfig, spec_overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Run (or resume) the whole bake; returns the verdict."""
    from data_tools.spec import load_spec
    from evals.judge import CONTENT_CRITERIA
    from evals.run import EvalConfig
    from sft.train import SFTRecipe

    start = time.time()
    # Everything is loaded and checked before any model is: a bad spec, override or recipe fails here.
    user_spec = load_spec(config.spec, spec_overrides)
    plan = make_plan(user_spec, config, Path(config.output_dir or f"runs/bake/{user_spec.name}"))
    layout = plan.layout
    run, data = layout.root, layout.data
    spec = data_spec(user_spec, plan)
    recipe = load_config(SFTRecipe, config.recipe, [f"model={config.model}"])
    if config.replay.fraction > 0 and config.replay.loss == "kl" and recipe.method == "full":
        raise InputError(f"replay.loss=kl holds the model to its base, the adapter switched off; {config.recipe} "
                         "fine-tunes every weight (method: full): pick an adapter method or replay.loss=label")
    recipe = recipe.model_copy(update={"dataset": str(data.root), "output_dir": str(layout.sft),
                                       "report_to": config.report_to})
    eval_config = EvalConfig(spec=config.spec, eval_inputs=str(data.eval_inputs),
                             # the tuned model exists only after SFT: the eval stage sets it; the base stands in
                             base_model=config.model, tuned_model=config.model,
                             sampling={"max_new_tokens": plan.max_new_tokens}, batch_size=plan.eval_batch_size,
                             arms=plan.arms, train_rows=str(data.sft_train), best_of_n=config.best_of_n,
                             drift={"limit": config.drift_questions},
                             judge={"model": config.judge_model or config.model, "against": "base_prompted",
                                    "arms": ["tuned_unprompted"], "criteria": CONTENT_CRITERIA}
                             if plan.judge else None,
                             report_to=config.report_to, output_dir=str(layout.eval))
    # Only what differs from the defaults is recorded and compared: a promptbake upgrade that adds a field with a
    # default must not make an earlier run of the same spec and overrides look like a different one.
    state = RunState(run, user_spec.model_dump(mode="json", exclude={"output_dir"}, exclude_defaults=True),
                     config.model_dump(mode="json", exclude={"output_dir"}, exclude_defaults=True), config.spec,
                     check_sources=user_spec.check_sources(), plan_dump=plan.model_dump(mode="json"))
    recipe.trainer_config()  # TRL's own checks of the recipe: they import TRL (seconds), so after the cheap ones
    state.data["plan"] = plan.model_dump(mode="json")
    state.begin()
    print(plan.describe())
    if plan.validation_inputs == 0:
        print(f"[promptbake] {plan.train_side_inputs} training inputs are too few for a validation slice of "
              f"{config.validation.min_inputs} (with {config.validation.min_train_inputs} left to train on): "
              f"training runs its whole budget and keeps the last step")
    stage_times: dict[str, float] = {}

    def stage(name: str, title: str, fn) -> dict:
        done = state.done(name)
        if done is not None:
            print(f"\n=== {title}: done earlier ===", flush=True)
            return done
        print(f"\n=== {title} ===", flush=True)
        t0 = time.time()
        result = fn()
        stage_times[name] = time.time() - t0
        state.finish(name, {**result, "time_s": round(stage_times[name], 1)})
        return result

    manifest = stage("data", "1/4 data: the prompted teacher answers the training inputs", lambda: build(spec))
    replay = None
    if config.replay.fraction > 0 and config.replay.when == "always":
        replay = stage("replay", "1b/4 replay: the base's own answers to general questions join the SFT rows",
                       lambda: replay_rows(config, plan, spec, plan.layout.stage_dir("replay")))
    sft = stage("sft", "2/4 train: SFT on bare inputs, validated by the spec's checks",
                lambda: train_sft(config, plan, spec, recipe, manifest, replay))
    if config.replay.fraction > 0 and config.replay.when == "sft_drifts":
        choice = stage("replay_choice", "2a/4 replay if SFT drifts: SFT again with the base's own general answers "
                                        "only when SFT lost them", lambda: replay_if_drifting(config, plan, spec,
                                                                                            recipe, manifest, sft))
        if choice["chosen"] == "replay":
            sft, replay = choice["sft"], choice["replay"]
    tuned = sft["tuned_model"]
    if config.rounds.method != "none":
        rounds = stage("rounds", f"2b/4 on-policy rounds ({config.rounds.method}): the tuned model learns from "
                                 "its own answers", lambda: preference_rounds(config, plan, spec, recipe, sft))
        tuned = rounds["tuned_model"]
    if config.strength.search:
        tuned = stage("strength", "2c/4 strength: the adapter's scale chosen on the validation slice, drift second",
                      lambda: adapter_strength(config, plan, spec, recipe, tuned))["tuned_model"]
    metrics = stage("eval", "3/4 eval: base WITH the prompt vs tuned WITHOUT it",
                    lambda: evaluate(eval_config.model_copy(update={"tuned_model": tuned}), user_spec))
    if config.export:
        stage("export", "4/4 export: merge the kept adapter into standalone weights",
              lambda: export(tuned, layout.merged))

    from evals.drift import drift_summary, drift_warning
    from promptbake.bake_report import print_verdict, read_curve_rows, write_reports
    from promptbake.verdict import verdict
    from sft.validation import CURVE_FILE

    # what the verdict reads, checked: a stage recorded by an older promptbake fails here with the field named
    check_contract(Manifest, manifest, f"{data.manifest} (as recorded in {layout.state})")
    check_contract(EvalMetrics, metrics, f"{layout.eval / 'metrics.json'} (as recorded in {layout.state})")
    curve = read_curve_rows(Path(sft.get("dir", layout.sft)) / CURVE_FILE)
    result = verdict(metrics, manifest, curve, sft["budget_steps"], sft.get("truncated_rows", 0))
    if replay is not None and result.get("provenance") is not None:
        # rows held to the base by the KL term are not training answers: counted apart
        key = "replay_as_kl_term" if config.replay.loss == "kl" else "replay"
        result["provenance"] = {**result["provenance"], key: replay["replay_rows"]}
    profile = {"data": manifest.get("profile_s"), "sft": sft.get("profile_s"), "eval": metrics.get("profile_s")}
    result.update(spec=spec.name, run_dir=str(run), time_s=round(time.time() - start, 1), stage_times_s=stage_times,
                  profile_s={stage: p for stage, p in profile.items() if p},
                  kept_step=sft.get("kept_step"), budget_steps=sft["budget_steps"],
                  drift=drift_summary(metrics), drift_warning=drift_warning(metrics),
                  strength=(state.done("strength") or {}).get("strength"))
    check_contract(Verdict, result, layout.verdict)  # what the readers rely on, checked where it is written
    write_json(layout.verdict, result)
    write_reports(run, result, metrics, curve, sft, rounds_done=state.done("rounds"),
                  replay_choice=state.done("replay_choice"))
    print_verdict(result, metrics, run)
    return result


def build(spec) -> dict:
    from data_tools.build import main as build_main

    return build_main(spec)


def replay_rows(config: BakeConfig, plan, spec, out: Path) -> dict:
    """The replay stage: the base answers the replay questions; the spec's rows and theirs, mixed, in `out`."""
    from evals.drift import read_questions
    from evals.general_questions import GENERAL_QUESTIONS
    from promptbake.replay import build_replay

    layout = plan.layout
    # every shipped general question is kept out of replay: the drift arm asks the first ones, strength the rest
    asked = [q.question for q in read_questions(str(GENERAL_QUESTIONS))]
    return build_replay(config.replay, config.model, layout.data, out, asked, plan.eval_batch_size, spec.rules)


def train_sft(config: BakeConfig, plan, spec, recipe, manifest: dict, replay: dict | None = None,
              out: Path | None = None) -> dict:
    """SFT for a budget set by the data (and the replay rows mixed in, when there are; with `replay.loss: kl` they
    are a KL term instead and the budget is the spec rows') into `out` (default the run's sft/); with a validation
    slice, the best-scoring step is kept."""
    from evals.run import read_eval_inputs
    from sft.train import main as train_main
    from sft.validation import BEST_DIR, ValidationCallback

    layout = plan.layout
    out = out or layout.sft
    recipe = recipe.model_copy(update={"output_dir": str(out)})
    rows = manifest["counts"]["sft_rows"]
    if replay and config.replay.loss == "kl":  # a KL term on the replay rows beside SFT on the spec's rows alone
        recipe = recipe.model_copy(update={"retention_rows": str(Path(replay["dataset"]) / REPLAY_ROWS),
                                           "retention_weight": config.replay.kl_weight})
    elif replay:  # the replay rows mixed into the SFT rows
        recipe = recipe.model_copy(update={"dataset": replay["dataset"]})
        rows += replay["replay_rows"]
    t = recipe.training
    steps = budget_steps(rows, t.per_device_train_batch_size * t.gradient_accumulation_steps, config.budget)
    val_path = layout.data.val_inputs
    callbacks = []
    every = None
    if val_path.exists():
        every = math.ceil(steps / plan.validation_evaluations)
        run_info = {"base_model": recipe.model, "method": recipe.method, "dataset": recipe.dataset}
        callbacks.append(ValidationCallback(spec, read_eval_inputs(str(val_path), None), out, every=every,
                                            patience=plan.validation_patience, run_info=run_info,
                                            max_new_tokens=plan.max_new_tokens, batch_size=plan.eval_batch_size))
    print(f"[promptbake] budget: {steps} optimizer steps for {rows} rows "
          f"({steps * t.per_device_train_batch_size * t.gradient_accumulation_steps / rows:.1f} epochs at most)"
          + (f"; validation on {manifest['counts'].get('val_inputs', 0)} inputs every {every} steps"
             if every else "; no validation slice: the last step is kept"))
    # a loss logged at least as often as validation measures, so that every point of the curve has one
    recipe = recipe.model_copy(update={"training": t.model_copy(update={
        "max_steps": steps, "save_steps": every or max(10, steps // 4), "save_total_limit": 1,
        "logging_steps": min(t.logging_steps, every or t.logging_steps)})})
    start = time.time()
    last = train_main(recipe, resume=True, callbacks=callbacks)
    validation_s = sum(c.seconds for c in callbacks)
    best = out / BEST_DIR
    tuned = best if best.exists() else last
    kept_step = json.loads((best / RUN_INFO_FILE).read_text()).get("step") if best.exists() else steps
    return {"tuned_model": str(tuned), "dir": str(out), "budget_steps": steps, "kept_step": kept_step,
            "validation_every": every,
            "truncated_rows": truncated_rows(recipe, layout.data.sft_train),
            "profile_s": {"validation": round(validation_s, 1),  # this process's share (a resume starts anew)
                          "training": round(time.time() - start - validation_s, 1)}}


def replay_if_drifting(config: BakeConfig, plan, spec, recipe, manifest: dict, sft: dict) -> dict:
    """`replay.when: sft_drifts`: the share of the base's correct general answers (the drift guard's questions,
    after the eval's own) the SFT adapter keeps; under `replay.goal`, replay rows and SFT again on the mixed rows
    in replay_choice/, and the adapter `replay.choose` prefers. The answers are cached in replay_choice/drift_guard/
    and the second SFT resumes from its checkpoints: a killed stage picks up where it was."""
    from evals.drift import kept_share, questions_after
    from promptbake.drift_guard import GUARD_DIR, model_answers
    from promptbake.replay import choose
    from sft.validation import read_curve

    layout = plan.layout
    out = layout.stage_dir("replay_choice")
    questions = questions_after(config.drift_questions)
    if not questions:
        why = "no general questions are left after the eval's drift_questions to measure SFT's drift by"
        print(f"[promptbake] replay choice: {why}; SFT kept, no replay", flush=True)
        return {"chosen": "sft", "why": why, "sft_guard": None, "replay_guard": None, "replay": None, "sft": sft}
    decode = dict(questions=questions, max_new_tokens=plan.max_new_tokens, batch_size=plan.eval_batch_size)
    base = model_answers(config.model, cache=out / GUARD_DIR / "base.json", **decode)
    val_inputs = manifest["counts"].get("val_inputs", 0) if layout.data.val_inputs.exists() else 0

    def measure(record: dict, name: str) -> dict:
        kept, base_correct = kept_share(questions, base, model_answers(record["tuned_model"],
                                                                       cache=out / GUARD_DIR / f"{name}.json",
                                                                       **decode))
        curve = read_curve(Path(record.get("dir", layout.sft)))  # no slice: no curve, and drift alone decides
        best = max((p.all_rules for p in curve), default=0.0)
        return {"kept": kept, "base_correct": base_correct, "passing": round(best * val_inputs)}

    sft_guard, replay_guard, replay, replay_sft = measure(sft, "sft"), None, None, None
    goal = config.replay.goal
    if sft_guard["kept"] is not None and sft_guard["kept"] < goal - 1e-9:
        print(f"[promptbake] replay choice: SFT keeps {sft_guard['kept']:.0%} of the base's "
              f"{sft_guard['base_correct']} correct general answers (goal {goal:.0%}): training SFT again with "
              "replay rows", flush=True)
        replay = replay_rows(config, plan, spec, out / "rows")
        replay_sft = train_sft(config, plan, spec, recipe, manifest, replay, out=out / "sft")
        replay_guard = measure(replay_sft, "replay")
    chosen, why = choose(sft_guard, replay_guard, goal, config.replay.inputs_lost)
    print(f"[promptbake] replay choice: {chosen} kept: {why}", flush=True)
    return {"chosen": chosen, "why": why, "questions": len(questions), "sft_guard": sft_guard,
            "replay_guard": replay_guard, "replay": replay, "sft": replay_sft if chosen == "replay" else sft}


def preference_rounds(config: BakeConfig, plan, spec, recipe, sft: dict) -> dict:
    """Up to `rounds.max_rounds` on-policy rounds from the SFT adapter; each is kept only when its best
    validation point passes every rule on more inputs than the adapter it started from (its own step 0) and its
    drift guard passes (promptbake/drift_guard.py)."""
    from evals.drift import questions_after
    from evals.run import read_eval_inputs
    from promptbake.drift_guard import DriftGuard
    from promptbake.rounds import improves, kept, run_round, summary_line, teacher_answers

    layout = plan.layout
    if not layout.data.val_inputs.exists():
        print("[promptbake] on-policy rounds need a validation slice to tell whether they help; skipped")
        return {"tuned_model": sft["tuned_model"], "rounds": []}
    train_items = read_eval_inputs(str(layout.data.train_inputs), None)
    val_items = read_eval_inputs(str(layout.data.val_inputs), None)
    teacher = teacher_answers(layout.data.sft_train)
    current, results, guard = sft["tuned_model"], [], None
    questions = questions_after(config.drift_questions) if config.rounds.drift_guard is not None else []
    if config.rounds.drift_guard is not None and not questions:
        print("[promptbake] drift guard: no general questions left after the eval's drift_questions; the rounds are "
              "kept on validation alone", flush=True)
    for k in range(1, config.rounds.max_rounds + 1):
        result = run_round(k, current, config.rounds, spec, train_items, val_items, teacher, config.model,
                           recipe, layout.rounds / str(k), plan.validation_evaluations,
                           plan.validation_patience, plan.max_new_tokens, plan.eval_batch_size, config.report_to)
        if improves(result) and questions:
            # measured only for a round validation would keep: the base and SFT answer once, on the first such round
            guard = guard or DriftGuard(config.model, sft["tuned_model"], questions, layout.rounds,
                                        config.rounds.drift_guard, plan.max_new_tokens, plan.eval_batch_size)
            result["drift_guard"] = guard.check(result["adapter"], layout.rounds / str(k))
        results.append(result)
        print(f"[promptbake] {summary_line(result)}", flush=True)
        if not kept(result):
            break  # nothing to train on, no step passed more inputs than the adapter it started from, or it lost
            # more general answers than the guard allows: keep the adapter it started from
        current = result["adapter"]
    return {"tuned_model": current, "rounds": results}


def adapter_strength(config: BakeConfig, plan, spec, recipe, tuned: str) -> dict:
    """The kept adapter at the strength the validation slice (then drift) prefers (promptbake/strength.py)."""
    from evals.run import read_eval_inputs
    from promptbake.strength import choose_strength

    layout = plan.layout
    if recipe.method == "full" or not layout.data.val_inputs.exists():
        print("[promptbake] strength: needs an adapter and a validation slice; kept at 1")
        return {"tuned_model": tuned, "strength": 1.0, "points": []}
    out = layout.stage_dir("strength")
    out.mkdir(parents=True, exist_ok=True)
    record = choose_strength(tuned, spec, read_eval_inputs(str(layout.data.val_inputs), None),
                             config.drift_questions if config.drift else None, config.strength,
                             plan.max_new_tokens, plan.eval_batch_size, out)
    print(f"[promptbake] strength {record['strength']:g} kept", flush=True)
    return record


def truncated_rows(recipe, rows_path: Path) -> int:
    """Training rows longer than max_length (they lose their end, and the EOS the model must learn)."""
    from promptbake.core.models import load_tokenizer

    tok = load_tokenizer(recipe.model)
    n = 0
    for _, row in iter_jsonl(rows_path):
        ids = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)
        n += len(ids["input_ids"] if isinstance(ids, dict) else ids) > recipe.training.max_length
    return n


def evaluate(eval_config, spec) -> dict:
    from evals.run import main as eval_main

    return eval_main(eval_config, spec)


def export(tuned_model: str, out: Path) -> dict:
    from sft.export import main as export_main

    return {"merged": str(export_main(tuned_model, out, force=True))}  # the run's own merged/, redone


def make_parser(subparsers=None):
    """`promptbake bake` (added to `subparsers`) or `python -m promptbake.bake`."""
    from promptbake.core.entry import stage_parser

    parser = stage_parser(subparsers, "bake", "the whole loop for one spec: data, validated SFT, eval with a "
                                              "verdict, merged weights")
    parser.add_argument("spec", help="prompt spec YAML, e.g. configs/specs/style_rules.yaml")
    parser.add_argument("overrides", nargs="*", help="bake overrides (e.g. budget.max_steps=120 "
                                                     "output_dir=runs/x) and spec overrides prefixed with `spec.` "
                                                     "(e.g. spec.inputs.limit=40)")
    parser.set_defaults(run=lambda args: main(*load_bake(args.spec, args.overrides)))
    return parser


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
