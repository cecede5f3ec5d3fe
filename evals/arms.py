"""The eval's arms: who answers the held-out inputs, with which prompt, and how the answers are made.

One registry, `ARMS`: adding an arm is one entry here (and, for a new way of making answers, one function).

    base_prompted            base model + system prompt + rules + few-shot examples (what the teacher saw)
    base_rules_only          base model + system prompt + rules
    base_unprompted          base model + bare input
    tuned_unprompted         tuned model + bare input       <- the model we want to ship
    tuned_prompted           tuned model + the full prompt
    base_prompted_repaired   base_prompted's greedy answers with the spec's deterministic repairs applied: the
                             cheapest alternative to training (no training, no extra generation)
    base_prompted_best_of_n  the prompted base samples n answers at the teacher's sampling; the first that passes
                             every check usable at inference is kept, else the repaired sample passing the most
    constant                 the null arm: one fixed answer for every input (the most frequent training completion,
                             or a few-shot example's output, whichever scores best). A checker that a constant
                             passes tests the format, not the task; a tuned model must beat it to win
    drift                    base and tuned model on general questions outside the spec, no prompt (evals/drift.py)

The inference-time arms (repaired, best-of-n) never see a label: a check that compares with the reference label
neither triggers a repair nor chooses a sample, since a deployment has no label. They are scored like every
arm, labels included.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from data_tools.format_only import best_fixed_answer, fixed_answers
from data_tools.scoring import adherence, all_pass, failures, repair_best_effort, score, score_loose
from data_tools.spec import PromptSpec, Sampling
from evals.stats import wilson_ci95
from promptbake.core.io import iter_jsonl

Item = tuple[str, "str | dict | None"]
"""(input text, label or None)."""


@dataclass(frozen=True)
class ArmDef:
    model: Literal["base", "tuned", "none", "both"]
    """Which model answers: the base, the tuned one, none (constant) or both (drift)."""
    prompt: Literal["full", "rules", "none"]
    """What the model sees besides the bare input."""
    how: Literal["greedy", "repaired", "best_of_n", "constant", "drift"]
    """greedy: the eval's sampling, as it stands; repaired: another arm's answers, repaired; best_of_n: n samples
    at the teacher's sampling, chosen by the checks; constant: one fixed answer; drift: evals/drift.py."""
    source: str | None = None
    """For `repaired`: the arm whose answers are repaired (it must run too)."""
    short: str = ""
    """The column title in the printed table (a terminal is narrow)."""


ARMS: dict[str, ArmDef] = {
    "base_prompted": ArmDef("base", "full", "greedy", short="base+prompt"),
    "base_rules_only": ArmDef("base", "rules", "greedy", short="base+rules"),
    "base_unprompted": ArmDef("base", "none", "greedy", short="base"),
    "tuned_unprompted": ArmDef("tuned", "none", "greedy", short="tuned"),
    "tuned_prompted": ArmDef("tuned", "full", "greedy", short="tuned+prompt"),
    "base_prompted_repaired": ArmDef("base", "full", "repaired", source="base_prompted", short="repaired"),
    "base_prompted_best_of_n": ArmDef("base", "full", "best_of_n", short="best-of-n"),
    "constant": ArmDef("none", "none", "constant", short="constant"),
    "drift": ArmDef("both", "none", "drift", short="drift"),
}
ArmName = Literal[tuple(ARMS)]  # the registry's names, for configs: a new entry is a valid arm at once
INFERENCE_ARMS = ("base_prompted", "base_prompted_repaired", "base_prompted_best_of_n")
"""The alternatives to training a user could deploy instead: the verdict names the cheapest that reaches the
tuned model."""


def conversation(spec: PromptSpec, prompt: str, text: str) -> list[dict]:
    if prompt == "full":
        return spec.prompted_messages(text, with_examples=True)
    if prompt == "rules":
        return spec.prompted_messages(text, with_examples=False)
    return [{"role": "user", "content": text}]


