"""IFEval's instructions as checks (IFEval ids, parameters and semantics), label_match and python checks."""

import pytest
from pydantic import TypeAdapter, ValidationError

from data_tools.checks import Check
from data_tools.scoring import repair, score
from data_tools.spec import Rule, load_spec
from promptbake.core.config import InputError

adapter = TypeAdapter(Check)


def check(**kw):
    return adapter.validate_python(kw)


# user functions for the `python` check, imported by name as `test_ifeval_checks:<name>` (pytest puts tests/
# on sys.path, since tests/ is not a package)
def long_enough(input, response):
    return len(response.split()) >= 3


def agrees_with_label(input, response, label):
    return response.strip() == label, f"{response.strip()!r} vs {label!r}"


def takes_one(response):
    return True


def says_maybe(input, response):
    return "maybe"


WORDS_LT3 = {"kind": "length_constraints:number_words", "relation": "less than", "num_words": 3}
SENTENCES = {"kind": "length_constraints:number_sentences"}
PARAGRAPHS = {"kind": "length_constraints:number_paragraphs", "num_paragraphs": 2}
NTH = {"kind": "length_constraints:nth_paragraph_first_word", "num_paragraphs": 2, "nth_paragraph": 2,
       "first_word": "then"}
BULLETS = {"kind": "detectable_format:number_bullet_lists", "num_bullets": 2}
HIGHLIGHTS = {"kind": "detectable_format:number_highlighted_sections"}
SECTIONS = {"kind": "detectable_format:multiple_sections", "section_spliter": "SECTION", "num_sections": 2}
CAPS = {"kind": "change_case:capital_word_frequency"}
KW_FREQ = {"kind": "keywords:frequency", "keyword": "cat", "frequency": 2}
LETTER = {"kind": "keywords:letter_frequency", "letter": "A", "let_frequency": 3}
PS = {"kind": "detectable_content:postscript"}
END = {"kind": "startend:end_checker", "end_phrase": "Any other questions?"}

