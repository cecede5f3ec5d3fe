"""IFEval parity: every case of tests/fixtures/ifeval_parity.jsonl (instruction id, kwargs, prompt, response and
the reference's strict verdict, generated once by scripts/ifeval_parity.py from lm_eval's ifeval in a venv of
its own) goes through promptbake's check vocabulary; a disagreement must be in the script's ALLOWED, with its
reason, and an allowed one must still disagree."""

import importlib.util
import re
from pathlib import Path

import pytest
from pydantic import TypeAdapter

import data_tools.ifeval as ifeval
from data_tools.checks import Check

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("ifeval_parity", ROOT / "scripts" / "ifeval_parity.py")
parity = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(parity)

adapter = TypeAdapter(Check)


@pytest.fixture(scope="module")
def fixture():
    return parity.load_fixture()


@pytest.fixture(scope="module")
def differing(fixture):
    return {d["key"]: d for d in parity.compare(fixture[1])}


def test_every_disagreement_with_the_reference_is_documented(differing):
    undocumented = {key: (d["instruction_id"], d["kwargs"], f"reference {d['reference']}",
                          f"promptbake {d['promptbake']}", d["response"][:200])
                    for key, d in differing.items() if key not in parity.ALLOWED}
    assert not undocumented


def test_every_allowed_disagreement_still_disagrees(fixture, differing):
    keys = {case["key"] for case in fixture[1]}
    assert set(parity.ALLOWED) <= keys, "ALLOWED names cases that are not in the fixture"
    assert not set(parity.ALLOWED) - set(differing), "these now agree with the reference: take them out of ALLOWED"


def test_each_allowed_reason_is_a_difference_the_module_documents():
    for reason in set(parity.ALLOWED.values()):
        heading = reason.split(":")[0]
        assert re.search(rf"^- {heading}:", ifeval.__doc__, flags=re.MULTILINE), heading


def test_the_fixture_covers_every_kind_both_ways_from_the_pinned_reference(fixture):
    meta, cases = fixture
    assert {"lm_eval==0.4.13", "nltk==3.9.1"} <= set(meta["reference_versions"])
    kinds = {c.model_fields["kind"].annotation.__args__[0] for c in ifeval.IFEVAL_CHECKS.__args__}
    assert len(kinds) == 24
    for kind in kinds:
        assert {c["reference"] for c in cases if c["instruction_id"] == kind} == {True, False}, kind
    sources = {c["source"] for c in cases}
    assert sources == {"edge", "ifeval", "probe"}
    assert sum(c["source"] == "ifeval" for c in cases) == 803  # IFEval's 834 instructions less 31 response_language
    assert len(cases) > 1500


@pytest.mark.parametrize("response", ["", " ", "\n\n  \t\n"])
def test_a_blank_response_follows_no_instruction(fixture, response):
    # absence checks too (no commas, fewer than 50 words, no forbidden word), as in the reference's scorer
    row = [c for c in fixture[1] if c["key"].startswith("edge:empty#")]
    assert len(row) == 24 and not any(c["reference"] for c in row)
    for case in row:
        verdict = adapter.validate_python({"kind": case["instruction_id"], **case["kwargs"]}).evaluate("q", response)
        assert not verdict.passed and verdict.reason == "empty response", case["instruction_id"]


@pytest.mark.parametrize("letter, text, count", [
    ("#", "#fun #sun #run and #done", 4),  # IFEval row 1122: "at least 4 hashtags"
    ("!", "Wow! Great! Yes!! Amazing!", 5),  # IFEval row 1129: "6 or more exclamation marks"
    ("A", "banana", 3),
])
def test_letter_frequency_takes_the_character_asked_for(letter, text, count):
    check = {"kind": "keywords:letter_frequency", "letter": letter, "let_relation": "at least"}
    assert adapter.validate_python({**check, "let_frequency": count}).evaluate("q", text).passed
    assert not adapter.validate_python({**check, "let_frequency": count + 1}).evaluate("q", text).passed


def test_sentence_and_capital_word_counts_are_the_references_on_the_edge_texts(fixture):
    rows = {case["key"].split("#")[0]: case for case in fixture[1] if "reference_counts" in case}
    checked = 0
    for key, case in rows.items():
        if not key.startswith("edge:text"):
            continue
        expected = case["reference_counts"]
        text = case["response"]
        assert sum(1 for w in ifeval.word_tokens(text) if w.isupper()) == expected["capital_words"], text
        if f"{key}#0" not in parity.ALLOWED:
            assert len(ifeval.split_sentences(text)) == expected["sentences"], text
        checked += 1
    assert checked == len(parity.EDGE_TEXTS)