def generate(backend, spec: PromptSpec, items: list[Item], prompt: str, sampling: Sampling, desc: str):
    """Every input's completion (all `sampling.n` samples) and the cost figures of the arm."""
    from tqdm import tqdm

    texts = [text for text, _ in items]
    bar = tqdm(total=len(texts), desc=desc, unit="input")
    start = time.perf_counter()
    completions = backend.generate([conversation(spec, prompt, t) for t in texts], sampling,
                                   on_batch=lambda idx, _: bar.update(len(idx)))
    wall = time.perf_counter() - start
    bar.close()
    cost = {
        "prompt_tokens_per_request": sum(c.prompt_tokens for c in completions) / len(completions),
        "generated_tokens_per_request": sum(sum(c.completion_tokens) for c in completions) / len(completions),
        "latency_s_per_request": wall / len(texts),
        "throughput_requests_per_s": len(texts) / wall if wall else float("inf"),
    }
    return completions, cost


def greedy_answers(backend, spec: PromptSpec, items: list[Item], prompt: str, sampling: Sampling):
    """(answers per input, cost): the arm's own generation, every sample kept."""
    completions, cost = generate(backend, spec, items, prompt, sampling, f"eval {prompt}-prompt")
    # tokens per answer, as the eval always reported them (one answer per input at the default n=1)
    cost["generated_tokens_per_request"] *= len(completions) / sum(len(c.texts) for c in completions)
    return [c.texts for c in completions], cost


def repaired_answers(spec: PromptSpec, items: list[Item], source: list[dict], source_cost: dict):
    """(answers, cost, how many changed): the source arm's answers with the spec's repairs applied. The cost is
    the source's: a repair is a string edit, microseconds beside a generation."""
    answers = [[repair_best_effort(spec.rules, r["input"], r["answer"])] for r in source]
    changed = sum(a[0] != r["answer"] for a, r in zip(answers, source))
    return answers, dict(source_cost), changed


def best_of_n_sampling(spec: PromptSpec, n: int, max_new_tokens: int) -> Sampling:
    """The teacher's sampling (temperature, top_p, top_k, seed) with `n` samples; a greedy teacher samples at
    0.7 here, since n greedy samples would be one answer n times."""
    teacher = spec.teacher.sampling
    return teacher.model_copy(update={"n": n, "max_new_tokens": max_new_tokens,
                                      "temperature": teacher.temperature or 0.7})


def choose_at_inference(spec: PromptSpec, text: str, samples: list[str]) -> tuple[str, int | None]:
    """The first sample that passes every label-free check, else the best repaired sample (most label-free checks
    passed, earliest on ties); returns (answer, index of the raw sample kept or None when repaired)."""
    usable = [r for r in spec.rules if r.check is not None and not r.check.uses_label]
    for i, s in enumerate(samples):
        if all(r.check.evaluate(text, s).passed for r in usable):
            return s, i
    repaired = [repair_best_effort(spec.rules, text, s) for s in samples]
    passed = [sum(r.check.evaluate(text, s).passed for r in usable) for s in repaired]
    return repaired[passed.index(max(passed))], None


def best_of_n_answers(backend, spec: PromptSpec, items: list[Item], sampling: Sampling):
    """(answers, cost, inputs where a raw sample passed): n samples per input, one kept by the checks."""
    if hasattr(backend, "batch_size"):
        # as many inputs per batch as the greedy arms answer (each with its n samples), not batch_size / n:
        # the per-request latency then compares like with like, and a wider batch reads the weights once per
        # step for more samples
        backend = copy.copy(backend)
        backend.batch_size *= sampling.n
    completions, cost = generate(backend, spec, items, "full", sampling, f"eval best-of-{sampling.n}")
    answers, raw = [], 0
    for (text, _), c in zip(items, completions):
        answer, index = choose_at_inference(spec, text, c.texts)
        answers.append([answer])
        raw += index is not None
    return answers, cost, raw


