"""Off-spec drift: is the tuned model still the general assistant the base model was, on questions no spec asks?

    promptbake eval configs/evals/demo.yaml arms=[base_prompted,tuned_unprompted,drift]

Baking one behaviour in can damage what the model did well elsewhere. The `drift` arm asks the base model and
the tuned model the same general questions (`configs/evals/general_questions.jsonl`: facts, arithmetic,
how-tos, short writing), each as a bare user turn with no system prompt (as the tuned_unprompted arm asks; a
chat template's own default system prompt, like SmolLM2's, stays), greedy, and reports:

    kl_per_token        KL(tuned || base) per token on the base's own greedy answers, teacher-forced: one
                        forward pass of each model over question + base answer (+ EOS when the base stopped by
                        itself), the KL of the next-token distributions summed over the answer tokens and
                        divided by their number (all questions pooled; by kind too). 0: the tuned model would
                        say what the base says with the same confidence.
    agreement_with_base on fact and arithmetic questions, the share whose tuned answer gives the same short
                        answer as the base's (`general_questions.agrees`); `correct` is each model's agreement
                        with the expected answer, reported separately, and `kept_correct` the share of the
                        base's correct answers that the tuned model still gets right
    non_empty           answers that say something
    spec_format         answers that pass every one of the spec's checks that needs no label: on questions the
                        spec is not about they should not; a rise from base to tuned means the spec's format
                        leaks into every answer (expected when the spec is meant for every answer, like the
                        demo's style; a leak when the spec is narrow, like JSON triage). `spec_format_per_rule`
                        shows which rule leaks, and `format_leak` names the rule whose pass rate rose most: it
                        catches a leak that the all-checks share misses when a content check cannot pass on an
                        unrelated question (a tool-call envelope around every answer, with no valid call in it).
    still_answering     non-empty and not in the spec's format

Both models are loaded here at the same time (a teacher-forced KL needs both distributions of every token), so
the arm needs `base_model` and `tuned_model` (an adapter directory or a merged model) even when other arms run
on endpoints: an OpenAI-compatible endpoint does not return whole next-token distributions.

The questions file and how a short answer is read: `evals/general_questions.py`.

`drift_warning(metrics)` turns the figures into the bake's warning, by the thresholds in the eval config's
`drift` section (recorded in metrics.json, so the caller needs no settings of its own).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, PositiveInt

from data_tools.checks import load_function
from data_tools.scoring import all_pass, score
from data_tools.spec import PromptSpec, Rule, Sampling, TeacherSpec
from evals.general_questions import GENERAL_QUESTIONS, SHORT_KINDS, GeneralQuestion, agrees, is_correct
from promptbake.core.config import InputError, StrictModel, validate
from promptbake.core.io import iter_jsonl, write_jsonl


class DriftConfig(StrictModel):
    """The eval config's `drift` section: used when `drift` is one of the arms."""

    questions: str = str(GENERAL_QUESTIONS)
    """General questions, one JSON object per line (schema: `evals/general_questions.py`); by default the 100
    shipped ones."""
    limit: PositiveInt | None = None
    """Ask only the first N questions (a quick look)."""
    max_new_tokens: PositiveInt = 64
    """Greedy answer length for both models; the KL is measured on the base's answer as generated (a cut answer
    included), so a higher limit measures more of each answer at the cost of time."""
    max_kl_per_token: float = Field(1.0, ge=0)
    """Warn when the tuned model's KL from the base per answer token is above this (nats). Baking a house style into
    every answer moves it a lot by itself: 0.60, 0.76 and 0.84 on SmolLM2-135M bakes of demo_style, style_rules
    and tool_call (100 questions); this threshold is for a model pushed well past that."""
    min_kept_correct: float = Field(0.67, ge=0, le=1)
    """Warn when the tuned model still gets right fewer than this share of the fact and arithmetic questions that
    the base gets right (SmolLM2-135M gets 32 of the 56 shipped ones right). Measured on the same three bakes: 72%,
    59% and 9% (tool_call wraps every answer in a tool-call envelope). Agreement with the base on all of them is
    reported too, but a small base is wrong on many and two wrong answers rarely agree, so it mostly measures the
    base's own mistakes."""
    max_format_rise: float | None = Field(None, ge=0, le=1)
    """Warn when the pass rate of one of the spec's checks on these unrelated answers rises by more than this from
    base to tuned (`format_leak`). Off by default: a spec whose format is meant for every answer (a house style)
    raises it on purpose."""


