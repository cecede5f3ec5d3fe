"""Does the tuned model, with no prompt, follow the rules the base model needed a prompt for?

    promptbake eval configs/evals/demo.yaml [key=value ...]

Every arm answers the same held-out inputs with the same generation settings (greedy by default) and the
same batch size; every answer is scored raw by the spec's checks. Each side (base, tuned) runs here through the
batched local backend, or on an OpenAI-compatible endpoint. The arms (base_prompted, tuned_unprompted, the
inference-time alternatives base_prompted_repaired and base_prompted_best_of_n, the null arm constant, drift, ...)
are defined in evals/arms.py.

Writes `metrics.json` (per arm: all_rules_adherence, all_rules_passed, all_rules_ci95, per_rule, label_match
where inputs have labels, answer_diversity, prompt_tokens_per_request, generated_tokens_per_request,
latency_s_per_request, n; and vs_base_prompted: arm -> McNemar p-value; and
drift: the drift arm's figures, with answers_drift.jsonl; profile_s: seconds per model load, arm, judge, drift),
`answers_<arm>.jsonl` with every answer and its failed checks, and prints a comparison table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from data_tools.spec import EndpointSpec, PromptSpec, Sampling, TeacherSpec, load_spec
from data_tools.vllm_server import check_endpoint_model
from evals import arms as arm_kinds
from evals.arms import ARMS, ArmName
from evals.drift import DriftConfig
from evals.judge import JudgeSpec
from evals.stats import mcnemar_exact
from promptbake.core.config import DEFAULT_MODEL, InputError, StrictModel, load_config
from promptbake.core.entry import stage_parser
from promptbake.core.io import check_creatable, iter_jsonl, write_json, write_jsonl


class EvalConfig(StrictModel):
    spec: str
    """The prompt spec whose rules are checked and whose prompt the prompted arms get."""
    eval_inputs: str
    """Held-out prompt-only rows (`eval_inputs.jsonl` from `promptbake data build`)."""
    base_model: str = DEFAULT_MODEL
    tuned_model: str | None = None
    """A training run's adapter directory or an exported model; needed by the tuned_* arms."""
    base_endpoint: EndpointSpec | None = None
    """Serve the base_* arms from an OpenAI-compatible endpoint (vLLM, llama.cpp, a hosted API) instead of
    loading `base_model` here."""
    tuned_endpoint: EndpointSpec | None = None
    """Likewise for the tuned_* arms (e.g. the exported model behind vLLM)."""
    arms: list[ArmName] = Field(default_factory=lambda: ["base_prompted", "tuned_unprompted"], min_length=1)
    """Which arms answer (evals/arms.py). The bake adds constant, base_prompted_repaired and
    base_prompted_best_of_n."""
    train_rows: str | None = None
    """The SFT rows (`sft_train.jsonl`) whose most frequent completion the `constant` arm tries beside the spec's
    few-shot example outputs."""
    best_of_n: PositiveInt | None = None
    """Samples per input of `base_prompted_best_of_n`; default the teacher's n, at least 4."""
    sampling: Sampling = Sampling(max_new_tokens=64)
    """Identical for every arm; greedy by default so that the comparison has no sampling noise."""
    batch_size: PositiveInt = 64
    """Inputs per batch, identical for every arm so that latencies are comparable (best-of-n: these inputs with
    their n samples each)."""
    limit: PositiveInt | None = None
    """Evaluate only the first N inputs (a quick look)."""
    drift: DriftConfig = DriftConfig()
    """Questions and warning thresholds of the `drift` arm (off-spec drift of the tuned model from the base)."""
    judge: JudgeSpec | None = None
    """Optional pairwise LLM-as-judge of every arm against `judge.against`, positions swapped."""
    report_to: Literal["wandb", "none"] = "wandb"
    """Log the metrics and every answer as W&B tables (offline when WANDB_API_KEY is unset)."""
    output_dir: str = "runs/eval"

    @model_validator(mode="after")
    def _tuned_arms_need_a_model(self):
        tuned = [a for a in self.arms if ARMS[a].model == "tuned"]
        if tuned and not self.tuned_model:
            if not self.tuned_endpoint:
                raise ValueError(f"field 'tuned_model' is required by the arms {tuned}")
        return self

    @model_validator(mode="after")
    def _derived_arms_need_their_source(self):
        for arm in self.arms:
            source = ARMS[arm].source
            if source is not None and source not in self.arms:
                raise ValueError(f"the arm {arm} repairs the answers of {source}: add {source} to 'arms'")
            if source is not None and self.sampling.n != 1:
                raise ValueError(f"the arm {arm} repairs one answer per input: set sampling.n to 1")
        if self.arms == ["constant"]:
            raise ValueError("the arm constant is a baseline: add an arm such as tuned_unprompted")
        return self

    @model_validator(mode="after")
    def _drift_needs_both_models(self):
        if "drift" in self.arms:
            for field in ("base_model", "tuned_model"):
                if not getattr(self, field):
                    raise ValueError(f"field '{field}' is required by the arm drift (a per-token KL needs the "
                                     "weights here: an endpoint does not serve whole next-token distributions)")
            if self.arms == ["drift"]:
                raise ValueError("the arm drift is reported beside adherence: add an arm such as tuned_unprompted")
        return self

    @model_validator(mode="after")
    def _judge_needs_pairs(self):
        if self.judge is not None:
            if self.sampling.n != 1:
                raise ValueError("the judge compares one answer per input: set sampling.n to 1")
            if self.judge.against not in self.arms:
                raise ValueError(f"judge.against={self.judge.against!r} is not one of the arms {self.arms}")
        return self

    @model_validator(mode="after")
    def _models_exist(self):
        """A model loaded here (not served by an endpoint) must exist: a wrong path is refused before any arm
        runs, not after the base arms have (promptbake.core.models.model_ref_problem)."""
        from promptbake.core.models import check_model_fields

        sides = {ARMS[a].model for a in self.arms}  # "both": the drift arm, which loads both models here
        base = "both" in sides or ("base" in sides and self.base_endpoint is None)
        tuned = "both" in sides or ("tuned" in sides and self.tuned_endpoint is None)
        check_model_fields({"base_model": self.base_model if base else None,
                            "tuned_model": self.tuned_model if tuned else None})
        return self


