"""On-policy rounds after SFT: the tuned model answers every training input n times, the spec's checks sort its
own answers, and it trains on what they say, for up to k rounds while validation adherence improves.

    dpo  chosen = one of its answers that passes every check (the teacher's answer when none does),
         rejected = one that fails; DPO continues the adapter, with the adapter as it started as reference
    rft  rejection-sampling fine-tuning: SFT on its own passing answers (one per input), continuing the adapter
    distill  on-policy prompt distillation: one sampled answer per input (every one, or only passing ones), and
         the adapter continues under a per-token reverse KL (or JSD) to the prompted base on exactly those
         tokens; the teacher is the same weights with the adapter off and the spec's full prompt (sft/distill.py)
    grpo online RL (TRL's GRPOTrainer, sft/rl.py) rewarded by the share of the spec's checks an answer passes: it
         samples its own groups of `samples` answers per input, so no answers are sampled beforehand; a new
         adapter trains on the SFT model, for at most `grpo_max_steps` steps

Each round writes `<run>/rounds/<k>/`: `samples.jsonl` (the answers and their checks, the journal a killed
round resumes from), `prefs_train.jsonl` or `sft_train.jsonl` (rft, distill), and the training run (its
validation curve and best adapter). A round is kept only when its best validation point passes every rule on
more inputs than the adapter it started from (`improves`) and, with `drift_guard` set (the default), it keeps the
base's correct answers to general questions the eval does not ask within `drift_guard` of what the SFT adapter
keeps (promptbake/drift_guard.py; `kept`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt

from data_tools.scoring import all_pass, score
from data_tools.spec import PromptSpec, Sampling
from promptbake.core.config import StrictModel
from promptbake.core.io import iter_jsonl, write_json, write_jsonl
from promptbake.core.layout import DatasetLayout
from sft.trainers import TRAINERS

ROUND_TRAINERS = {"dpo": "dpo", "rft": "sft", "distill": "distill", "grpo": "rl"}
"""Each round method and the trainer (sft/trainers.py) it runs."""


class RoundsSpec(StrictModel):
    method: Literal["none", "dpo", "rft", "distill", "grpo"] = "none"
    """none: SFT only. dpo: preference pairs from the tuned model's own answers. rft: SFT on its own passing
    answers. distill: on-policy prompt distillation: the tuned model (no prompt) samples an answer to each
    training input and learns, token by token, the prompted base's distribution over what it said (the base is
    the same weights with the adapter off: no second model; sft/distill.py)."""
    max_rounds: PositiveInt = 2
    samples: PositiveInt = 4
    """Answers per training input (sampled at `temperature`): more give more inputs with both a passing and a
    failing answer. distill trains on the first answer of each input (or its first passing one)."""
    temperature: float = Field(1.0, gt=0.0)
    min_pairs: PositiveInt = 8
    """A round with fewer pairs (dpo) or rows (rft, distill) than this is not trained (the model already passes
    nearly everything, or nearly nothing)."""
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(5e-5, gt=0)
    """DPO's and GRPO's rate (rft and distill use the SFT recipe's)."""
    beta: float = Field(0.1, gt=0)
    """DPO's beta."""
    divergence: Literal["reverse_kl", "jsd", "forward_kl"] = "reverse_kl"
    """distill: the per-token divergence between the student's and the prompted teacher's distributions on the
    student's own answers; reverse_kl (mode-seeking) is the on-policy distillation loss (sft/distill_loss.py)."""
    grpo_max_steps: PositiveInt = 30
    """grpo: optimizer steps per round at most (each samples `samples` answers to 8 / `samples` inputs, then
    scores them: online RL's sampling makes its steps the slowest of the methods on a CPU)."""
    drift_guard: float | None = Field(0.05, ge=0.0, le=1.0)
    """A round that beats its start on validation is kept only when, of the base's correct answers to general fact
    and arithmetic questions the eval's drift arm does not ask, it still gets right at least the SFT adapter's
    share less this much (0.05: one question in twenty; promptbake/drift_guard.py). The method race's rft rounds
    bought validation inputs with general answers (product_faq 92% -> 77% kept). None: validation alone decides."""
    distill_only_passing: bool = False
    """distill: train only on sampled answers that pass every check, i.e. learn the teacher's distribution only
    where the student already got the rules right (the teacher, a weaker prompted model, is otherwise free to
    pull a rule it breaks back in)."""


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sample_answers(adapter: str, spec: PromptSpec, items: list[tuple[str, object]], rounds: RoundsSpec,
                   max_new_tokens: int, batch_size: int, out: Path, seed: int) -> list[dict]:
    """Every training input answered `rounds.samples` times by the adapter's model (sampling `seed`), each answer
    scored; journaled in `out/samples.jsonl` (a finished journal is reused)."""
    from data_tools.spec import TeacherSpec
    from data_tools.teachers import open_backend

    path = out / "samples.jsonl"
    if path.exists():
        return [row for _, row in iter_jsonl(path)]
    backend = open_backend(TeacherSpec(model=adapter, batch_size=batch_size))
    sampling = Sampling(n=rounds.samples, temperature=rounds.temperature, top_p=0.95, top_k=50,
                        max_new_tokens=max_new_tokens, seed=seed)
    completions = backend.generate([user(text) for text, _ in items], sampling)
    records = []
    for (text, label), c in zip(items, completions):
        passed = [all_pass(score(spec.rules, text, answer, label)) for answer in c.texts]
        records.append({"input": text, "answers": c.texts, "passed": passed})
    write_jsonl(path, records)
    return records


def preference_rows(records: list[dict], teacher: dict[str, str]) -> list[dict]:
    """One pair per input that has a failing answer and something passing to prefer to it: one of the model's
    own passing answers, else the teacher's answer from the SFT data."""
    rows = []
    for r in records:
        good = [a for a, ok in zip(r["answers"], r["passed"]) if ok] or ([teacher[r["input"]]] if r["input"] in
                                                                        teacher else [])
        bad = [a for a, ok in zip(r["answers"], r["passed"]) if not ok]
        if good and bad:
            rows.append({"prompt": user(r["input"]), "chosen": [{"role": "assistant", "content": good[0]}],
                         "rejected": [{"role": "assistant", "content": bad[0]}]})
    return rows


def rft_rows(records: list[dict]) -> list[dict]:
    """One SFT row per input with a passing answer of the model's own (the shortest: the least to go wrong)."""
    rows = []
    for r in records:
        good = sorted((a for a, ok in zip(r["answers"], r["passed"]) if ok), key=len)
        if good:
            rows.append({"prompt": user(r["input"]), "completion": [{"role": "assistant", "content": good[0]}]})
    return rows


def distill_rows(records: list[dict], only_passing: bool) -> list[dict]:
    """One row per input: its first sampled answer (the student's own, as on-policy distillation needs), or with
    `only_passing` its first answer that passes every check (inputs without one are left out)."""
    rows = []
    for r in records:
        answers = [a for a, ok in zip(r["answers"], r["passed"]) if ok or not only_passing]
        if answers:
            rows.append({"prompt": user(r["input"]), "completion": [{"role": "assistant", "content": answers[0]}]})
    return rows


def best_point(run_dir: Path) -> dict | None:
    from sft.validation import read_curve

    curve = read_curve(run_dir)
    if not curve:
        return None
    best = max(curve, key=lambda p: p.key)
    return {"step": best.step, "all_rules": best.all_rules, "key": list(best.key),
            "start_all_rules": curve[0].all_rules}


def improves(result: dict) -> bool:
    """Is a round worth keeping: it trained, and its best step passes every rule on more validation inputs than
    the adapter it started from (its step 0). A higher mean rule pass rate alone does not count: in the method
    race a GRPO round kept on it alone lost a held-out answer and drift (README, "Method race")."""
    best = result.get("best") if result.get("trained") else None
    return best is not None and best["step"] > 0 and best["all_rules"] > best.get("start_all_rules", 1.0)


def kept(result: dict) -> bool:
    """Does the bake keep the round: it improves validation (`improves`) and its drift guard, when measured,
    passed."""
    return improves(result) and result.get("drift_guard", {}).get("ok", True)


def run_round(k: int, adapter: str, rounds: RoundsSpec, spec: PromptSpec, train_items, val_items, teacher: dict,
              base_model: str, sft_recipe, out: Path, every_evals: int, patience: int, max_new_tokens: int,
              batch_size: int, report_to: str) -> dict:
    """One round from `adapter`; returns what it did (and where its best adapter is, if it trained)."""
    from sft.validation import BEST_DIR, ValidationCallback

    out.mkdir(parents=True, exist_ok=True)
    if rounds.method == "grpo":
        return grpo_round(k, adapter, rounds, spec, train_items, val_items, sft_recipe, out, every_evals, patience,
                          max_new_tokens, batch_size, report_to)
    # the round's number seeds its sampling (it was the length of the path of `out`: the same bake in another
    # run directory sampled other answers and trained on other pairs)
    records = sample_answers(adapter, spec, train_items, rounds, max_new_tokens, batch_size, out, seed=k)
    pass_rate = sum(sum(r["passed"]) for r in records) / max(1, sum(len(r["passed"]) for r in records))
    rows = {"dpo": lambda: preference_rows(records, teacher), "rft": lambda: rft_rows(records),
            "distill": lambda: distill_rows(records, rounds.distill_only_passing)}[rounds.method]()
    summary = {"round": k, "start_adapter": adapter, "sample_pass_rate": round(pass_rate, 3), "rows": len(rows)}
    print(f"[promptbake] round {k} ({rounds.method}): the tuned model's own answers pass every check "
          f"{pass_rate:.0%} of the time; {len(rows)} {'pairs' if rounds.method == 'dpo' else 'rows'}", flush=True)
    if len(rows) < rounds.min_pairs:
        return {**summary, "trained": False, "reason": f"fewer than rounds.min_pairs={rounds.min_pairs}"}
    data = out / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / (DatasetLayout.PREFS_TRAIN if rounds.method == "dpo" else DatasetLayout.SFT_TRAIN), rows)
    batch = sft_recipe.training.per_device_train_batch_size
    steps = max(4, math.ceil(rounds.epochs * len(rows) / batch))
    every = max(1, math.ceil(steps / every_evals))
    # the validation callback loads this to decode: an rft round trains a new adapter on the merged SFT model
    run_info = {"base_model": adapter if rounds.method == "rft" else base_model, "method": "lora",
                "dataset": str(data)}
    callback = ValidationCallback(spec, val_items, out, every=every, patience=patience, run_info=run_info,
                                  max_new_tokens=max_new_tokens, batch_size=batch_size)
    training = sft_recipe.training.model_copy(update={"max_steps": steps, "save_steps": every, "save_total_limit": 1,
                                                      "logging_steps": min(sft_recipe.training.logging_steps, every)})
    recipe_cls, train = TRAINERS[ROUND_TRAINERS[rounds.method]].load()
    if rounds.method == "dpo":
        recipe = recipe_cls(model=base_model, init_adapter=adapter, dataset=str(data), output_dir=str(out),
                            beta=rounds.beta, report_to=report_to, precision=sft_recipe.precision,
                            training=training.model_copy(update={"learning_rate": rounds.learning_rate}))
        train(recipe, resume=True, callbacks=[callback])
    elif rounds.method == "distill":
        recipe = recipe_cls(model=base_model, init_adapter=adapter, dataset=str(data), output_dir=str(out),
                            spec=spec.source or spec.name, divergence=rounds.divergence,
                            report_to=report_to, precision=sft_recipe.precision, training=training)
        train(recipe, resume=True, callbacks=[callback], spec=spec)
    else:  # rft: SFT again, a new adapter on the merged SFT model
        recipe = sft_recipe.model_copy(update={"model": adapter, "dataset": str(data), "output_dir": str(out),
                                               "training": training})
        train(recipe, resume=True, callbacks=[callback])
    write_json(out / "round.json", summary)
    return {**summary, "trained": True, "steps": steps, "best": best_point(out),
            "adapter": str(out / BEST_DIR)}