def read_questions(path: str, limit: int | None = None) -> list[GeneralQuestion]:
    """Validate the whole file (errors name file:line and field) before any model loads."""
    questions: list[GeneralQuestion] = []
    seen: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        question = validate(GeneralQuestion, row, f"{path}:{lineno}")
        if question.id in seen:
            raise InputError(f"{path}:{lineno}: field 'id': {question.id!r} repeats line {seen[question.id]}")
        seen[question.id] = lineno
        questions.append(question)
    if not questions:
        raise InputError(f"{path}: no questions (the file is empty)")
    return questions[:limit] if limit else questions


def questions_after(asked: int | None, limit: int | None = None) -> list[GeneralQuestion]:
    """The shipped fact and arithmetic questions after the first `asked` (the ones the eval's drift arm asks; none
    are left when it asks them all, `asked` None): what a stage choosing between models may read without reading
    the eval's own questions (the strength stage, the rounds' drift guard)."""
    pool = read_questions(str(GENERAL_QUESTIONS))[asked:] if asked else []
    return [q for q in pool if q.kind in SHORT_KINDS][:limit]


def kept_share(questions: list[GeneralQuestion], base: list[str], answers: list[str]) -> tuple[float | None, int]:
    """Of the questions the base answers right, the share `answers` still gets right (None when the base gets none
    right: nothing to keep), and how many the base gets right."""
    right = [i for i, q in enumerate(questions) if is_correct(q, base[i])]
    if not right:
        return None, 0
    return sum(is_correct(questions[i], answers[i]) for i in right) / len(right), len(right)


# ---------------------------------------------------------------- the spec's format

def label_free(rule: Rule) -> bool:
    """A rule whose check can pass on an answer to an unrelated question: one that compares with a reference
    label (label_match, a python check taking the label) fails without one, whatever the format."""
    check = rule.check
    if check is None or check.kind == "label_match":
        return False
    return check.kind != "python" or not load_function(check.function)[1]


def in_spec_format(rules: list[Rule], question: str, answer: str) -> tuple[bool, dict[str, bool]]:
    """(passes every label-free check of the spec, rule id -> passed)."""
    results = score(rules, question, answer)
    return bool(results) and all_pass(results), {rule_id: r.passed for rule_id, r in results.items()}


# ---------------------------------------------------------------- KL on the base's answers

def teacher_forced_kl(base, tuned, sequences: list[tuple[list[int], int]], pad_token_id: int, batch_size: int,
                      progress=None) -> list[tuple[float, int]]:
    """(summed KL(tuned || base), answer tokens) per sequence of (token ids, index of the first answer token).

    Each batch is right-padded (a causal model's real positions never see the padding) and run once through each
    model; only the positions that predict an answer token are scored, and the logits are cut to the last
    positions that any row needs (`logits_to_keep`) so that the vocabulary-sized tensors stay small."""
    import torch

    results: list[tuple[float, int]] = [(0.0, 0)] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i][0]))
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = [i for i in order[start:start + batch_size] if len(sequences[i][0]) > sequences[i][1]]
            if idx:
                for i, kl in zip(idx, _batch_kl(base, tuned, [sequences[i] for i in idx], pad_token_id)):
                    results[i] = kl
            if progress is not None:
                progress(len(order[start:start + batch_size]))
    return results


def _batch_kl(base, tuned, rows: list[tuple[list[int], int]], pad_token_id: int) -> list[tuple[float, int]]:
    import torch
    import torch.nn.functional as F

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    for r, (ids, _) in enumerate(rows):
        input_ids[r, :len(ids)] = torch.tensor(ids)
        mask[r, :len(ids)] = 1
    first = min(start for _, start in rows) - 1  # the earliest position that predicts an answer token
    logits = []
    for model in (tuned, base):
        out = model(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                    logits_to_keep=width - first)
        logits.append(out.logits.float().cpu())
    if logits[0].shape[-1] != logits[1].shape[-1]:
        raise InputError(f"the tuned model's vocabulary ({logits[0].shape[-1]}) differs from the base model's "
                         f"({logits[1].shape[-1]}): a per-token KL needs one tokenizer")
    out = []
    for r, (ids, start) in enumerate(rows):
        positions = slice(start - 1 - first, len(ids) - 1 - first)
        kl = F.kl_div(F.log_softmax(logits[1][r, positions], -1), F.log_softmax(logits[0][r, positions], -1),
                      log_target=True, reduction="none").sum(-1)
        out.append((float(kl.sum()), len(ids) - start))
    return out


# ---------------------------------------------------------------- the arm

