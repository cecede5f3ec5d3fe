"""Optional pairwise LLM-as-judge: which of two arms' answers is better, asked in both orders.

A judge model reads the question, the rules and two answers labelled A and B, and we compare the logits
of its next token "A" vs "B" (no free-text parsing, no sampling). Every pair is judged twice with the
positions swapped, which cancels the judge's bias for the first (or second) slot: an arm wins an input
when it is preferred in both orders, ties when the orders disagree.
"""

from __future__ import annotations

from pydantic import Field, PositiveInt

from evals.stats import sign_test, wilson_ci95
from promptbake.core.config import DEFAULT_MODEL, StrictModel

CONTENT_CRITERIA = ("Which answer responds to the question better: correct, relevant and specific to what was "
                    "asked? Ignore formatting.")
"""The bake's judge for specs without labels: content, since the checks already score the format."""


class JudgeSpec(StrictModel):
    model: str = DEFAULT_MODEL
    """The judge: a short name, hub id, local directory or run adapter. Bigger judges are more reliable."""
    against: str = "base_prompted"
    """Every other arm is compared with this one."""
    arms: list[str] | None = None
    """Judge only these arms against `against` (default: every other arm). Each arm costs two judge passes over
    the held-out inputs; the bake judges only tuned_unprompted."""
    criteria: str = Field("Which answer follows the rules better while still answering the question?",
                          min_length=1)
    batch_size: PositiveInt = 8


TEMPLATE = """{criteria}

Rules:
{rules}

Question: {question}

Answer A: {a}

Answer B: {b}

Reply with a single letter, A or B."""


def prefers_first(model, tokenizer, prompts: list[str], batch_size: int) -> list[bool]:
    """For each judge prompt: does the judge put more weight on "A" than on "B" as its next token?"""
    import torch

    a_id = tokenizer.encode("A", add_special_tokens=False)[0]
    b_id = tokenizer.encode("B", add_special_tokens=False)[0]
    tokenizer.padding_side = "left"  # so that position -1 is every row's next token
    out = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts[start:start + batch_size]]
        batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            logits = model(**batch).logits[:, -1]
            out += (logits[:, a_id] > logits[:, b_id]).tolist()
    return out


def win_rate(model, tokenizer, questions: list[str], answers: list[str], reference: list[str], rules: str,
             spec: JudgeSpec) -> dict:
    """Win rate of `answers` over `reference` (ties count half), and how often both orders agreed."""
    def prompt(q, a, b):
        return TEMPLATE.format(criteria=spec.criteria, rules=rules, question=q, a=a, b=b)

    first = prefers_first(model, tokenizer, [prompt(q, x, r) for q, x, r in zip(questions, answers, reference)],
                          spec.batch_size)
    swapped = prefers_first(model, tokenizer, [prompt(q, r, x) for q, x, r in zip(questions, answers, reference)],
                            spec.batch_size)
    wins = sum(f and not s for f, s in zip(first, swapped))
    losses = sum(s and not f for f, s in zip(first, swapped))
    n = len(questions)
    return {"win_rate": (wins + 0.5 * (n - wins - losses)) / n, "wins": wins, "losses": losses,
            "ties": n - wins - losses, "order_consistency": (wins + losses) / n, "judge": spec.model,
            # of the inputs the judge decided (both orders agreeing), the share won, with its interval, and the
            # sign test of wins against losses
            "decided_win_share_ci95": list(wilson_ci95(wins, wins + losses)), "sign_test_p": sign_test(wins, losses)}
