"""The rounds' drift guard (promptbake/drift_guard.py): a round that beats SFT on validation is kept only while it
keeps the base's correct general answers within a tolerance of what SFT keeps; the decoded answers are cached for
a resumed bake, and the bake records the guard on every round validation would keep."""

import json

from evals.drift import kept_share, questions_after
from evals.general_questions import GeneralQuestion, words
from promptbake.drift_guard import ANSWERS_FILE, DriftGuard, decide, guard_line, model_answers
from promptbake.rounds import improves, kept


def fact(i, answer="Paris"):
    return GeneralQuestion(id=f"q{i}", kind="fact", question=f"Question {i}?", answer=answer)


def test_decide_compares_with_sft_within_the_tolerance():
    questions = [fact(i) for i in range(5)]
    base = ["Paris"] * 4 + ["Rome"]  # the base gets four right
    sft = ["Paris"] * 4 + ["Paris"]  # keeps all four (the fifth is not the base's to keep)
    one_lost = ["Paris"] * 3 + ["Lyon", "Paris"]
    assert kept_share(questions, base, one_lost) == (0.75, 4)
    record = decide(questions, base, sft, one_lost, tolerance=0.05)
    assert record == {"questions": 5, "base_correct": 4, "sft_kept": 1.0, "round_kept": 0.75, "tolerance": 0.05,
                      "ok": False}
    assert decide(questions, base, sft, one_lost, tolerance=0.25)["ok"]  # exactly the tolerance: kept
    assert decide(questions, base, sft, sft, tolerance=0.0)["ok"]
    # a round may get back what SFT lost, and nothing to lose passes
    assert decide(questions, base, one_lost, sft, tolerance=0.0)["ok"]
    assert decide(questions, ["Rome"] * 5, sft, one_lost, tolerance=0.0)["ok"]
    assert "not kept: more than 5% below SFT's" in guard_line(record)


def test_a_round_that_improves_validation_is_not_kept_when_its_guard_fails():
    better = {"trained": True, "best": {"step": 4, "all_rules": 0.6, "start_all_rules": 0.5}}
    assert improves(better) and kept(better)  # no guard measured (off, or no questions): validation decides
    assert kept({**better, "drift_guard": {"ok": True}})
    assert not kept({**better, "drift_guard": {"ok": False}})


def test_the_guard_reads_only_questions_the_eval_does_not_ask():
    from evals.drift import read_questions
    from evals.general_questions import GENERAL_QUESTIONS

    after = questions_after(40)
    first = {q.id for q in read_questions(str(GENERAL_QUESTIONS), 40)}
    assert after and not first & {q.id for q in after} and {q.kind for q in after} <= {"fact", "arithmetic"}
    assert questions_after(None) == []  # the eval asks every question: none is left to choose by


def test_the_guard_rejects_a_model_that_loses_the_bases_right_answers(tiny_model_dir, trained_adapter, tmp_path):
    """Real greedy decodes of two models: the trained adapter plays the base and SFT (it keeps all it knows), and
    the questions expect a word it says; the tiny random model, which answers them with nothing, plays a round and
    fails the guard, the adapter itself passes it, and a second guard reads every answer from its cache."""
    prompts = ["Name a colour.", "What is the capital of France?", "Say one word.", "Count to three."]
    placeholder = [fact(i, "zzz").model_copy(update={"question": p}) for i, p in enumerate(prompts)]
    said = model_answers(str(trained_adapter), placeholder, tmp_path / "probe.json", 12, 8)
    questions = [q.model_copy(update={"answer": words(a)[0]}) for q, a in zip(placeholder, said) if words(a)]
    assert questions, said

    rounds, knows, forgets = tmp_path / "rounds", str(trained_adapter), str(tiny_model_dir)
    guard = DriftGuard(knows, knows, questions, rounds, tolerance=0.05, max_new_tokens=12, batch_size=8)
    record = guard.check(forgets, rounds / "1")
    assert record["base_correct"] == len(questions) and record["sft_kept"] == 1.0
    assert record["round_kept"] < 0.95 and not record["ok"], record
    assert guard.check(knows, rounds / "2")["ok"]
    cached = json.loads((rounds / "1" / ANSWERS_FILE).read_text())
    assert cached["model"] == forgets and cached["ids"] == [q.id for q in questions]
    # a resumed bake: every answer from the cache, none decoded again (no file is rewritten)
    stamps = {p: p.stat().st_mtime_ns for p in rounds.rglob("*.json")}
    again = DriftGuard(knows, knows, questions, rounds, 0.05, 12, 8)
    assert again.check(forgets, rounds / "1") == record
    assert {p: p.stat().st_mtime_ns for p in rounds.rglob("*.json")} == stamps