def run_drift(config, spec: PromptSpec, questions: list[GeneralQuestion], out_dir: Path) -> dict:
    """Answer the questions with the base and the tuned model, measure, write `answers_drift.jsonl`; `config` is
    the eval config (its base_model, tuned_model, batch_size and drift section)."""
    from tqdm import tqdm

    from data_tools.teachers import open_backend

    drift: DriftConfig = config.drift
    sampling = Sampling(temperature=0.0, max_new_tokens=drift.max_new_tokens)
    conversations = [[{"role": "user", "content": q.question}] for q in questions]
    # local models only: the KL needs their whole next-token distributions (open_backend gives LocalBackends)
    backends = {which: open_backend(TeacherSpec(model=name, batch_size=config.batch_size))
                for which, name in (("base", config.base_model), ("tuned", config.tuned_model))}
    answers = {}
    for which, backend in backends.items():
        with tqdm(total=len(questions), desc=f"drift: {which} answers", unit="question") as bar:
            answers[which] = backend.generate(conversations, sampling, on_batch=lambda idx, _: bar.update(len(idx)))
    base = backends["base"]
    tok = base.tokenizer
    sequences = []
    for conversation, completion in zip(conversations, answers["base"]):
        prompt = tok(base.render(conversation), add_special_tokens=False)["input_ids"]
        answer = tok(completion.texts[0], add_special_tokens=False)["input_ids"]
        stopped = completion.completion_tokens[0] < drift.max_new_tokens  # it chose to end here: score that too
        sequences.append((prompt + answer + ([tok.eos_token_id] if stopped else []), len(prompt)))
    with tqdm(total=len(questions), desc="drift: KL tuned || base", unit="question") as bar:
        kls = teacher_forced_kl(base.model, backends["tuned"].model, sequences, tok.pad_token_id,
                                config.batch_size, bar.update)
    rules = [r for r in spec.rules if label_free(r)]
    records = [record(q, rules, answers["base"][i].texts[0], answers["tuned"][i].texts[0], *kls[i])
               for i, q in enumerate(questions)]
    write_jsonl(Path(out_dir) / "answers_drift.jsonl", records)
    metrics = summarise(records, [r.id for r in rules], drift)
    metrics.update(questions=drift.questions, base_model=config.base_model, tuned_model=config.tuned_model)
    return metrics


def record(question: GeneralQuestion, rules: list[Rule], base: str, tuned: str, kl_sum: float, tokens: int) -> dict:
    out = {"id": question.id, "kind": question.kind, "question": question.question, "expected": question.answer,
           "base_answer": base, "tuned_answer": tuned, "answer_tokens": tokens, "kl_sum": kl_sum,
           "kl_per_token": kl_sum / tokens if tokens else None}
    if question.kind in SHORT_KINDS:
        out.update(agrees_with_base=agrees(question, tuned, base), base_correct=is_correct(question, base),
                   tuned_correct=is_correct(question, tuned))
    for which, answer in (("base", base), ("tuned", tuned)):
        out[f"{which}_format"], out[f"{which}_rules"] = in_spec_format(rules, question.question, answer)
    return out


def summarise(records: list[dict], rule_ids: list[str], drift: DriftConfig) -> dict:
    """The arm's metrics, counted from its records (so they can be recomputed from answers_drift.jsonl)."""
    def share(values) -> float | None:
        values = list(values)
        return sum(values) / len(values) if values else None

    def kl(recs) -> float | None:
        tokens = sum(r["answer_tokens"] for r in recs)
        return sum(r["kl_sum"] for r in recs) / tokens if tokens else None

    short = [r for r in records if "agrees_with_base" in r]
    base_right = [r for r in short if r["base_correct"]]
    both = ("base", "tuned")
    metrics = {
        "n": len(records),
        "kl_per_token": kl(records),
        "kl_per_token_by_kind": {k: kl([r for r in records if r["kind"] == k])
                                 for k in dict.fromkeys(r["kind"] for r in records)},
        "answer_tokens": sum(r["answer_tokens"] for r in records),
        "n_short": len(short),
        "agreement_with_base": share(r["agrees_with_base"] for r in short),
        "correct": {w: share(r[f"{w}_correct"] for r in short) for w in both},
        "kept_correct": share(r["tuned_correct"] for r in base_right),
        "non_empty": {w: share(bool(r[f"{w}_answer"]) for r in records) for w in both},
        "spec_format": {w: share(r[f"{w}_format"] for r in records) for w in both},
        "spec_format_per_rule": {w: {rid: share(r[f"{w}_rules"][rid] for r in records) for rid in rule_ids}
                                 for w in both},
        "still_answering": {w: share(bool(r[f"{w}_answer"]) and not r[f"{w}_format"] for r in records)
                            for w in both},
        "format_leak": None,
        "thresholds": drift.model_dump(include={"max_kl_per_token", "min_kept_correct", "max_format_rise"}),
    }
    per_rule = metrics["spec_format_per_rule"]
    if rule_ids:
        leak = max(rule_ids, key=lambda rid: per_rule["tuned"][rid] - per_rule["base"][rid])
        metrics["format_leak"] = {"rule": leak, "rise": per_rule["tuned"][leak] - per_rule["base"][leak]}
    metrics["warning"] = drift_warning({"drift": metrics})
    return metrics


