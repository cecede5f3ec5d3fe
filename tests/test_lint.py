"""`data_tools.lint` on hand-built datasets: every finding asserted exactly, the reports, and bad input; near
duplicates by MinHash LSH against all pairs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_tools.lint import LintConfig, config_from_args, main, template_regex
from data_tools.near_dupes import MAX_MISS, NUM_PERM, SEED, Sketcher, lsh_params, shingles, similar_pairs, words
from promptbake.core.config import InputError

# Eight contact-extraction rows whose prompts each name a different person; the answers of lines 1-5 invent
# "Kevin Smith" anyway (seed 000's failure). Lines 9-10 are an exact duplicate, lines 11-12 near-duplicate
# answers to different questions, line 13 is far longer than max_length.
CSV_ROWS = [
    ("Hi, this is Maria Lopez, call me at 719-555-0142 about order A-1001.", "Kevin Smith,719-555-0142,A-1001"),
    ("Order B-2002 has not arrived. Reach me on 303-555-0199. Thanks, Tom Baker", "Kevin Smith,303-555-0199,B-2002"),
    ("Priya Natarajan here; my parcel C-3003 is damaged, phone 415-555-0123.", "Kevin Smith,415-555-0123,C-3003"),
    ("Greetings from Ana Silva. Order D-4004 was charged twice. Number: 212-555-0177.",
     "Kevin Smith,212-555-0177,D-4004"),
    ("This is Jonas Berg about E-5005; please ring 617-555-0111.", "Kevin Smith,617-555-0111,E-5005"),
    ("Lena Park writing: where is order F-6006? My phone is 718-555-0188.", "Lena Park,718-555-0188,F-6006"),
    ("Omar Haddad, order G-7007, call 503-555-0166.", "Omar Haddad,503-555-0166,G-7007"),
    ("Sofia Rossi reporting a missing item in H-8008; phone 602-555-0155.", "Sofia Rossi,602-555-0155,H-8008"),
]
BREAD = "Bake it for about forty minutes until the crust is deep golden brown and the loaf sounds hollow when tapped"
OTHER_ROWS = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How long should I bake a loaf of sourdough bread in a hot oven at home?", BREAD + "."),
    ("When is my sandwich loaf done baking?", BREAD + " underneath."),
    ("Tell me a long story about a lighthouse.", " ".join(["The keeper climbed the stairs again."] * 30)),
]
EVAL_INPUTS = [
    "What is the capital of Spain?",                   # similar words, a different question: not a leak
    "omar haddad, order G-7007, call 503-555-0166",    # line 7 after normalisation: exact leak
    "How long should I bake a loaf of sourdough bread in a hot oven at home today?",  # near leak of line 11
    "How do I reset my password?",
]


def conversation(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def sft_rows(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"prompt": conversation("user", p), "completion": conversation("assistant", c)} for p, c in pairs]


@pytest.fixture
def dataset(tmp_path) -> Path:
    out = tmp_path / "data"
    out.mkdir()
    write_jsonl(out / "sft_train.jsonl", sft_rows(CSV_ROWS + OTHER_ROWS))
    write_jsonl(out / "eval_inputs.jsonl", [{"prompt": conversation("user", t)} for t in EVAL_INPUTS])
    write_jsonl(out / "prefs_train.jsonl", [{"prompt": conversation("user", "Say hi."),
                                             "chosen": conversation("assistant", "hi"),
                                             "rejected": conversation("assistant", "Hello, there!")}])
    (out / "manifest.json").write_text(json.dumps({"spec_hash": "0123"}))
    return out


@pytest.fixture
def report(dataset, tiny_model_dir) -> dict:
    return main(LintConfig(dataset=str(dataset), model=str(tiny_model_dir), max_length=128))


def test_duplicates_and_leakage(report):
    assert report["rows"] == 13 and report["eval_inputs"] == 4 and report["pref_rows"] == 1
    assert report["exact_duplicates"] == [[9, 10]]
    # the exact pair is not reported again as a near pair; the bread answers differ by one added word, which
    # adds one 3-shingle: n - 2 shared of n - 1
    assert [n["lines"] for n in report["near_duplicates"]] == [[11, 12]]
    n = len(BREAD.split())
    assert report["near_duplicates"][0]["similarity"] == pytest.approx((n - 2) / (n - 1), abs=1e-3)
    leaks = [(x["eval_line"], x["train_file"], x["train_line"], x["kind"]) for x in report["leakage"]]
    assert leaks == [(2, "sft_train.jsonl", 7, "exact"), (3, "sft_train.jsonl", 11, "near")]


def test_invented_value_is_flagged_with_its_rows(report):
    values = report["invented_values"]
    assert [(v["value"], v["rows"], v["lines"]) for v in values["flagged"]] == [("Kevin Smith", 5, [1, 2, 3, 4, 5])]
    # names, phones and order numbers copied from their own prompt are not counted at all
    assert {v["value"] for v in values["top"]} == {"Kevin Smith"}


def test_lengths_flag_the_row_training_would_truncate(report, tiny_model_dir):
    from promptbake.core.models import load_tokenizer

    tok = load_tokenizer(str(tiny_model_dir))
    prompt, completion = OTHER_ROWS[-1]
    text = tok.apply_chat_template(conversation("user", prompt) + conversation("assistant", completion), tokenize=False)
    lengths = report["lengths"]
    assert lengths["tokens"][-1] == len(tok(text, add_special_tokens=False)["input_ids"]) > 128
    assert max(lengths["tokens"][:-1]) < 128
    assert lengths["truncated_lines"] == [13]


def test_issue_count_and_reports(report, dataset):
    assert report["issue_counts"] == {
        "exact_duplicate_rows": 1, "repeated_completions": 0, "near_duplicate_pairs": 1, "leaked_eval_inputs": 2,
        "overrepresented_values": 1,
        "truncated_rows": 1, "rows_failing_rules": 0, "slots_never_missing": 0, "format_only_checks": 0}
    assert report["issues"] == 6
    out = dataset / "lint"
    assert json.loads((out / "lint.json").read_text())["issues"] == 6
    md = (out / "lint.md").read_text()
    assert "**6 issues**" in md and "'Kevin Smith' in 5 rows (38%): lines [1, 2, 3, 4, 5]" in md
    page = (out / "lint.html").read_text()
    # self-contained: a CSP that forbids every fetch, nothing linked or scripted, the plot inline
    assert "default-src 'none'" in page
    assert not re.search(r"<script|<link|<img|<iframe|src=|href=", page)
    assert re.findall(r"https?://[^\"' ]+", page) == ["http://www.w3.org/2000/svg"] * page.count("<svg")
    assert '<svg class="plot" id="plot-lengths"' in page and "max_length 128" in page
    assert 'id="plot-values"' in page and "Kevin Smith" in page


def test_single_file_and_overrides(dataset, tiny_model_dir, tmp_path):
    config = config_from_args(str(dataset / "sft_train.jsonl"),
                              [f"model={tiny_model_dir}", "max_length=512", "overrepresented_fraction=0.5",
                               f"output_dir={tmp_path / 'out'}"])
    report = main(config)
    assert report["eval_inputs"] == 0 and report["leakage"] == [] and report["lengths"]["truncated_lines"] == []
    assert [v["value"] for v in report["invented_values"]["flagged"]] == []  # 5/13 is not above half
    assert (tmp_path / "out" / "lint.html").is_file()


COVERAGE_SPEC = """\
name: lint-coverage
rules:
  - {id: csv, text: One CSV line name and order., check: {kind: regex, pattern: '^[^,]*,[^,]*$'}}
  - {id: no_invented_names, text: Never invent a name., check: {kind: grounding, pattern: '[A-Z][a-z]+ [A-Z][a-z]+'}}
  - {id: unchecked, text: Be polite.}
