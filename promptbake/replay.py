"""Replay rows: the base model's own answers to general questions, mixed into the SFT rows (bake stage 1b).

Baking a format into every answer moves a small model off what it knew: the drift arm measures the share of the
base's correct fact and arithmetic answers the tuned model keeps. Replay is the rehearsal lever against that
forgetting: besides the spec's rows, SFT trains on questions outside the spec answered by the base itself, with
no prompt, greedy — answers the base would give anyway, so they teach "stay as you were off the spec".

The questions come from `configs/evals/replay_questions.jsonl` (fact and arithmetic questions, none of them
asked by the eval's drift arm, which would otherwise score answers it trained on: refused when they overlap).
An answer cut off at `max_new_tokens` is dropped (its row would teach stopping mid-sentence). The mixed rows are
spread evenly through the spec's rows, so that every batch sees both, and written to the stage's directory as a
dataset SFT reads instead of data/; the data build itself is left as it was. Where the spec's form applies to
any question (a style), the base's plain answers contradict it; `repair: true` puts them in the spec's form first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, NonNegativeInt, PositiveInt, model_validator

from promptbake.core.config import InputError, StrictModel
from promptbake.core.io import iter_jsonl, write_json, write_jsonl
from promptbake.core.layout import DatasetLayout

if TYPE_CHECKING:
    from data_tools.spec import Rule

REPLAY_QUESTIONS = Path(__file__).resolve().parents[1] / "configs" / "evals" / "replay_questions.jsonl"
REPLAY_ROWS = "replay_rows.jsonl"
"""The replay rows alone, beside the mixed sft_train.jsonl, for reading what the base answered."""


class ReplaySpec(StrictModel):
    fraction: float = Field(0.0, ge=0.0, le=4.0)
    """Replay rows per spec row (0.25: one for every four of the spec's rows; at most as many as there are
    questions). 0 turns replay off (the default until a measurement says otherwise: see README)."""
    questions: str = str(REPLAY_QUESTIONS)
    """General questions the base answers (the general-questions format: id, kind, question, answer)."""
    max_new_tokens: PositiveInt = 64
    """Tokens the base may use per answer; answers that reach it unfinished are dropped."""
    loss: Literal["label", "kl"] = "label"
    """label: the replay rows are SFT rows, the base's answer tokens their labels, sharing the spec rows' epochs and
    budget. kl: they are not trained on as answers; every SFT step adds `kl_weight` x KL(base || tuned) on a batch
    of them, the base being the adapter switched off (sft/retention.py): the base's whole next-token distribution
    at every answer token instead of one label, and the SFT budget stays the spec rows'."""
    kl_weight: float = Field(1.0, gt=0.0)
    """loss kl: the KL term's weight against SFT's loss (both means per token)."""
    repair: bool = False
    """loss label: put each of the base's answers through the spec's repairs (data_tools.scoring.repair: lowercase,
    prefix, cut to length...) and keep only those that then pass every check: the base's facts in the spec's form,
    so that replay teaches no answer the spec forbids. An answer no repair makes pass (a spec whose answers are
    tool calls, or whose checks need a label, which general questions lack) is dropped and counted."""
    when: Literal["always", "sft_drifts"] = "always"
    """always: SFT trains once, on the spec's rows with the replay rows mixed in. sft_drifts: SFT trains on the
    spec's rows alone first; only when it keeps less than `goal` of the base's correct general answers (the drift
    guard's questions, none the eval asks) does SFT train again with the replay rows, and the replay adapter is
    kept when it keeps more of them and passes every rule on at most `inputs_lost` fewer validation inputs
    (`choose`). Where SFT leaves the model's general answers alone, replay (which costs a second SFT run and
    can cost rules) is never trained."""
    goal: float = Field(0.9, gt=0.0, le=1.0)
    """sft_drifts: the share of the base's correct general answers SFT must keep for replay to be skipped."""
    inputs_lost: NonNegativeInt = 1
    """sft_drifts: how many fewer validation inputs the replay adapter may pass (every rule) than SFT and still be
    kept; one input is 4-6 points on the gallery's 17-21-input slices, within what two trainings differ by."""

    @model_validator(mode="after")
    def _repair_only_with_label_rows(self):
        if self.repair and self.loss == "kl":
            raise ValueError("replay.repair applies to replay rows trained on as answers (loss: label); with loss: kl "
                             "the base's own distribution is the target, which no repair changes")
        return self


def replay_questions(path: str, drift_questions: list[str]):
    """The replay questions, validated (errors name file:line and field); one the eval's drift arm asks is
    refused, named: training on it would make the drift arm score answers the model was taught."""
    from evals.drift import read_questions

    asked = {q.casefold().strip() for q in drift_questions}
    questions = read_questions(path)
    for q in questions:
        if q.question.casefold().strip() in asked:
            raise InputError(f"{path}: question {q.id!r} ({q.question!r}) is one the eval's drift arm asks; replay "
                             "questions must be others, or the drift figures would read trained answers")
    return questions


