"""The rounds' drift guard: an on-policy round is kept only while the tuned model still knows what SFT left it.

The method race (README, "Method race") found rft the method that beats SFT on the most validation slices, and
found it losing general answers where it was kept (product_faq kept 92% -> 77% of the base's correct answers,
review_reply 92% -> 85%, style_rules 62% -> 54%): validation reads the spec's rules only, so nothing stopped a
round that bought one more passing input with a handful of facts. The guard adds the second criterion:

  - the questions: the shipped general fact and arithmetic questions *after* the ones the eval's drift arm asks
    (from index `drift_questions` on: `evals.drift.questions_after`, as the strength stage reads them), so the
    keep decision never reads the eval's own drift questions;
  - the base (no adapter), the SFT adapter and each round's best adapter answer them greedily without a prompt;
  - kept share: of the questions the base gets right, the share a model still gets right
    (`evals.drift.kept_share`: the drift arm's `kept_correct`, on other questions);
  - a round whose kept share falls more than `tolerance` below the SFT adapter's is not kept (the bake goes on
    with the adapter it started from, as for a round that did not beat it on validation). The comparison is with
    SFT, not with the round before, so that two rounds cannot each lose a tolerance.

Each model's answers are written as JSON beside the round (`drift_guard_answers.json`) or in `rounds/drift_guard/`
(base, SFT): a resumed bake reads them instead of decoding again.
"""

from __future__ import annotations

import json
from pathlib import Path

from evals.drift import kept_share
from evals.general_questions import GeneralQuestion
from promptbake.core.io import write_json

GUARD_DIR = "drift_guard"
ANSWERS_FILE = "drift_guard_answers.json"


def model_answers(model: str, questions: list[GeneralQuestion], cache: Path, max_new_tokens: int,
                  batch_size: int) -> list[str]:
    """The model's greedy answers to the questions, no prompt; read from `cache` when it holds this model's answers
    to these questions (a resumed bake), else decoded and written there."""
    ids = [q.id for q in questions]
    if cache.exists():
        saved = json.loads(cache.read_text())
        if saved.get("model") == model and saved.get("ids") == ids:
            return saved["answers"]
    from data_tools.backends import LocalBackend
    from data_tools.spec import Sampling

    backend = LocalBackend.from_name(model, batch_size)
    completions = backend.generate([[{"role": "user", "content": q.question}] for q in questions],
                                   Sampling(max_new_tokens=max_new_tokens))
    answers = [c.texts[0] for c in completions]
    cache.parent.mkdir(parents=True, exist_ok=True)
    write_json(cache, {"model": model, "ids": ids, "answers": answers})
    return answers


def decide(questions: list[GeneralQuestion], base: list[str], sft: list[str], candidate: list[str],
           tolerance: float) -> dict:
    """The guard's record for one round: the SFT adapter's and the round's kept shares and whether the round may
    be kept. Nothing to lose (the base gets none right) passes."""
    sft_kept, base_correct = kept_share(questions, base, sft)
    round_kept, _ = kept_share(questions, base, candidate)
    ok = sft_kept is None or round_kept >= sft_kept - tolerance - 1e-9  # shares of one count: no float slack
    return {"questions": len(questions), "base_correct": base_correct, "sft_kept": sft_kept,
            "round_kept": round_kept, "tolerance": tolerance, "ok": ok}


class DriftGuard:
    """Measures the base and the SFT adapter once, then each candidate round against them."""

    def __init__(self, base_model: str, sft_adapter: str, questions: list[GeneralQuestion], rounds_dir: Path,
                 tolerance: float, max_new_tokens: int, batch_size: int):
        self.questions, self.tolerance = questions, tolerance
        self.decode = dict(questions=questions, max_new_tokens=max_new_tokens, batch_size=batch_size)
        self.base = model_answers(base_model, cache=rounds_dir / GUARD_DIR / "base.json", **self.decode)
        self.sft = model_answers(sft_adapter, cache=rounds_dir / GUARD_DIR / "sft.json", **self.decode)

    def check(self, adapter: str, round_dir: Path) -> dict:
        answers = model_answers(adapter, cache=round_dir / ANSWERS_FILE, **self.decode)
        return decide(self.questions, self.base, self.sft, answers, self.tolerance)


def guard_line(record: dict) -> str:
    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0%}"

    verdict = "kept" if record["ok"] else f"not kept: more than {record['tolerance']:.0%} below SFT's"
    return (f"drift guard: of the base's {record['base_correct']} correct answers to {record['questions']} general "
            f"questions the eval does not ask, SFT keeps {pct(record['sft_kept'])}, this round "
            f"{pct(record['round_kept'])} ({verdict})")
