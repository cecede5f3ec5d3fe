"""Does the tuned model, with no prompt, follow the rules the base model needed a prompt for?

    promptbake eval configs/evals/demo.yaml [key=value ...]

Every arm answers the same held-out inputs with the same generation settings (greedy by default) and the
same batch size; every answer is scored raw by the spec's checks (no repairs). Arms:

    base_prompted     base model + system prompt + rules + few-shot examples (what the teacher saw)
    base_rules_only   base model + system prompt + rules
    base_unprompted   base model + bare input
    tuned_unprompted  tuned model + bare input       <- the model we want to ship
    tuned_prompted    tuned model + the full prompt

Writes `metrics.json` (per arm: all_rules_adherence, all_rules_ci95, per_rule, prompt_tokens_per_request,
generated_tokens_per_request, latency_s_per_request, n; and vs_base_prompted: arm -> McNemar p-value),
`answers_<arm>.jsonl` with every answer and its failed checks, and prints a comparison table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from data_tools.scoring import all_pass, failures, score
from data_tools.spec import PromptSpec, Sampling, load_spec
from evals.stats import mcnemar_exact, wilson_ci95
from promptbake.config import InputError, StrictModel
from promptbake.io import iter_jsonl, write_json, write_jsonl

Arm = Literal["base_prompted", "base_rules_only", "base_unprompted", "tuned_unprompted", "tuned_prompted"]
# arm -> (which model, which prompt)
ARMS: dict[str, tuple[str, str]] = {
    "base_prompted": ("base", "full"),
    "base_rules_only": ("base", "rules"),
    "base_unprompted": ("base", "none"),
    "tuned_unprompted": ("tuned", "none"),
    "tuned_prompted": ("tuned", "full"),
}


class EvalConfig(StrictModel):
    spec: str
    """The prompt spec whose rules are checked and whose prompt the prompted arms get."""
    eval_inputs: str
    """Held-out prompt-only rows (`eval_inputs.jsonl` from `promptbake data build`)."""
    base_model: str = "smollm2-135m-instruct"
    tuned_model: str | None = None
    """A training run's adapter directory or an exported model; needed by the tuned_* arms."""
    arms: list[Arm] = Field(default_factory=lambda: ["base_prompted", "tuned_unprompted"], min_length=1)
    sampling: Sampling = Sampling(max_new_tokens=64)
    """Identical for every arm; greedy by default so that the comparison has no sampling noise."""
    batch_size: PositiveInt = 16
    """Identical for every arm, so that latencies are comparable."""
    limit: PositiveInt | None = None
    """Evaluate only the first N inputs (a quick look)."""
    output_dir: str = "runs/eval"


def read_eval_inputs(path: str, limit: int | None) -> list[str]:
    texts = []
    for lineno, row in iter_jsonl(path):
        prompt = row.get("prompt")
        if not isinstance(prompt, list) or not prompt or not isinstance(prompt[-1], dict) \
                or prompt[-1].get("role") != "user":
            raise InputError(f"{path}:{lineno}: field 'prompt' must be a list of messages ending with a user turn")
        texts.append(prompt[-1]["content"])
    if not texts:
        raise InputError(f"{path}: no eval inputs (the file is empty)")
    return texts[:limit] if limit else texts


def conversation(spec: PromptSpec, prompt: str, text: str) -> list[dict]:
    if prompt == "full":
        return spec.prompted_messages(text, with_examples=True)
    if prompt == "rules":
        return spec.prompted_messages(text, with_examples=False)
    return [{"role": "user", "content": text}]