def spread(rows: list[dict], extra: list[dict]) -> list[dict]:
    """`rows` with `extra` inserted at evenly spaced positions (deterministic: no shuffle to seed)."""
    if not extra:
        return list(rows)
    total = len(rows) + len(extra)
    slots = {round((i + 0.5) * total / len(extra) - 0.5) for i in range(len(extra))}
    out, r, e = [], iter(rows), iter(extra)
    for position in range(total):
        out.append(next(e) if position in slots else next(r))
    return out


def build_replay(replay: ReplaySpec, model: str, data: DatasetLayout, out: Path, drift_questions: list[str],
                 batch_size: int, rules: list[Rule] | None = None) -> dict:
    """Answer the replay questions with the base `model` and write `out/sft_train.jsonl` (the spec's rows of
    `data` with the replay rows spread among them) and `out/replay_rows.jsonl`; returns the stage's record.
    With `replay.repair`, `rules` (the spec's) repair each answer and judge it."""
    from data_tools.backends import LocalBackend
    from data_tools.scoring import repair
    from data_tools.spec import Sampling

    if replay.repair and rules is None:  # no rules would pass every answer unrepaired, silently
        raise ValueError("replay.repair needs the spec's rules")
    spec_rows = [row for _, row in iter_jsonl(data.sft_train)]
    questions = replay_questions(replay.questions, drift_questions)
    wanted = round(replay.fraction * len(spec_rows))
    if wanted > len(questions):
        print(f"[promptbake] replay: {wanted} rows asked for ({replay.fraction:g} x {len(spec_rows)}), "
              f"{len(questions)} questions in {replay.questions}: all of them are used")
    questions = questions[:wanted]
    backend = LocalBackend.from_name(model, batch_size)
    completions = backend.generate([[{"role": "user", "content": q.question}] for q in questions],
                                   Sampling(n=1, temperature=0.0, max_new_tokens=replay.max_new_tokens))
    rows, unfinished, repaired, unrepairable = [], 0, 0, 0
    for q, c in zip(questions, completions, strict=True):
        text = c.texts[0].strip()
        if c.completion_tokens[0] >= replay.max_new_tokens or not text:
            unfinished += 1
            continue
        if replay.repair:
            fixed = repair(rules, q.question, text)
            if fixed is None:
                unrepairable += 1
                continue
            repaired += fixed != text
            text = fixed
        rows.append({"prompt": [{"role": "user", "content": q.question}],
                     "completion": [{"role": "assistant", "content": text}]})
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / REPLAY_ROWS, rows)
    write_jsonl(out / DatasetLayout.SFT_TRAIN, spread(spec_rows, rows))
    record = {"dataset": str(out), "spec_rows": len(spec_rows), "replay_rows": len(rows),
              "dropped_unfinished": unfinished, "questions": replay.questions}
    if replay.repair:
        record |= {"repaired": repaired, "dropped_unrepairable": unrepairable}
    write_json(out / "replay.json", record)
    print(f"[promptbake] replay: {len(rows)} rows of the base's own answers mixed into {len(spec_rows)} spec rows"
          + (f" ({unfinished} cut off at {replay.max_new_tokens} tokens, dropped)" if unfinished else "")
          + (f"; repaired to the spec's checks: {repaired} changed, {unrepairable} no repair makes pass, dropped"
             if replay.repair else ""), flush=True)
    return record


def choose(sft: dict, replay: dict | None, goal: float, inputs_lost: int) -> tuple[str, str]:
    """("sft" or "replay", why) for `when: sft_drifts`. Each of `sft` and `replay` holds `kept` (the share of the
    base's correct general answers it keeps; None when the base has none right) and `passing` (validation inputs
    passing every rule); `replay` is None when it was not trained."""
    if sft["kept"] is None:
        return "sft", "the base answers none of the drift guard's questions right: nothing for replay to keep"
    if sft["kept"] >= goal - 1e-9:
        return "sft", f"SFT keeps {sft['kept']:.0%} of the base's correct general answers (goal {goal:.0%})"
    if replay is None:
        return "sft", "replay was not trained"
    drift = f"{sft['kept']:.0%} -> {replay['kept']:.0%} of the base's correct general answers"
    rules = f"{sft['passing']} -> {replay['passing']} validation inputs passing every rule"
    if replay["kept"] <= sft["kept"]:
        return "sft", f"replay keeps no more general answers ({drift}; {rules})"
    if replay["passing"] < sft["passing"] - inputs_lost:
        return "sft", f"replay loses rules ({rules}, more than {inputs_lost} fewer; {drift})"
    return "replay", f"replay keeps more general answers ({drift}; {rules})"
