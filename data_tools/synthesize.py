"""New training inputs written by the teacher, for a spec with too few distinct inputs to learn from.

    synthesized = synthesize_inputs(spec, target, seeds, avoid, out_dir, generate)   # [(input, label), ...]

The teacher sees what the assistant is for (the spec's system prompt), a few of the spec's own inputs and
examples' inputs as seeds (a different random draw for every request, for diversity), and is asked for one
new message; it samples hot. A candidate is kept only when it looks like an input of this spec: not empty,
one message (no role labels), of a length within the range of the given inputs, passing the spec's optional
`inputs.checks`, and no near-duplicate (character 3-gram Jaccard) of a given input, of an eval or validation
input, or of another kept candidate. Rounds repeat until the target is reached or `max_rounds` run out.
Every kept input is journaled (`synthesized.jsonl`), so a killed build resumes without asking again.
Synthesized inputs only ever join the training side: the eval split and the validation slice are drawn from
the given inputs before synthesis, and nothing close to them is kept.

A spec whose inputs carry labels gets labelled inputs: the seeds are given inputs with their labels, and the
teacher writes a new message followed by an `Answer:` line holding its label (one JSON object with exactly
the spec's `label_fields`, or one line for a single `label_field`). Such a label is the teacher's guess, not
ground truth, so the build trusts it only where the prompted teacher, answering the new input on its own,
agrees with it through the spec's checks: no label hint and no label-as-answer for these inputs, and one that
no sample agrees with becomes no training row (data_tools/build.py).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from data_tools.near_dupes import NearDuplicates
from data_tools.spec import PromptSpec, Sampling
from promptbake.core.config import InputError
from promptbake.core.io import append_jsonl, recover_journal
from promptbake.core.layout import DatasetLayout

log = logging.getLogger(__name__)

JOURNAL = DatasetLayout.SYNTHESIZED
ASK = "Write one new message."
ASK_LABELLED = "Write one new message and its answer."
ANSWER = re.compile(r"\n\s*Answer:[ \t]*")
Label = str | dict | None


def label_text(label: str | dict) -> str:
    return label if isinstance(label, str) else json.dumps(label, ensure_ascii=False)


def request(spec: PromptSpec, seeds: list[tuple[str, Label]]) -> list[dict]:
    """One request for a new input (with its label when the seeds have them): the seeds as earlier answers to
    the same ask."""
    labelled = seeds[0][1] is not None
    intro = "You write realistic messages that people send to an assistant"
    system = (f"{intro}{', each with its reference answer' if labelled else ''}. The assistant's instructions "
              f"begin:\n\n{spec.system_prompt.strip() or 'You are a helpful assistant.'}\n\n"
              "Each time you are asked, write one new message such a person might send: a different topic or "
              "wording from the earlier ones, in the same style and length. "
              + ("Then write a line starting 'Answer:' with the answer the assistant should give." if labelled
                 else "Write only the message."))
    ask = ASK_LABELLED if labelled else ASK
    messages = [{"role": "system", "content": system}]
    for text, label in seeds:
        content = text if label is None else f"{text}\nAnswer: {label_text(label)}"
        messages += [{"role": "user", "content": ask}, {"role": "assistant", "content": content}]
    return messages + [{"role": "user", "content": ask}]


def parse_labelled(spec: PromptSpec, sample: str, max_label_chars: int) -> tuple[str, Label] | None:
    """A labelled candidate's message and label, or None when it is not one: no `Answer:` line, an empty or
    over-long label, or (with `label_fields`) not a JSON object with exactly those fields."""
    parts = ANSWER.split(sample, maxsplit=1)
    if len(parts) != 2:
        return None
    text, label = parts[0].strip(), parts[1].strip().split("\n")[0].strip()
    if not label or len(label) > max_label_chars:
        return None
    if spec.inputs.label_fields:
        try:
            label = json.loads(label)
        except ValueError:
            return None
        if not isinstance(label, dict) or set(label) != set(spec.inputs.label_fields):
            return None
    return text, label


def acceptable(spec: PromptSpec, text: str, lo: int, hi: int) -> bool:
    words = len(text.split())
    if not lo <= words <= hi or re.match(r"(?i)^\s*(user|assistant|message|system)\s*:", text):
        return False
    return all(check.evaluate("", text).passed for check in spec.inputs.checks)


def synthesize_inputs(spec: PromptSpec, target: int, seeds: list[tuple[str, Label]], avoid: list[str],
                      out_dir: Path, generate: Callable[[list[list[dict]], Sampling], list[list[str]]]
                      ) -> list[tuple[str, Label]]:
    """Up to `target` new (input, label) pairs, seeded by `seeds` (the training inputs with their labels, None
    for a spec without; the examples' inputs join unlabelled ones) and close to none of `avoid` (every given
    input: training, validation, eval); `generate(conversations, sampling)` returns each conversation's
    samples. Labels are None unless the seeds have them."""
    cfg = spec.synthesis
    if target <= 0:
        return []
    labelled = bool(spec.inputs.label_names())
    examples = [] if labelled else [(ex.input, None) for ex in spec.examples]  # examples carry no labels
    pool: dict[str, Label] = {}
    for text, label in [*seeds, *examples]:
        pool.setdefault(text, label)
    seeds_pool = list(pool.items())
    if not seeds_pool:
        raise InputError(f"{spec.source}: field 'synthesis': the spec has no inputs and no examples to seed "
                         "synthesis with")
    lengths = sorted(len(t.split()) for t, _ in seeds_pool)
    lo, hi = max(1, lengths[0] // 2), lengths[-1] * 2
    longest_label = max(len(label_text(lb)) for _, lb in seeds_pool) if labelled else 0
    max_label_chars = 2 * longest_label
    # room for the label line after the message: about 3 characters a token is on the safe side for English
    # and JSON alike
    max_new_tokens = cfg.max_new_tokens + (math.ceil(longest_label / 3) + 8 if labelled else 0)
    dupes = NearDuplicates(cfg.near_duplicate)
    for text in [*avoid, ASK, ASK_LABELLED]:  # a model may echo the request itself
        dupes.add(text)
    kept: list[tuple[str, Label]] = []
    kept_in_round: Counter[int] = Counter()
    journal = out_dir / JOURNAL
    for record in recover_journal(journal):
        if record.get("spec_hash") != spec.content_hash():
            raise InputError(f"{out_dir}: holds inputs synthesized for a different spec; choose another "
                             "output_dir or delete this one")
        kept.append((record["input"], record.get("label")))
        kept_in_round[record.get("round", 1)] += 1
        dupes.add(record["input"])
    rng = random.Random(spec.split.seed)

    def draw_seeds(missing: int) -> list[list[tuple[str, Label]]]:
        # ask for ~1.5x what is missing: some candidates fail the filters
        return [rng.sample(seeds_pool, min(cfg.seeds_per_request, len(seeds_pool)))
                for _ in range(max(1, (3 * missing) // (2 * cfg.samples_per_request)))]

    # A resumed build goes on from the last round the journal holds (each round is journaled in one append) as
    # an uninterrupted one would: the seed draws of the rounds before it are replayed, so the next round asks
    # what it would have asked. Starting again at round 1 asked other requests with other sampling seeds, and
    # a resumed build kept other inputs than an uninterrupted one. A later round that kept nothing left no
    # record: it is asked again, identically.
    rounds = had = 0
    while rounds < max(kept_in_round, default=0):
        rounds += 1
        draw_seeds(target - had)
        had += kept_in_round[rounds]
    while len(kept) < target and rounds < cfg.max_rounds:
        rounds += 1
        missing = target - len(kept)
        conversations = [request(spec, seeds) for seeds in draw_seeds(missing)]
        sampling = Sampling(n=cfg.samples_per_request, temperature=cfg.temperature, top_p=0.95, top_k=50,
                            max_new_tokens=max_new_tokens, seed=spec.split.seed + 1000 * rounds)
        fresh: list[tuple[str, Label]] = []
        for samples in generate(conversations, sampling):
            for sample in samples:
                parsed = parse_labelled(spec, sample, max_label_chars) if labelled else (sample, None)
                if parsed is None:
                    continue
                text = parsed[0].strip().strip('"').strip()
                if len(kept) + len(fresh) < target and acceptable(spec, text, lo, hi) and not dupes.near(text):
                    dupes.add(text)
                    fresh.append((text, parsed[1]))
        append_jsonl(journal, [{"spec_hash": spec.content_hash(), "round": rounds, "input": t,
                                **({"label": label} if label is not None else {})} for t, label in fresh])
        kept += fresh
        log.info("synthesis round %d: %d new inputs kept (%d of %d)", rounds, len(fresh), len(kept), target)
    if len(kept) < target:
        log.warning("synthesis: %d of %d new inputs after %d rounds (the rest were near-duplicates, off-length "
                    "or failed inputs.checks%s)", len(kept), target, rounds,
                    ", or had no `Answer:` label line" if labelled else "")
    return kept