inputs:
  template: "{greeting} {name} needs help with order {order}."
  slots:
    greeting: [Hello, Hi]
    name: [Maria Lopez, Tom Baker, ""]
    order: [A-1, B-2]
  missing: {order: {fraction: 0.5, text: "an unknown number"}}
"""


def test_rule_pass_rates_and_slot_coverage(tmp_path, tiny_model_dir):
    spec = tmp_path / "spec.yaml"
    spec.write_text(COVERAGE_SPEC)
    rows = [("Hello Maria Lopez needs help with order A-1.", "Maria Lopez,A-1"),
            ("Hi needs help with order B-2.", "Kevin Smith,B-2"),                     # name empty; invented
            ("Hello Tom Baker needs help with order an unknown number.", "Tom Baker,"),  # order missing
            ("Bonjour Tom needs help.", "Tom,one,two")]                              # not from the template
    path = tmp_path / "sft_train.jsonl"
    write_jsonl(path, sft_rows(rows))
    report = main(LintConfig(dataset=str(path), model=str(tiny_model_dir), spec=str(spec)))
    rules = report["rules"]
    assert rules["per_rule"] == {"csv": 0.75, "no_invented_names": 0.75}
    assert rules["failed_lines"] == {"csv": [4], "no_invented_names": [2]} and rules["rows_failing"] == [2, 4]
    cov = report["coverage"]
    assert cov["slots"] == {"greeting": {"present": 3, "absent": 0, "designed_missing": False},
                            "name": {"present": 2, "absent": 1, "designed_missing": True},
                            "order": {"present": 2, "absent": 1, "designed_missing": True}}
    assert cov["unmatched_lines"] == [4] and cov["uncovered"] == []
    assert report["issue_counts"]["rows_failing_rules"] == 2

    # drop the row that shows the order missing: the data never teaches what to do without one
    write_jsonl(path, sft_rows(rows[:2]))
    report = main(LintConfig(dataset=str(path), model=str(tiny_model_dir), spec=str(spec)))
    assert report["coverage"]["uncovered"] == ["order"] and report["issue_counts"]["slots_never_missing"] == 1
    md = (tmp_path / "lint" / "lint.md").read_text()
    assert "order: 2 present, 0 absent (designed to be missing, never is)" in md


def test_template_regex_reads_slots_back():
    regex = template_regex("Dear {name}, your {item} ships {when}. Thanks {name}!",
                           {"name": ["Ann", "Ann Lee", ""], "item": ["lamp", "desk lamp"], "when": ["today"]},
                           {"when": "soon"})
    m = regex.fullmatch("Dear Ann Lee, your desk lamp ships soon. Thanks Ann Lee!")
    assert m and m.group("name") == "Ann Lee" and m.group("item") == "desk lamp" and m.group("when") == "soon"
    assert regex.fullmatch("Dear , your lamp ships today. Thanks !").group("name") == ""
    assert regex.fullmatch("Dear Ann, your lamp ships today. Thanks Bob!") is None


def test_bad_input_names_the_file_and_line(tmp_path, tiny_model_dir):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match=f"{re.escape(str(missing))}: dataset not found"):
        main(LintConfig(dataset=str(missing), model=str(tiny_model_dir)))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(InputError, match="no sft_train.jsonl"):
        main(LintConfig(dataset=str(empty_dir), model=str(tiny_model_dir)))
    path = tmp_path / "sft_train.jsonl"
    good = json.dumps({"prompt": "a", "completion": "b"})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:2: not valid JSON")):
        main(LintConfig(dataset=str(path), model=str(tiny_model_dir)))
    path.write_text(good + "\n\n" + json.dumps({"prompt": "a"}) + "\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:3: missing field(s) ['completion']")):
        main(LintConfig(dataset=str(path), model=str(tiny_model_dir)))
    path.write_text(json.dumps({"prompt": 3, "completion": "b"}) + "\n")
    with pytest.raises(InputError, match=re.escape(f"{path}:1: field 'prompt' must be a string")):
        main(LintConfig(dataset=str(path), model=str(tiny_model_dir)))
    with pytest.raises(InputError, match="field 'value_pattern'"):
        config_from_args(str(path), ["value_pattern=(unclosed"])


# ---------------------------------------------------------------- near duplicates at scale: MinHash LSH

def planted_texts(n_base: int = 300) -> tuple[list[str], set[tuple[int, int, float]]]:
    """Base answers of 50 distinct words (48 3-shingles; all open alike, as a spec's answers do) and, for some,
    a copy with m words appended: Jaccard exactly 48 / (48 + m), from 0.71 to 1 around the 0.8 threshold."""
    texts, expected = [], set()
    for b in range(n_base):
        texts.append("Quick answer: " + " ".join(f"w{b}x{k}" for k in range(48)))
    for b, m in enumerate([20, 16, 13, 12, 11, 10, 8, 5, 2, 0] * 12):
        texts.append(texts[b] + "".join(f" extra{b}y{k}" for k in range(m)))
        if 48 / (48 + m) >= 0.8:
            expected.add((b, len(texts) - 1, round(48 / (48 + m), 3)))
    texts += ["", "", "Hi!", "hi", "a b", "A, B.", texts[0].upper()]  # short texts are one shingle each
    n = len(texts)
    expected |= {(n - 7, n - 6, 1.0), (n - 5, n - 4, 1.0), (n - 3, n - 2, 1.0), (0, n - 1, 1.0)}
    return texts, expected


def test_lsh_finds_the_pairs_all_pairs_finds():
    texts, expected = planted_texts()
    exact = similar_pairs(texts, None, 0.8, lsh_min_rows=len(texts) + 1)
    assert set(exact) == expected and 48 / 60 in {s for *_, s in exact}  # a pair at exactly the threshold
    assert similar_pairs(texts, None, 0.8, lsh_min_rows=1) == exact
    # the leakage shape: some texts against all of them
    left = texts[:40] + texts[-7:] + ["quick answer: w3x0 w3x1 w3x2 w3x3"]
    exact = similar_pairs(left, texts, 0.8, lsh_min_rows=10**6)
    assert len(exact) > len(left) and similar_pairs(left, texts, 0.8, lsh_min_rows=1) == exact


def test_minhash_signatures_equal_datasketch():
    from datasketch import MinHash

    sketcher = Sketcher(0.8)
    assert (sketcher.bands, sketcher.rows) == lsh_params(0.8) == (25, 5)
    texts = ["The keeper climbed the stairs again.", "a b", "", "one two three four"]
    hashes, counts = sketcher.shingle_hashes([sketcher.ids(words(t)) for t in texts])
    assert counts.tolist() == [len(shingles(t)) for t in texts]
    for text_hashes, signature in zip(np.split(hashes, np.cumsum(counts)[:-1]), sketcher.signatures(hashes, counts)):
        reference = MinHash(num_perm=sketcher.num_perm, seed=SEED, hashfunc=int)
        reference.update_batch(text_hashes.tolist())
        assert reference.hashvalues.tolist() == signature.tolist()


@pytest.mark.parametrize("threshold", [0.5, 0.7, 0.8, 0.9, 0.95])
def test_lsh_miss_probability_at_the_threshold(threshold):
    bands, rows = lsh_params(threshold)
    assert bands * rows <= NUM_PERM and (1 - threshold**rows) ** bands <= MAX_MISS


def test_lint_report_is_the_same_through_lsh(report, dataset, tiny_model_dir, tmp_path):
    lsh = main(LintConfig(dataset=str(dataset), model=str(tiny_model_dir), max_length=128, lsh_min_rows=1,
                          output_dir=str(tmp_path / "lsh")))
    assert lsh["near_duplicates"] == report["near_duplicates"] and lsh["leakage"] == report["leakage"]
    assert lsh["issue_counts"] == report["issue_counts"]
    assert "MinHash LSH" in lsh["notes"][0] and not any("MinHash" in n for n in report["notes"])


def test_bench_lint_finds_what_it_planted(tiny_model_dir):
    """scripts/bench_lint.py end to end, small: the real command, through the LSH path (3000 rows > 2000)."""
    done = subprocess.run([sys.executable, "scripts/bench_lint.py", "--rows", "3000", "--model", str(tiny_model_dir)],
                          capture_output=True, text=True, timeout=300, check=True)
    figures = dict(item.split("=") for item in done.stdout.strip().splitlines()[-1].split())
    assert figures["rows"] == "3000" and float(figures["peak_rss_mb"]) > 0
    for key in ("near_found", "leaks_found"):
        found, planted = map(int, figures[key].split("/"))
        assert found == planted > 0, key
    assert figures["extra_near"] == "0"


def test_lsh_stops_where_pairs_grow_with_the_square(monkeypatch, dataset, tiny_model_dir):
    from data_tools import near_dupes

    # answers on one fixed template: a third of their shingles shared by all, so LSH candidates pile up
    texts = [f'{{"category": "billing", "urgent": false, "summary": "late w{i} parcel"}}' for i in range(400)]
    monkeypatch.setattr(near_dupes, "MAX_CANDIDATES", 1000)
    with pytest.raises(near_dupes.TooManyCandidates, match="more than 1,000 candidate pairs"):
        similar_pairs(texts, None, 0.8, lsh_min_rows=1)
    # the lint says so and goes on with everything else
    monkeypatch.setattr(near_dupes, "MAX_CANDIDATES", 0)
    report = main(LintConfig(dataset=str(dataset), model=str(tiny_model_dir), lsh_min_rows=1))
    assert report["near_duplicates"] == [] and [x["kind"] for x in report["leakage"]] == ["exact"]
    assert [n.split(":")[0] for n in report["notes"][:2]] == ["near-duplicate completions not searched",
                                                            "near leaks of eval inputs not searched"]
    assert report["exact_duplicates"] == [[9, 10]] and report["invented_values"]["flagged"][0]["value"] == "Kevin Smith"


def test_one_completion_for_many_prompts_is_one_group_not_every_pair(monkeypatch, tmp_path, tiny_model_dir):
    """Label-like answers ("I don't know.", a category) repeat across thousands of prompts: the lint reports each
    as one group and searches near duplicates among distinct completions only, so their pairs (4.5M here) are
    never formed (before, the search gave up past its candidate limit and reported no near duplicates at all)."""
    from data_tools import near_dupes

    labels = ["I don't know.", "billing", "shipping"]
    pairs = [(f"question number {i} about parcel {i * 7}", labels[i % 3]) for i in range(3000)]
    pairs += [("What is in the box?", "A red kettle with a wooden handle and a two litre steel body, boxed."),
              ("And in the other box?", "A red kettle with a wooden handle and a two litre steel body, boxed!")]
    out = tmp_path / "data"
    out.mkdir()
    write_jsonl(out / "sft_train.jsonl", sft_rows(pairs))
    monkeypatch.setattr(near_dupes, "MAX_CANDIDATES", 1000)
    report = main(LintConfig(dataset=str(out), model=str(tiny_model_dir), lsh_min_rows=1))
    assert not [n for n in report["notes"] if "not searched" in n]
    groups = {r["completion"]: r for r in report["repeated_completions"]}
    assert set(groups) == set(labels) and all(g["rows"] == 1000 for g in groups.values())
    assert groups["billing"]["lines"] == list(range(2, 3000, 3))[:20]
    assert [n["lines"] for n in report["near_duplicates"]] == [[3001, 3002]]
    assert report["issue_counts"]["repeated_completions"] == 3
    assert "'billing' in 1000 rows: lines [2, 5, 8" in (out / "lint" / "lint.md").read_text()


def test_one_near_duplicate_module_char_grams_for_short_inputs_word_shingles_for_datasets():
    """Synthesis's incremental check (data_tools.near_dupes.NearDuplicates, character 3-grams) and the lint's
    dataset-wide pairs (word 3-shingles) live in one module; on a short question the two units differ as meant."""
    from data_tools.near_dupes import NearDuplicates, char_shingles, jaccard

    seen = NearDuplicates(0.6)
    seen.add("How do I fix a dripping tap?")
    assert seen.near("how do i fix a dripping tap")  # same words: a repeat, whatever the case and punctuation
    assert seen.near("How do I fix a dripping faucet tap?")  # one word more: character grams still find it
    assert not seen.near("What is the best way to cook rice?")
    # one word changed in a 7-word question: 3 of 7 word 3-shingles shared (0.43); character grams grade finer
    a, b = "How do I fix a dripping tap?", "How do I fix a leaking tap?"
    assert jaccard(char_shingles(a), char_shingles(b)) > jaccard(shingles(a), shingles(b))
