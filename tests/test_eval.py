"""Eval metrics: loose scoring, statistics, label matching, the pairwise judge and W&B logging."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
from eval_recompute import assert_metrics_recompute, read_answers

from data_tools.scoring import loose_variants, score, score_loose
from data_tools.spec import Rule, load_spec
from evals.judge import TEMPLATE, JudgeSpec, prefers_first, win_rate
from evals.run import EvalConfig, main
from evals.stats import mcnemar_exact, wilson_ci95


def test_loose_scoring_forgives_preamble_and_markdown():
    rules = [Rule(id="lower", text="lowercase", check={"kind": "lowercase"}),
             Rule(id="prefix", text="start with ok:", check={"kind": "starts_with", "prefix": "ok:"})]
    answer = "Sure! Here you go:\nok: **all** lowercase"
    assert not any(r.passed for r in score(rules, "q", answer).values())
    assert score_loose(rules, "q", answer) == {"lower": True, "prefix": True}
    assert "ok: all lowercase" in loose_variants(answer)


def test_wilson_and_mcnemar_known_values():
    lo, hi = wilson_ci95(8, 10)
    assert round(lo, 3) == 0.490 and round(hi, 3) == 0.943
    assert wilson_ci95(0, 5)[0] == 0.0 and wilson_ci95(5, 5)[1] == 1.0
    # 10 discordant pairs all favouring one arm: p = 2 * 0.5**10
    assert mcnemar_exact([False] * 10 + [True] * 5, [True] * 15) == pytest.approx(2 * 0.5**10)
    assert mcnemar_exact([True, False], [True, False]) == 1.0


class ScriptedJudge(torch.nn.Module):
    """A judge model whose taste is known: it reads each judge prompt back from the token ids it is given and
    prefers the answer whose `quality(question, answer)` is at least `margin` higher than the other's; when
    neither is clearly better it follows its position bias and picks the answer shown in `bias` ("A" or "B").

    It is called exactly as `evals.judge` calls a real judge (`model(**batch).logits[:, -1]`) and puts its
    verdict on the logit of the row's last real token, so left padding, batching and the order of the two
    judge passes are all exercised: only a caller that reads the right position and swaps the answers finds
    its preference."""

    def __init__(self, tokenizer, quality, margin: int, bias: str):
        super().__init__()
        self.tokenizer, self.quality, self.margin = tokenizer, quality, margin
        self.ids = {x: tokenizer.encode(x, add_special_tokens=False)[0] for x in "AB"}
        self.bias = bias
        parts = re.escape(TEMPLATE).replace(r"\{", "{").replace(r"\}", "}")
        self.pattern = re.compile(parts.format(criteria=".*?", rules=".*?", question="(?P<q>.*?)",
                                               a="(?P<a>.*?)", b="(?P<b>.*?)"), re.S)
        self.calls = 0

    @property
    def device(self):
        return torch.device("cpu")

    def verdict(self, text: str) -> str:
        m = self.pattern.search(text)
        qa, qb = self.quality(m["q"], m["a"]), self.quality(m["q"], m["b"])
        if abs(qa - qb) >= self.margin:
            return "A" if qa > qb else "B"
        return self.bias

    def forward(self, input_ids, attention_mask, **_):
        self.calls += 1
        logits = torch.zeros(*input_ids.shape, len(self.tokenizer))
        for row, (ids, mask) in enumerate(zip(input_ids, attention_mask)):
            last = int(mask.nonzero().max())
            logits[row, last, self.ids[self.verdict(self.tokenizer.decode(ids[mask.bool()]))]] = 1.0
        return SimpleNamespace(logits=logits)


# (answer, reference) pairs for "Tell me about tea." under the tiny spec's rules (lowercase, no commas, at most
# 6 words, starts with "ok:"): how many rules each passes decides the judge's verdict at margin 2.
PAIRS = [
    ("ok: tea is warm", "TEA, TEA, TEA, TEA, TEA, TEA, TEA"),         # 4 vs 0: clearly better -> win
    ("ok: tea is warm", "tea is warm, and very nice indeed today"),   # 4 vs 1: clearly better -> win
    ("Tea, TEA, TEA, TEA, TEA, TEA, TEA", "ok: tea is warm"),         # 0 vs 4: clearly worse -> loss
    ("ok: tea is warm", "ok: Tea is warm"),                           # 4 vs 3: not clear -> position -> tie
    ("tea is warm", "ok: tea is warm"),                               # 3 vs 4: not clear -> tie
    ("ok: tea", "ok: tea is warm"),                                   # 4 vs 4 -> tie
    ("ok: Tea, a warm drink", "tea is warm"),                         # 2 vs 3 -> tie
    ("Tea, TEA.", "ok: tea, warm"),                                   # 1 vs 3: clearly worse -> loss
]


@pytest.mark.parametrize("bias", ["A", "B"])
def test_swapped_judging_finds_the_known_preference_and_cancels_position_bias(tiny_spec, tiny_model_dir, bias):
    from promptbake.core.models import load_tokenizer

    rules = load_spec(tiny_spec).rules
    tokenizer = load_tokenizer(str(tiny_model_dir))
    judge = ScriptedJudge(tokenizer, lambda q, a: sum(r.passed for r in score(rules, q, a).values()), margin=2,
                          bias=bias)
    questions = ["Tell me about tea."] * len(PAIRS)
    answers, reference = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    spec = JudgeSpec(model="scripted", batch_size=3)  # 8 pairs in batches of 3: left padding in every batch

    # asked in one order only, the bias decides every unclear pair: all of them for the answers (A) or none
    prompts = [TEMPLATE.format(criteria=spec.criteria, rules="r", question=q, a=a, b=r)
               for q, a, r in zip(questions, answers, reference)]
    one_order = prefers_first(judge, tokenizer, prompts, spec.batch_size)
    assert one_order == [True, True, False, bias == "A", bias == "A", bias == "A", bias == "A", False]

    judge.calls = 0
    result = win_rate(judge, tokenizer, questions, answers, reference, "r", spec)
    assert (result["wins"], result["losses"], result["ties"]) == (2, 2, 4)  # the known preference, bias cancelled
    assert result["win_rate"] == (2 + 0.5 * 4) / 8 and result["order_consistency"] == 4 / 8
    assert judge.calls == 2 * 3  # both orders, each in ceil(8 / 3) batches


def test_eval_with_labels_judge_and_wandb(tiny_spec, tiny_model_dir, tmp_path, fresh_wandb, monkeypatch):
    import promptbake.core.models
    from promptbake.core.models import load_tokenizer

    rules = load_spec(tiny_spec).rules
    tokenizer = load_tokenizer(str(tiny_model_dir))
    # a taste the tiny model's random answers vary in: the answer shorter by 3 characters or more
    judge = ScriptedJudge(tokenizer, lambda q, a: -len(a), margin=3, bias="A")
    load = promptbake.core.models.load_model_and_tokenizer
    monkeypatch.setattr(promptbake.core.models, "load_model_and_tokenizer",
                        lambda name, *a, **k: (judge, tokenizer) if name == "scripted" else load(name, *a, **k))
    rows = tmp_path / "eval_inputs.jsonl"
    rows.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": q}], "label": a}) + "\n"
                            for q, a in [("name a color", "red"), ("name a fruit", "apple"), ("say yes", "yes")]))
    config = EvalConfig(spec=str(tiny_spec), eval_inputs=str(rows), base_model=str(tiny_model_dir),
                        arms=["base_prompted", "base_unprompted"], batch_size=2,
                        sampling={"max_new_tokens": 5, "temperature": 1.0, "seed": 0},  # greedy answers are all blank
                        judge={"model": "scripted", "against": "base_prompted"},
                        output_dir=str(tmp_path / "eval"))
    metrics = main(config)
    answers = {arm: read_answers(tmp_path / "eval", arm) for arm in config.arms}
    for arm in config.arms:
        assert [a["label"] for a in answers[arm]] == ["red", "apple", "yes"]
        assert_metrics_recompute(metrics[arm], answers[arm], rules)
        assert metrics[arm]["all_rules_adherence"] <= metrics[arm]["all_rules_adherence_loose"]
    # the judge saw each input's two recorded answers (this arm's and the reference arm's), both ways round
    diffs = [len(r["answer"]) - len(x["answer"]) for x, r in zip(answers["base_unprompted"], answers["base_prompted"])]
    judged = metrics["judge_vs_base_prompted"]["base_unprompted"]
    assert judged["wins"] == sum(d >= 3 for d in diffs) and judged["losses"] == sum(d <= -3 for d in diffs)
    assert judged["wins"] + judged["losses"] > 0, f"answer lengths {diffs} leave the judge nothing to decide"
    assert judged["win_rate"] == (judged["wins"] + 0.5 * judged["ties"]) / 3
    assert (tmp_path / "eval" / "report.html").exists() and (tmp_path / "eval" / "report.md").exists()
    # offline W&B writes logged tables as JSON files next to the run's binary log
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/eval/summary_*.table.json"))
    assert tables, "no offline W&B run with the eval tables was written"
    table = json.loads(tables[0].read_text())
    logged = {row[0]: dict(zip(table["columns"], row)) for row in table["data"]}
    assert logged["base_prompted"]["all_rules"] == metrics["base_prompted"]["all_rules_adherence"]
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/eval/answers_*.table.json"))


def test_judge_needs_one_answer_per_input(tiny_spec):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="set sampling.n to 1"):
        EvalConfig(spec=str(tiny_spec), eval_inputs="x.jsonl", judge={}, arms=["base_prompted", "base_unprompted"],
                   sampling={"n": 2, "temperature": 0.7})