CASES = [
    # length_constraints: words are \w+ runs, so "don't" is two words; 'less than' is <, 'at least' is >=
    (WORDS_LT3, "one two", True),
    (WORDS_LT3, "one two three", False),
    (WORDS_LT3, "don't stop", False),
    ({**WORDS_LT3, "relation": "at least"}, "one, two, three!", True),
    ({**WORDS_LT3, "relation": "at least"}, "one two", False),
    ({**SENTENCES, "relation": "less than", "num_sentences": 2}, "Just one sentence here.", True),
    ({**SENTENCES, "relation": "less than", "num_sentences": 2}, "One. Two!", False),
    ({**SENTENCES, "relation": "at least", "num_sentences": 2}, "Dr. Smith came. He left?", True),
    ({**SENTENCES, "relation": "at least", "num_sentences": 2}, "Dr. Smith met J. Doe at 3.5 pm.", False),
    (PARAGRAPHS, "first part *** second part", True),
    (PARAGRAPHS, "***\nfirst\n***\nsecond\n***", True),  # empty ends are not counted
    (PARAGRAPHS, "first *** *** second", False),  # an empty paragraph in the middle fails
    (PARAGRAPHS, "only one", False),
    (NTH, "Intro here.\n\nThen the rest.", True),
    (NTH, 'Intro here.\n\n"Then," he said.', True),  # leading quote and punctuation ignored
    (NTH, "Intro here.\n\nNext the rest.", False),
    (NTH, "Intro.\n\nThen more.\n\nAnd a third.", False),  # right word, wrong paragraph count
    (NTH, "Intro here. Then the rest.", False),
    # keywords: existence matches inside words, forbidden words only as whole words, frequency counts substrings
    ({"kind": "keywords:existence", "keywords": ["tea", "Cake"]}, "I like TEA and cakes", True),
    ({"kind": "keywords:existence", "keywords": ["tea", "Cake"]}, "I like tea", False),
    ({"kind": "keywords:forbidden_words", "forbidden_words": ["tea"]}, "steam rises", True),
    ({"kind": "keywords:forbidden_words", "forbidden_words": ["tea"]}, "Tea time", False),
    ({**KW_FREQ, "relation": "at least"}, "Cat in the catalog", True),
    ({**KW_FREQ, "relation": "at least"}, "one cat", False),
    ({**KW_FREQ, "relation": "less than"}, "one cat", True),
    ({**KW_FREQ, "relation": "less than"}, "cat and CAT", False),
    ({**LETTER, "let_relation": "at least"}, "bAnana", True),
    ({**LETTER, "let_relation": "at least"}, "apple", False),
    ({**LETTER, "let_relation": "less than"}, "apple", True),
    ({**LETTER, "let_relation": "less than"}, "banana", False),
    # detectable_content
    ({"kind": "detectable_content:number_placeholders", "num_placeholders": 2}, "[name] at [address]", True),
    ({"kind": "detectable_content:number_placeholders", "num_placeholders": 2}, "[name] at home", False),
    ({**PS, "postscript_marker": "P.S."}, "Hello.\nP.S. see you soon", True),
    ({**PS, "postscript_marker": "P.S."}, "Hello.\np. s. see you soon", True),
    ({**PS, "postscript_marker": "P.S."}, "Hello. See you soon.", False),
    ({**PS, "postscript_marker": "P.P.S"}, "Hello.\nP.P.S and more", True),
    ({**PS, "postscript_marker": "P.P.S"}, "Hello.\nP.S. only one", False),
    # detectable_format
    (BULLETS, "Intro\n* first\n- second", True),
    (BULLETS, "* one\n* two\n* three", False),
    (BULLETS, "**bold** line\n* one", False),  # ** opens no bullet
    ({"kind": "detectable_format:constrained_response"}, "Well. My answer is maybe.", True),
    ({"kind": "detectable_format:constrained_response"}, "Yes.", False),
    ({**HIGHLIGHTS, "num_highlights": 2}, "*one* and *two*", True),
    ({**HIGHLIGHTS, "num_highlights": 1}, "a **bold** part", True),
    ({**HIGHLIGHTS, "num_highlights": 2}, "*one* and * * and **", False),  # empty highlights do not count
    (SECTIONS, "SECTION 1\nintro\nSECTION 2\nbody", True),
    (SECTIONS, "SECTION 1\nintro only", False),
    ({"kind": "detectable_format:json_format"}, '```JSON\n{"a": [1, 2]}\n```', True),
    ({"kind": "detectable_format:json_format"}, "Here: {'a': 1}", False),
    ({"kind": "detectable_format:title"}, "<<Ode to Joy>>\nverse", True),
    ({"kind": "detectable_format:title"}, "<< >> or <<split\ntitle>>", False),
    # combination
    ({"kind": "combination:two_responses"}, "first answer\n******\nsecond answer", True),
    ({"kind": "combination:two_responses"}, "same\n******\nsame", False),
    ({"kind": "combination:two_responses"}, "a ****** ****** b", False),
    ({"kind": "combination:two_responses"}, "just one", False),
    ({"kind": "combination:repeat_prompt"}, "write a poem. Roses are red.", True),  # defaults to the input
    ({"kind": "combination:repeat_prompt"}, "Roses are red.", False),
    ({"kind": "combination:repeat_prompt", "prompt_to_repeat": "Say hi"}, "say hi\nHi!", True),
    # startend
    (END, 'Sure thing. any other questions?"', True),  # case and a closing quote are ignored
    (END, "Any other questions? Bye.", False),
    ({"kind": "startend:quotation"}, '  "wrapped"  ', True),
    ({"kind": "startend:quotation"}, '"', False),
    ({"kind": "startend:quotation"}, 'not "wrapped"', False),
    # change_case and punctuation: str.islower / str.isupper need at least one cased letter
    ({"kind": "change_case:english_lowercase"}, "all lower 123", True),
    ({"kind": "change_case:english_lowercase"}, "Not lower", False),
    ({"kind": "change_case:english_lowercase"}, "123", False),
    ({"kind": "change_case:english_capital"}, "ALL CAPS 42!", True),
    ({"kind": "change_case:english_capital"}, "MOSTLY caps", False),
    ({**CAPS, "capital_relation": "at least", "capital_frequency": 2}, "THE DOG barks", True),
    ({**CAPS, "capital_relation": "at least", "capital_frequency": 2}, "THE dog barks", False),
    ({**CAPS, "capital_relation": "less than", "capital_frequency": 2}, "a WELL-KNOWN fact", True),  # one word
    ({**CAPS, "capital_relation": "less than", "capital_frequency": 2}, "DON'T", False),  # nltk: DO + N'T
    ({"kind": "punctuation:no_comma"}, "no commas here", True),
    ({"kind": "punctuation:no_comma"}, "one, two", False),
]


