"""New training inputs written by the teacher, for a spec with too few distinct inputs to learn from.

    synthesized = synthesize_inputs(spec, target, seeds, avoid, out_dir, generate)

The teacher sees what the assistant is for (the spec's system prompt), a few of the spec's own inputs and
examples' inputs as seeds (a different random draw for every request, for diversity), and is asked for one
new message; it samples hot. A candidate is kept only when it looks like an input of this spec: not empty,
one message (no role labels), of a length within the range of the given inputs, passing the spec's optional
`inputs.checks`, and no near-duplicate (character 3-gram Jaccard) of a given input, of an eval or validation
input, or of another kept candidate. Rounds repeat until the target is reached or `max_rounds` run out.
Every kept input is journaled (`synthesized.jsonl`), so a killed build resumes without asking again.
Synthesized inputs only ever join the training side: the eval split and the validation slice are drawn from
the given inputs before synthesis, and nothing close to them is kept.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Callable
from pathlib import Path

from data_tools.spec import PromptSpec, Sampling
from promptbake.config import InputError
from promptbake.io import append_jsonl, recover_journal

log = logging.getLogger(__name__)

JOURNAL = "synthesized.jsonl"
ASK = "Write one new message."


def shingles(text: str, k: int = 3) -> set[str]:
    t = " ".join(re.findall(r"\w+", text.lower()))
    return {t[i : i + k] for i in range(max(1, len(t) - k + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class NearDuplicates:
    """Texts seen so far; `near(text)` says whether a new one is too close to any of them."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.seen: list[set[str]] = []
        self.exact: set[str] = set()

    def add(self, text: str) -> None:
        self.exact.add(" ".join(text.lower().split()))
        self.seen.append(shingles(text))

    def near(self, text: str) -> bool:
        if " ".join(text.lower().split()) in self.exact:
            return True
        s = shingles(text)
        return any(jaccard(s, other) >= self.threshold for other in self.seen)


def request(spec: PromptSpec, seeds: list[str]) -> list[dict]:
    """One request for a new input: the seeds as earlier answers to the same ask."""
    system = ("You write realistic messages that people send to an assistant. The assistant's instructions "
              f"begin:\n\n{spec.system_prompt.strip() or 'You are a helpful assistant.'}\n\n"
              "Each time you are asked, write one new message such a person might send: a different topic or "
              "wording from the earlier ones, in the same style and length. Write only the message.")
    messages = [{"role": "system", "content": system}]
    for seed in seeds:
        messages += [{"role": "user", "content": ASK}, {"role": "assistant", "content": seed}]
    return messages + [{"role": "user", "content": ASK}]


def acceptable(spec: PromptSpec, text: str, lo: int, hi: int) -> bool:
    words = len(text.split())
    if not lo <= words <= hi or re.match(r"(?i)^\s*(user|assistant|message|system)\s*:", text):
        return False
    return all(check.evaluate("", text).passed for check in spec.inputs.checks)


def synthesize_inputs(spec: PromptSpec, target: int, seeds: list[str], avoid: list[str], out_dir: Path,
                      generate: Callable[[list[list[dict]], Sampling], list[list[str]]]) -> list[str]:
    """Up to `target` new inputs, seeded by `seeds` (the training inputs; the examples' inputs join them) and
    close to none of `avoid` (every given input: training, validation, eval); `generate(conversations,
    sampling)` returns the samples of each conversation."""
    cfg = spec.synthesis
    if target <= 0:
        return []
    seeds_pool = list(dict.fromkeys([*seeds, *(ex.input for ex in spec.examples)]))
    if not seeds_pool:
        raise InputError(f"{spec.source}: field 'synthesis': the spec has no inputs and no examples to seed "
                         "synthesis with")
    lengths = sorted(len(t.split()) for t in seeds_pool)
    lo, hi = max(1, lengths[0] // 2), lengths[-1] * 2
    dupes = NearDuplicates(cfg.near_duplicate)
    for text in [*avoid, ASK]:  # a model may echo the request itself
        dupes.add(text)
    kept: list[str] = []
    journal = out_dir / JOURNAL
    for record in recover_journal(journal):
        if record.get("spec_hash") != spec.content_hash():
            raise InputError(f"{out_dir}: holds inputs synthesized for a different spec; choose another "
                             "output_dir or delete this one")
        kept.append(record["input"])
        dupes.add(record["input"])
    rng = random.Random(spec.split.seed)
    rounds = 0
    while len(kept) < target and rounds < cfg.max_rounds:
        rounds += 1
        missing = target - len(kept)
        # ask for ~1.5x what is missing: some candidates fail the filters
        conversations = [request(spec, rng.sample(seeds_pool, min(cfg.seeds_per_request, len(seeds_pool))))
                         for _ in range(max(1, (3 * missing) // (2 * cfg.samples_per_request)))]
        sampling = Sampling(n=cfg.samples_per_request, temperature=cfg.temperature, top_p=0.95, top_k=50,
                            max_new_tokens=cfg.max_new_tokens, seed=spec.split.seed + 1000 * rounds)
        fresh = []
        for samples in generate(conversations, sampling):
            for text in samples:
                text = text.strip().strip('"').strip()
                if len(kept) + len(fresh) < target and acceptable(spec, text, lo, hi) and not dupes.near(text):
                    dupes.add(text)
                    fresh.append(text)
        append_jsonl(journal, [{"spec_hash": spec.content_hash(), "round": rounds, "input": t} for t in fresh])
        kept += fresh
        log.info("synthesis round %d: %d new inputs kept (%d of %d)", rounds, len(fresh), len(kept), target)
    if len(kept) < target:
        log.warning("synthesis: %d of %d new inputs after %d rounds (the rest were near-duplicates, off-length "
                    "or failed inputs.checks)", len(kept), target, rounds)
    return kept