def run_arm(backend, spec: PromptSpec, texts: list[str], prompt: str, sampling: Sampling):
    """Answer and score every input; returns (per-input answer records, arm metrics)."""
    from tqdm import tqdm

    bar = tqdm(total=len(texts), desc=f"eval {prompt}-prompt", unit="input")
    start = time.perf_counter()
    completions = backend.generate([conversation(spec, prompt, t) for t in texts], sampling,
                                   on_batch=lambda idx, _: bar.update(len(idx)))
    wall = time.perf_counter() - start
    bar.close()
    records, passed_all = [], []
    per_rule: dict[str, list[bool]] = {r.id: [] for r in spec.rules if r.check is not None}
    for text, comp in zip(texts, completions):
        for answer in comp.texts:
            results = score(spec.rules, text, answer)
            for rule_id, res in results.items():
                per_rule[rule_id].append(res.passed)
            passed_all.append(all_pass(results))
            records.append({"input": text, "answer": answer, "all_rules": all_pass(results),
                            "failed": failures(results)})
    n = len(passed_all)
    metrics = {
        "n": n,
        "all_rules_adherence": sum(passed_all) / n,
        "all_rules_ci95": list(wilson_ci95(sum(passed_all), n)),
        "per_rule": {rid: sum(v) / len(v) for rid, v in per_rule.items()},
        "prompt_tokens_per_request": sum(c.prompt_tokens for c in completions) / len(completions),
        "generated_tokens_per_request": sum(sum(c.completion_tokens) for c in completions) / n,
        "latency_s_per_request": wall / len(texts),
        "throughput_requests_per_s": len(texts) / wall,
    }
    return records, passed_all, metrics


def main(config: EvalConfig) -> dict:
    from data_tools.backends import LocalBackend

    spec = load_spec(config.spec)
    texts = read_eval_inputs(config.eval_inputs, config.limit)
    needs_tuned = any(ARMS[a][0] == "tuned" for a in config.arms)
    if needs_tuned and not config.tuned_model:
        raise InputError(f"field 'tuned_model' is required by the arms {config.arms}")
    out = Path(config.output_dir)
    metrics: dict = {}
    outcomes: dict[str, list[bool]] = {}
    for which in ("base", "tuned"):
        arms = [a for a in config.arms if ARMS[a][0] == which]
        if not arms:
            continue
        model_name = config.base_model if which == "base" else config.tuned_model
        backend = LocalBackend.from_name(model_name, config.batch_size)
        for arm in arms:
            records, outcomes[arm], metrics[arm] = run_arm(backend, spec, texts, ARMS[arm][1], config.sampling)
            metrics[arm]["model"] = model_name
            write_jsonl(out / f"answers_{arm}.jsonl", records)
    if "base_prompted" in outcomes:
        metrics["vs_base_prompted"] = {arm: mcnemar_exact(outcomes["base_prompted"], o)
                                       for arm, o in outcomes.items() if arm != "base_prompted"}
    write_json(out / "metrics.json", metrics)
    print_table(metrics, config.arms, out)
    return metrics


def print_table(metrics: dict, arms: list[str], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    rule_ids = list(metrics[arms[0]]["per_rule"])
    table = Table(title=f"eval -> {out / 'metrics.json'}")
    table.add_column("metric")
    for arm in arms:
        table.add_column(arm, justify="right")
    ci = [f"{m['all_rules_ci95'][0]:.0%}-{m['all_rules_ci95'][1]:.0%}" for m in (metrics[a] for a in arms)]
    table.add_row("all rules", *[f"{metrics[a]['all_rules_adherence']:.1%}" for a in arms])
    table.add_row("  95% CI", *ci)
    for rule_id in rule_ids:
        table.add_row(f"  {rule_id}", *[f"{metrics[a]['per_rule'][rule_id]:.1%}" for a in arms])
    table.add_row("prompt tokens / request", *[f"{metrics[a]['prompt_tokens_per_request']:.0f}" for a in arms])
    table.add_row("generated tokens / request",
                  *[f"{metrics[a]['generated_tokens_per_request']:.0f}" for a in arms])
    table.add_row("latency s / request", *[f"{metrics[a]['latency_s_per_request']:.2f}" for a in arms])
    if "vs_base_prompted" in metrics:
        table.add_row("McNemar p vs base_prompted",
                      *[f"{metrics['vs_base_prompted'][a]:.3g}" if a in metrics["vs_base_prompted"] else "-"
                        for a in arms])
    table.add_row("n", *[str(metrics[a]["n"]) for a in arms])
    Console().print(table)


if __name__ == "__main__":
    import argparse

    from promptbake.cli import run_main
    from promptbake.config import load_config

    parser = argparse.ArgumentParser(description="Tuned-without-prompt vs base-with-prompt comparison.")
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    cli_args = parser.parse_args()
    run_main(lambda: main(load_config(EvalConfig, cli_args.config, cli_args.overrides)))