def drift_summary(metrics: dict) -> dict | None:
    """The drift figures a verdict states (an eval's metrics.json), or None when the drift arm did not run."""
    drift = metrics.get("drift")
    if not drift:
        return None
    base_right = round((drift["correct"]["base"] or 0) * drift["n_short"])
    kept = drift["kept_correct"]
    kl = drift["kl_per_token"]
    return {"n": drift["n"], "kl_per_token": kl, "kept_correct": kept, "base_correct": base_right,
            "statement": f"off the spec ({drift['n']} general questions, no prompt): KL from the base "
                         + (f"{kl:.2f} nats/token" if kl is not None else "n/a") + "; keeps "
                         + (f"{kept:.0%}" if kept is not None else "n/a")
                         + f" of the {base_right} fact and arithmetic answers the base gets right"}


def drift_warning(metrics: dict) -> str | None:
    """The bake's warning when the tuned model drifted past the thresholds recorded in `metrics["drift"]`
    (an eval's metrics.json), or None: when it did not, or when the drift arm did not run.

    Thresholds (the eval config's `drift` section): KL per answer token above `max_kl_per_token` (1.0 nats by
    default), the share of the base's correct fact/arithmetic answers that the tuned model still gets right below
    `min_kept_correct` (67%), and, when set, a rise of one check's pass rate above `max_format_rise`."""
    drift = metrics.get("drift")
    if not drift:
        return None
    limits, problems = drift["thresholds"], []
    if drift["kl_per_token"] is not None and drift["kl_per_token"] > limits["max_kl_per_token"]:
        problems.append(f"KL from the base {drift['kl_per_token']:.2f} nats/token > {limits['max_kl_per_token']}")
    kept = drift["kept_correct"]
    if kept is not None and kept < limits["min_kept_correct"]:
        problems.append(f"still gets right {kept:.0%} of the fact/arithmetic questions the base gets right "
                        f"< {limits['min_kept_correct']:.0%}")
    leak = drift["format_leak"]
    if limits["max_format_rise"] is not None and leak is not None and leak["rise"] > limits["max_format_rise"]:
        rates = {w: drift["spec_format_per_rule"][w][leak["rule"]] for w in ("base", "tuned")}
        problems.append(f"passes the spec's check {leak['rule']} on {rates['tuned']:.0%} of unrelated answers "
                        f"(base {rates['base']:.0%})")
    if not problems:
        return None
    return (f"off-spec drift: on {drift['n']} general questions the tuned model " + "; ".join(problems)
            + " (answers_drift.jsonl has each answer beside the base's)")


def drift_rows(drift: dict) -> list[tuple[str, str, str]]:
    """(metric, base, tuned) rows for the printed table and the reports."""
    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.1%}"

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    rows = [("KL(tuned || base) nats / token", "-", num(drift["kl_per_token"]))]
    rows += [(f"  {kind}", "-", num(v)) for kind, v in drift["kl_per_token_by_kind"].items()]
    rows += [(f"agrees with base ({drift['n_short']} fact/arithmetic)", "-", pct(drift["agreement_with_base"])),
             ("correct (expected answer)", pct(drift["correct"]["base"]), pct(drift["correct"]["tuned"])),
             ("base's correct answers kept", "-", pct(drift["kept_correct"]))]
    for key, label in (("non_empty", "non-empty"), ("spec_format", "passes all the spec's checks"),
                       ("still_answering", "still answering")):
        rows.append((label, pct(drift[key]["base"]), pct(drift[key]["tuned"])))
    per_rule = drift["spec_format_per_rule"]
    rows += [(f"  rule {rid} passes", pct(per_rule["base"][rid]), pct(per_rule["tuned"][rid]))
             for rid in per_rule["base"]]
    if drift["format_leak"] is not None:
        leak = drift["format_leak"]
        rows.append(("largest rise of a check (format leak)", "-", f"{leak['rule']} {leak['rise']:+.0%}"))
    rows.append(("questions", str(drift["n"]), str(drift["n"])))
    return rows


def print_drift_table(drift: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="off-spec drift: general questions, no system prompt, greedy")
    for name in ("metric", "base", "tuned"):
        table.add_column(name, justify="left" if name == "metric" else "right")
    for row in drift_rows(drift):
        table.add_row(*row)
    Console().print(table)
    if drift.get("warning"):
        Console().print(f"[yellow]warning: {drift['warning']}[/yellow]")