def grpo_round(k: int, adapter: str, rounds: RoundsSpec, spec: PromptSpec, train_items, val_items, sft_recipe,
               out: Path, every_evals: int, patience: int, max_new_tokens: int, batch_size: int,
               report_to: str) -> dict:
    """A GRPO round: a new adapter on the SFT model (merged in memory), rewarded by the checks, validated like
    the others."""
    from sft.rl import GRPOTraining
    from sft.validation import BEST_DIR, ValidationCallback

    recipe_cls, train = TRAINERS[ROUND_TRAINERS["grpo"]].load()

    data = out / "data"
    data.mkdir(exist_ok=True)
    write_jsonl(data / DatasetLayout.SFT_TRAIN, [{"prompt": user(text)} for text, _ in train_items])
    generations = max(2, rounds.samples)  # a group of one has nothing to compare with
    per_step = max(1, 8 // generations) * generations  # answers per step: whole groups
    steps = min(rounds.grpo_max_steps, max(4, math.ceil(rounds.epochs * len(train_items) * generations / per_step)))
    every = max(1, math.ceil(steps / every_evals))
    summary = {"round": k, "start_adapter": adapter, "rows": len(train_items)}
    print(f"[promptbake] round {k} (grpo): {steps} steps of {per_step // generations} inputs x {generations} "
          "answers, rewarded by the checks", flush=True)
    callback = ValidationCallback(spec, val_items, out, every=every, patience=patience,
                                  run_info={"base_model": adapter, "method": "lora", "dataset": str(data)},
                                  max_new_tokens=max_new_tokens, batch_size=batch_size)
    t = sft_recipe.training
    training = GRPOTraining(max_steps=steps, save_steps=every, save_total_limit=1, logging_steps=min(5, every),
                            per_device_train_batch_size=per_step, gradient_accumulation_steps=1,
                            learning_rate=rounds.learning_rate, lr_scheduler_type="constant", warmup_steps=0,
                            activation_checkpointing=t.activation_checkpointing, seed=t.seed)
    recipe = recipe_cls(model=adapter, spec=spec.source or spec.name, dataset=str(data), output_dir=str(out),
                        method="lora", lora=sft_recipe.lora, precision=sft_recipe.precision, report_to=report_to,
                        num_generations=generations, max_completion_length=max_new_tokens,
                        temperature=rounds.temperature, training=training)
    train(recipe, resume=True, callbacks=[callback], spec=spec)
    write_json(out / "round.json", summary)
    return {**summary, "trained": True, "steps": steps, "best": best_point(out), "adapter": str(out / BEST_DIR)}


def teacher_answers(sft_rows_path: Path) -> dict[str, str]:
    return {row["prompt"][-1]["content"]: row["completion"][-1]["content"] for _, row in iter_jsonl(sft_rows_path)}


def summary_line(result: dict) -> str:
    if not result["trained"]:
        return f"round {result['round']}: not trained ({result['reason']})"
    from promptbake.drift_guard import guard_line

    best = result["best"]
    line = f"round {result['round']}: best validation all rules {best['all_rules']:.0%} at step {best['step']}"
    return line + (f"; {guard_line(result['drift_guard'])}" if "drift_guard" in result else "")

