"""The adapter's strength, chosen on the validation slice with drift as the second criterion (bake stage 2c).

A LoRA adapter adds scaling * B @ A to each adapted weight; multiplying that scaling by s in [0, 1] moves the
tuned model back along the straight line towards the base (s = 0 is the base itself: WiSE-FT's interpolation,
PEFT's `rescale_adapter_scale`). Baking rules into every answer moves a small model off its general answers too
(the drift arm); a strength below 1 may give some of that back at little or no cost in rules.

For each candidate strength the adapter's model answers, greedy and without the prompt, in one batched decode:
  - the validation slice (the bake's own: training side, never trained on, never held out), scored by the spec's
    checks: all rules, then the mean rule pass rate, as SFT's validation ranks its steps;
  - general fact and arithmetic questions *after* the ones the eval's drift arm asks (the shipped file's
    questions from index `drift_questions` on), so the choice never reads the eval's own drift questions:
    the share of the questions the base (strength 0) gets right that the model still gets right.
The strength kept is the best by (validation all rules, general answers kept, mean rule pass rate, strength):
drift decides only between strengths the rules cannot tell apart. A strength below 1 is written as a new
adapter with every lora_B scaled by it (the same model as the runtime scaling, for LoRA and DoRA alike).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from pydantic import Field

from promptbake.core.config import StrictModel
from promptbake.core.io import atomic_dir, write_json

STRENGTH_FILE = "strength.json"


class StrengthSpec(StrictModel):
    search: bool = False
    """Choose the adapter's strength among `candidates` on the validation slice, drift second; off: strength 1."""
    candidates: list[float] = Field([1.0, 0.8, 0.6], min_length=1)
    """Multipliers of the adapter's scaling to try (1: as trained; 0 would be the base)."""
    questions: int = Field(60, ge=0)
    """How many general questions (after the eval's drift questions) measure what each strength keeps."""


def choose_strength(adapter: str, spec, val_items: list[tuple[str, object]], drift_questions: int | None,
                    strength: StrengthSpec, max_new_tokens: int, batch_size: int, out: Path) -> dict:
    """Measure every candidate, keep the best, write `out/strength.json` (and `out/adapter` when the kept strength
    is not 1); returns the record, whose `tuned_model` is the adapter to evaluate."""
    from peft.helpers import rescale_adapter_scale

    from data_tools.backends import LocalBackend
    from data_tools.spec import Sampling
    from evals.drift import kept_share, questions_after
    from promptbake.core.models import load_model_and_tokenizer
    from sft.validation import score_answers

    # the eval's drift arm asks the first `drift_questions` (all of them when None: then none is left here, and
    # the rules alone decide)
    questions = questions_after(drift_questions, strength.questions)
    model, tokenizer = load_model_and_tokenizer(adapter, merge_adapter=False)
    backend = LocalBackend(model, tokenizer, batch_size)
    conversations = [[{"role": "user", "content": text}] for text, _ in val_items] + \
        [[{"role": "user", "content": q.question}] for q in questions]
    sampling = Sampling(max_new_tokens=max_new_tokens)

    def answers(s: float) -> list[str]:
        with rescale_adapter_scale(model, s):
            return [c.texts[0] for c in backend.generate(conversations, sampling)]

    base = answers(0.0)[len(val_items):]
    _, base_correct = kept_share(questions, base, base)
    points = []
    for s in sorted(set(strength.candidates), reverse=True):
        texts = answers(s)
        all_rules, per_rule = score_answers(spec, val_items, texts[:len(val_items)])
        general = texts[len(val_items):]
        kept, _ = kept_share(questions, base, general)
        mean_rule = sum(per_rule.values()) / len(per_rule) if per_rule else 0.0
        points.append({"strength": s, "all_rules": all_rules, "per_rule": per_rule, "kept_correct": kept,
                       "mean_rule": mean_rule})
        print(f"[promptbake] strength {s:g}: validation all rules {all_rules:.0%}; keeps "
              f"{'n/a' if kept is None else f'{kept:.0%}'} of the base's {base_correct} correct general answers",
              flush=True)
    best = pick(points)
    tuned = adapter if best["strength"] == 1.0 else str(scaled_copy(adapter, best["strength"], out / "adapter"))
    record = {"strength": best["strength"], "points": points, "questions": len(questions),
              "base_correct": base_correct, "tuned_model": tuned}
    write_json(out / STRENGTH_FILE, record)
    return record


def pick(points: list[dict]) -> dict:
    """The best point: validation all rules first; between strengths the rules cannot tell apart, the one that keeps
    more of the base's correct general answers; then the mean rule pass rate; then the stronger adapter."""
    return max(points, key=lambda p: (p["all_rules"], p["kept_correct"] or 0.0, p["mean_rule"], p["strength"]))


def scaled_copy(adapter: str, s: float, target: Path) -> Path:
    """The adapter directory with every lora_B tensor multiplied by `s`, at `target` (written atomically)."""
    from safetensors.torch import load_file, save_file

    from promptbake.core.models import RUN_INFO_FILE, is_run_output

    source = Path(adapter)
    with atomic_dir(target, "adapter", legacy=is_run_output) as tmp:
        for path in source.iterdir():
            if path.is_file() and path.name != "adapter_model.safetensors":
                shutil.copy2(path, tmp / path.name)
        weights = load_file(str(source / "adapter_model.safetensors"))
        save_file({k: v * s if "lora_B" in k else v for k, v in weights.items()},
                  str(tmp / "adapter_model.safetensors"))
        info_path = tmp / RUN_INFO_FILE
        if info_path.exists():
            info = json.loads(info_path.read_text())
            info["strength"] = {"multiplier": s, "from": str(source)}
            info_path.write_text(json.dumps(info, indent=2) + "\n")
    return target