def read_eval_inputs(path: str, limit: int | None) -> list[tuple[str, str | None]]:
    """(input, label or None) for each held-out prompt-only row."""
    items = []
    for lineno, row in iter_jsonl(path):
        prompt = row.get("prompt")
        if not isinstance(prompt, list) or not prompt or not isinstance(prompt[-1], dict) \
                or prompt[-1].get("role") != "user":
            raise InputError(f"{path}:{lineno}: field 'prompt' must be a list of messages ending with a user turn")
        label = row.get("label")
        if label is not None and not isinstance(label, (str, dict)):
            raise InputError(f"{path}:{lineno}: field 'label' must be a string or an object of label fields")
        items.append((prompt[-1]["content"], label))
    if not items:
        raise InputError(f"{path}: no eval inputs (the file is empty)")
    return items[:limit] if limit else items


COST_KEYS = ("prompt_tokens_per_request", "generated_tokens_per_request", "latency_s_per_request",
             "throughput_requests_per_s")


def main(config: EvalConfig, spec: PromptSpec | None = None) -> dict:
    """Run the arms and write the reports; `spec`, when given, is `config.spec` already loaded (with the
    overrides a caller such as the bake applied to it)."""
    from data_tools.teachers import open_backend
    from evals.drift import print_drift_table, read_questions, run_drift
    from evals.report import write_reports

    check_creatable(config.output_dir)
    spec = spec or load_spec(config.spec)
    items = read_eval_inputs(config.eval_inputs, config.limit)
    for endpoint in (config.base_endpoint, config.tuned_endpoint):
        if endpoint is not None:  # before any arm runs: a vLLM server without the adapter, named with its flags
            check_endpoint_model(endpoint.base_url, endpoint.model)
    questions = read_questions(config.drift.questions, config.drift.limit) if "drift" in config.arms else None
    out = Path(config.output_dir)
    metrics: dict = {}
    outcomes: dict[str, list[bool]] = {}
    records: dict[str, list[dict]] = {}

    def finish(arm: str, answers: list[list[str]], cost: dict, model_name: str, **extra) -> None:
        records[arm], outcomes[arm], metrics[arm] = arm_kinds.score_answers(spec, items, answers, cost)
        metrics[arm].update(model=model_name, **extra)
        write_jsonl(out / f"answers_{arm}.jsonl", records[arm])

    profile: dict[str, float] = {}  # seconds per model load, arm, judge and drift: where the eval's time goes

    def timed(name: str, t0: float) -> None:
        profile[name] = round(time.perf_counter() - t0, 2)

    for which in ("base", "tuned"):
        arms = [a for a in ARMS if a in config.arms and ARMS[a].model == which]
        if not arms:
            continue
        t0 = time.perf_counter()
        endpoint = config.base_endpoint if which == "base" else config.tuned_endpoint
        if endpoint is not None:
            source = TeacherSpec(backend="openai", endpoint=endpoint)
            model_name = f"{endpoint.model} @ {endpoint.base_url}"
        else:
            model_name = config.base_model if which == "base" else config.tuned_model
            source = TeacherSpec(model=model_name, batch_size=config.batch_size)
        backend = open_backend(source, f"{config.output_dir}: the {which} arms' model")
        timed(f"load_{which}", t0)
        for arm in arms:  # in registry order: a repaired arm's source has answered before it
            kind = ARMS[arm]
            t0 = time.perf_counter()
            if kind.how == "greedy":
                answers, cost = arm_kinds.greedy_answers(backend, spec, items, kind.prompt, config.sampling)
                finish(arm, answers, cost, model_name)
            elif kind.how == "repaired":
                answers, cost, changed = arm_kinds.repaired_answers(spec, items, records[kind.source],
                                                                    {k: metrics[kind.source][k] for k in COST_KEYS})
                finish(arm, answers, cost, f"{model_name} + repairs", repaired_answers=changed)
            elif kind.how == "best_of_n":
                sampling = arm_kinds.best_of_n_sampling(spec, config.best_of_n or max(4, spec.teacher.sampling.n),
                                                        config.sampling.max_new_tokens)
                answers, cost, raw = arm_kinds.best_of_n_answers(backend, spec, items, sampling)
                finish(arm, answers, cost, model_name, samples_per_input=sampling.n, raw_sample_kept=raw,
                       temperature=sampling.temperature)
            timed(arm, t0)
        del backend  # one model in memory at a time
    if "constant" in config.arms:
        answers, cost, chosen = arm_kinds.constant_answers(spec, items, config.train_rows)
        finish("constant", answers, cost, "none (one fixed answer)", **chosen)
    if "base_prompted" in outcomes:
        metrics["vs_base_prompted"] = {arm: mcnemar_exact(outcomes["base_prompted"], o)
                                       for arm, o in outcomes.items() if arm != "base_prompted"}
    if config.judge is not None:
        t0 = time.perf_counter()
        metrics[f"judge_vs_{config.judge.against}"] = judge_arms(config, spec, items, records)
        timed("judge", t0)
    if questions is not None:
        t0 = time.perf_counter()
        metrics["drift"] = run_drift(config, spec, questions, out)
        timed("drift", t0)
    metrics["profile_s"] = profile
    write_json(out / "metrics.json", metrics)
    rules = [(r.id, r.text) for r in spec.rules if r.check is not None]
    write_reports(metrics, records, rules, out, title=f"{spec.name}: tuned without prompt vs prompted base")
    if config.report_to == "wandb":
        log_to_wandb(config, metrics, records)
    print_table(metrics, [a for a in ARMS if a in config.arms and a != "drift"], out)
    if questions is not None:
        print_drift_table(metrics["drift"])
    return metrics