@pytest.mark.parametrize("spec, response, expected", CASES)
def test_ifeval_verdicts(spec, response, expected):
    result = check(**spec).evaluate("write a poem", response)
    assert result.passed is expected, result.reason
    assert result.reason


def test_every_ifeval_kind_has_a_passing_and_a_failing_case():
    kinds = {spec["kind"] for spec, _, _ in CASES}
    assert len(kinds) == 24
    for kind in kinds:
        assert {exp for spec, _, exp in CASES if spec["kind"] == kind} == {True, False}, kind


@pytest.mark.parametrize("spec, response", [
    ({"kind": "change_case:english_lowercase"}, "Hello World"),
    ({"kind": "change_case:english_capital"}, "Hello World"),
    ({"kind": "punctuation:no_comma"}, "a, b, c"),
    (END, "That is all."),
    ({"kind": "startend:quotation"}, "say it "),
    ({"kind": "detectable_format:json_format"}, 'Sure! Here it is: {"a": {"b": 2}} Enjoy.'),
    ({**WORDS_LT3, "num_words": 6}, "One two three. Four five six. Seven."),
    ({**WORDS_LT3, "num_words": 4}, "A single sentence that is long."),  # no sentence fits: cut at words
    ({**SENTENCES, "relation": "less than", "num_sentences": 3}, "One. Two. Three. Four."),
    ({"kind": "combination:repeat_prompt"}, "Roses are red."),
])
def test_repairs_make_the_check_pass(spec, response):
    c = check(**spec)
    assert not c.evaluate("write a poem", response).passed
    fixed = c.repair("write a poem", response)
    assert fixed is not None and c.evaluate("write a poem", fixed).passed, fixed


@pytest.mark.parametrize("spec", [
    {**PS, "postscript_marker": "P.S."},  # a bare marker would pass the check but not the instruction
    {**WORDS_LT3, "relation": "at least"},  # cannot add words
    {**SENTENCES, "relation": "less than", "num_sentences": 1},  # would leave nothing
    {"kind": "combination:two_responses"},
])
def test_no_repair_where_it_would_invent_or_erase_content(spec):
    assert check(**spec).repair("q", "Some text. More text.") is None


def test_repair_loop_with_ifeval_rules():
    rules = [Rule(id="lower", text="lowercase", check={"kind": "change_case:english_lowercase"}),
             Rule(id="commas", text="no commas", check={"kind": "punctuation:no_comma"}),
             Rule(id="short", text="< 8 words", check=WORDS_LT3 | {"num_words": 8}),
             Rule(id="end", text="end with", check={"kind": "startend:end_checker", "end_phrase": "bye."})]
    fixed = repair(rules, "q", "Sure, here it is. The Answer is long, very long, far too long.")
    assert fixed == "sure here it is. bye."
    assert all(r.passed for r in score(rules, "q", fixed).values())


@pytest.mark.parametrize("spec, match", [
    ({"kind": "punctuation:no_comma", "n": 1}, "Extra inputs"),
    ({**WORDS_LT3, "relation": "at most"}, "'less than' or 'at least'"),
    ({**WORDS_LT3, "num_words": -1}, "greater than or equal to 0"),
    ({"kind": "length_constraints:number_words", "num_words": 3}, "Field required"),
    ({**LETTER, "letter": "ab", "let_relation": "at least"}, "should match pattern"),
    ({**NTH, "nth_paragraph": 3}, "nth_paragraph 3 > num_paragraphs 2"),
    ({"kind": "language:response_language", "language": "en"}, "does not match any of the expected tags"),
])
def test_bad_parameters_are_rejected(spec, match):
    with pytest.raises(ValidationError, match=match):
        check(**spec)