def training_completions(train_rows: str | Path | None) -> list[str]:
    """The answers of an SFT dataset (TRL prompt-completion rows); none when there is no such file."""
    if train_rows is None or not Path(train_rows).exists():
        return []
    out = []
    for _, row in iter_jsonl(train_rows):
        completion = row.get("completion")
        if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
            out.append(str(completion[-1].get("content", "")))
    return out


def constant_answers(spec: PromptSpec, items: list[Item], train_rows: str | Path | None):
    """(answers, cost, what was chosen): the fixed answer that passes every check on the most held-out inputs
    (data_tools/format_only.py), given for every input. Its cost is nothing: no model runs."""
    best = best_fixed_answer(spec, items, fixed_answers(spec, training_completions(train_rows)))
    cost = {"prompt_tokens_per_request": 0.0, "generated_tokens_per_request": 0.0, "latency_s_per_request": 0.0,
            "throughput_requests_per_s": None}
    candidates = [{"answer": c["answer"], "source": c["source"], "all_rules_adherence": c["pass_rate"]}
                  for c in best["candidates"]]
    return [[best["answer"]] for _ in items], cost, {"constant_answer": best["answer"],
                                                     "constant_source": best["source"],
                                                     "constant_candidates": candidates}


def score_answers(spec: PromptSpec, items: list[Item], answers: list[list[str]], cost: dict):
    """Score every answer raw with the spec's checks; returns (answer records, all-rules outcome per answer,
    arm metrics: adherence with its interval and exact counts, per rule, loose, label match, answer diversity,
    and `cost`)."""
    from evals.labels import label_matches

    rule_ids = [r.id for r in spec.rules if r.check is not None]
    label_rules = [r.id for r in spec.rules if r.check is not None and r.check.uses_label]
    records, strict, loose, matches, scored = [], [], [], [], []
    per_rule_loose = {rid: [] for rid in rule_ids}
    for (text, label), texts in zip(items, answers):
        for answer in texts:
            results = score(spec.rules, text, answer, label)
            scored.append(results)
            results_loose = score_loose(spec.rules, text, answer, label)
            for rid in rule_ids:
                per_rule_loose[rid].append(results_loose[rid])
            strict.append(all_pass(results))
            loose.append(all(results_loose.values()))
            record = {"input": text, "answer": answer, "all_rules": strict[-1], "failed": failures(results)}
            if label is not None:
                fields = label_matches(answer, label)
                if list(fields) == ["label"] and label_rules:
                    # a plain label that is one part of the answer (a tag, a category inside JSON) never equals
                    # the whole answer: the spec's own label-reading checks say how the two relate
                    fields = {rid: results[rid].passed for rid in label_rules}
                matches.append(fields)
                record.update(label=label, label_match=all(fields.values()), label_match_fields=fields)
            records.append(record)
    n = len(strict)
    all_rules, per_rule = adherence(spec.rules, scored)  # validation's definition too (data_tools/scoring.py)
    distinct = len({" ".join(r["answer"].split()) for r in records})
    metrics = {
        "n": n,
        "all_rules_passed": sum(strict),
        "all_rules_adherence": all_rules,
        "all_rules_ci95": list(wilson_ci95(sum(strict), n)),
        "per_rule": per_rule,
        "all_rules_adherence_loose": sum(loose) / n,
        "all_rules_loose_ci95": list(wilson_ci95(sum(loose), n)),
        "per_rule_loose": {rid: sum(v) / n for rid, v in per_rule_loose.items()},
        # distinct answers (whitespace-normalised) per answer: a template shows as a number near 0
        "answer_diversity": distinct / n,
        **cost,
    }
    if matches:
        whole = [all(m.values()) for m in matches]
        metrics["label_match"] = sum(whole) / len(whole)
        metrics["label_match_passed"] = sum(whole)
        metrics["label_match_ci95"] = list(wilson_ci95(sum(whole), len(whole)))
        names = list(dict.fromkeys(k for m in matches for k in m))
        if names != ["label"]:
            metrics["label_match_per_field"] = {k: sum(m.get(k, False) for m in matches) / len(matches) for k in names}
    return records, strict, metrics