def judge_arms(config: EvalConfig, spec: PromptSpec, items, records: dict[str, list[dict]]) -> dict:
    from evals.judge import win_rate
    from promptbake.core.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(config.judge.model)
    questions = [text for text, _ in items]
    reference = [r["answer"] for r in records[config.judge.against]]
    return {arm: win_rate(model.eval(), tokenizer, questions, [r["answer"] for r in recs], reference,
                          "\n".join(f"- {r.text}" for r in spec.rules), config.judge)
            for arm, recs in records.items()
            if arm != config.judge.against and (config.judge.arms is None or arm in config.judge.arms)}


def log_to_wandb(config: EvalConfig, metrics: dict, records: dict[str, list[dict]]) -> None:
    import wandb

    from promptbake.core.tracking import start_wandb_run

    run = start_wandb_run(config.output_dir, job_type="eval", name=Path(config.output_dir).name,
                          config=config.model_dump(mode="json"), reinit="finish_previous")
    summary = wandb.Table(columns=["arm", "all_rules", "all_rules_loose", "prompt_tokens", "latency_s", "n"])
    answers = wandb.Table(columns=["arm", "input", "answer", "all_rules", "failed"])
    for arm, recs in records.items():
        m = metrics[arm]
        summary.add_data(arm, m["all_rules_adherence"], m["all_rules_adherence_loose"],
                         m["prompt_tokens_per_request"], m["latency_s_per_request"], m["n"])
        for r in recs:
            answers.add_data(arm, r["input"], r["answer"], r["all_rules"], "; ".join(
                f"{k}: {v}" for k, v in r["failed"].items()))
        run.summary.update({f"{arm}/{k}": v for k, v in m.items() if isinstance(v, (int, float))})
    run.summary.update({f"drift/{k}": v for k, v in metrics.get("drift", {}).items() if isinstance(v, (int, float))})
    run.log({"eval/summary": summary, "eval/answers": answers})
    run.finish()