def test_an_ifeval_row_ports_over():
    # a row of google/IFEval: one kwargs dict per instruction, with null for parameters it does not use
    row = {"instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
           "kwargs": [{"num_words": None, "relation": None},
                      {"num_words": 5, "relation": "at least", "keyword": None}]}
    checks = [check(kind=k, **{a: v for a, v in kw.items() if v is not None})
              for k, kw in zip(row["instruction_id_list"], row["kwargs"])]
    assert [c.evaluate("q", "one two three four five").passed for c in checks] == [True, True]
    assert [c.evaluate("q", "one, two").passed for c in checks] == [False, False]


def test_label_match_modes():
    exact, normalised = check(kind="label_match"), check(kind="label_match", mode="normalised")
    assert exact.evaluate("q", " positive\n", "positive").passed
    assert not exact.evaluate("q", "Positive", "positive").passed
    assert normalised.evaluate("q", ' "Positive." ', "positive").passed
    assert normalised.evaluate("q", "NEW   York", "new york").passed
    verdict = normalised.evaluate("q", "negative", "positive")
    assert not verdict.passed and "positive" in verdict.reason
    assert exact.evaluate("q", "positive") == (False, "no label")


def test_label_reaches_checks_through_score():
    rules = [Rule(id="label", text="answer with the label", check={"kind": "label_match", "mode": "normalised"}),
             Rule(id="lower", text="lowercase", check={"kind": "lowercase"})]
    assert all(r.passed for r in score(rules, "q", "spam.", label="Spam").values())
    assert not score(rules, "q", "spam.")["label"].passed  # the two-argument call still works


def test_python_check_calls_the_user_function():
    two = check(kind="python", function="test_ifeval_checks:long_enough")
    assert two.evaluate("q", "one two three").passed
    verdict = two.evaluate("q", "one two")
    assert not verdict.passed and "long_enough" in verdict.reason

    three = check(kind="python", function="test_ifeval_checks:agrees_with_label")
    assert three.evaluate("q", "cat ", "cat") == (True, "'cat' vs 'cat'")
    assert not three.evaluate("q", "dog", "cat").passed

    builtin = check(kind="python", function="operator:contains")  # contains(input, response): response in input
    assert builtin.evaluate("Maria Lopez called", "Maria").passed
    assert not builtin.evaluate("Maria Lopez called", "Kevin").passed


def test_python_check_rejects_a_bad_return_value():
    with pytest.raises(TypeError, match="expected a bool or"):
        check(kind="python", function="test_ifeval_checks:says_maybe").evaluate("q", "r")


@pytest.mark.parametrize("function, match", [
    ("no_such_module_xyz:fn", "cannot import module 'no_such_module_xyz'"),
    ("test_ifeval_checks:missing_fn", "has no function 'missing_fn'"),
    ("test_ifeval_checks.long_enough", "expected 'package.module:function_name'"),
    ("test_ifeval_checks:takes_one", r"must accept \(input, response\)"),
])
def test_python_check_fails_at_load_time(function, match):
    with pytest.raises(ValidationError, match=match):
        check(kind="python", function=function)


def test_spec_with_ifeval_and_a_bad_function_names_file_line_and_function(tmp_path):
    spec = tmp_path / "spec.yaml"
    body = """\
name: t
rules:
  - id: short
    text: Under 20 words.
    check: {{kind: length_constraints:number_words, relation: less than, num_words: 20}}
  - id: custom
    text: Be custom.
    check: {{kind: python, function: {function}}}
inputs: {{template: "hi {{x}}", slots: {{x: [a]}}}}
"""
    spec.write_text(body.format(function="test_ifeval_checks:long_enough"))
    loaded = load_spec(spec)
    assert loaded.rules[0].check.kind == "length_constraints:number_words"

    spec.write_text(body.format(function="mypkg.rules:no_jargon"))
    with pytest.raises(InputError, match=r"spec.yaml:8: field 'rules.1.check.python.function'.*mypkg.rules:no_jargon"):
        load_spec(spec)