def print_table(metrics: dict, arms: list[str], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rule_ids = list(metrics[arms[0]]["per_rule"])
    table = Table(title=f"eval -> {out / 'metrics.json'}",
                  caption=", ".join(f"{ARMS[a].short} = {a}" for a in arms if ARMS[a].short != a))
    table.add_column("metric")
    for arm in arms:
        table.add_column(ARMS[arm].short, justify="right")
    ci = [f"{m['all_rules_ci95'][0]:.0%}-{m['all_rules_ci95'][1]:.0%}" for m in (metrics[a] for a in arms)]
    table.add_row("all rules", *[f"{metrics[a]['all_rules_adherence']:.1%}" for a in arms])
    table.add_row("  95% CI", *ci)
    for rule_id in rule_ids:
        table.add_row(f"  {rule_id}", *[f"{metrics[a]['per_rule'][rule_id]:.1%}" for a in arms])
    table.add_row("all rules (loose)", *[f"{metrics[a]['all_rules_adherence_loose']:.1%}" for a in arms])
    if all("label_match" in metrics[a] for a in arms):
        table.add_row("label match", *[f"{metrics[a]['label_match']:.1%}" for a in arms])
        for field in metrics[arms[0]].get("label_match_per_field", {}):
            table.add_row(f"  label: {field}", *[f"{metrics[a]['label_match_per_field'][field]:.1%}" for a in arms])
    judge = next((k for k in metrics if k.startswith("judge_vs_")), None)
    if judge:
        table.add_row(f"judge vs {ARMS[judge[len('judge_vs_'):]].short}",
                      *[f"{metrics[judge][a]['win_rate']:.0%}" if a in metrics[judge] else "-" for a in arms])
    table.add_row("answer diversity", *[f"{metrics[a]['answer_diversity']:.0%}" for a in arms])
    table.add_row("prompt tokens / request", *[f"{metrics[a]['prompt_tokens_per_request']:.0f}" for a in arms])
    table.add_row("generated tokens / request",
                  *[f"{metrics[a]['generated_tokens_per_request']:.0f}" for a in arms])
    table.add_row("latency s / request", *[f"{metrics[a]['latency_s_per_request']:.2f}" for a in arms])
    if "vs_base_prompted" in metrics:
        table.add_row("McNemar p vs base+prompt",
                      *[f"{metrics['vs_base_prompted'][a]:.3g}" if a in metrics["vs_base_prompted"] else "-"
                        for a in arms])
    table.add_row("n", *[str(metrics[a]["n"]) for a in arms])
    Console().print(table)


def make_parser(subparsers: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    """`promptbake eval` (added to `subparsers`) or `python -m evals.run`."""
    parser = stage_parser(subparsers, "eval", "tuned model without the prompt vs base model with it")
    parser.add_argument("config", help="eval config YAML, e.g. configs/evals/demo.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. limit=20")
    parser.set_defaults(run=lambda args: main(load_config(EvalConfig, args.config, args.overrides)))
    return parser


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
