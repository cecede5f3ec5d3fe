"""Input synthesis: what is kept (new, of the right length, passing the input checks, close to no given input),
the journal a killed build resumes from, and a build that adds synthesized inputs to the training side only."""

import json
from pathlib import Path

import pytest

from data_tools import build
from data_tools.spec import load_spec
from data_tools.synthesize import JOURNAL, synthesize_inputs
from promptbake.config import InputError

SPEC = """\
name: synth
system_prompt: You help people fix things at home.
rules: [{{id: short, text: Be brief., check: {{kind: max_words, n: 20}}}}]
inputs:
  path: q.txt
  checks: [{{kind: ends_with, suffix: "?"}}]
synthesis: {{min_inputs: {target}, samples_per_request: 2, max_rounds: 2}}
teacher: {{model: {model}, sampling: {{n: 1, temperature: 1.0, max_new_tokens: 6}}}}
split: {{eval_fraction: 0.25, seed: 0}}
output_dir: {out}
"""
GIVEN = ["How do I fix a dripping tap?", "Why does my door squeak?", "How can I unclog a sink?",
         "What glue works on wood?"]


def make_spec(tmp_path: Path, target=8, model="unused"):
    (tmp_path / "q.txt").write_text("\n".join(GIVEN) + "\n")
    (tmp_path / "s.yaml").write_text(SPEC.format(target=target, model=model, out=tmp_path / "data"))
    return load_spec(tmp_path / "s.yaml")


def scripted(batches):
    """A teacher that answers each round with the next list of candidates (the component under test is what
    synthesis keeps of them); records what it was asked."""
    asked = []

    def generate(conversations, sampling):
        asked.append((conversations, sampling))
        texts = batches[len(asked) - 1]
        return [texts[i : i + sampling.n] for i in range(0, len(conversations) * sampling.n, sampling.n)]
    return generate, asked


def test_keeps_only_new_well_formed_inputs_and_journals_them(tmp_path):
    spec = make_spec(tmp_path)
    (tmp_path / "data").mkdir()
    round_1 = ["How do I fix a dripping tap?",                      # a given input
               "How do I fix a dripping tap??",                     # near-duplicate of it
               "How do I paint a radiator?",                        # new: kept
               "User: how do I hang shelves?",                      # a role label, not a message
               "Tell me about grout",                               # fails the input check (no question mark)
               "Why " + "really " * 30 + "?"]                       # far longer than any given input
    round_2 = ["Can I patch a hole in plaster myself?",             # new: kept
               "How do I paint a radiator?",                        # duplicate of a kept one
               "What size drill bit for wall plugs?",               # new: kept
               "Is caulk waterproof?"]                              # new: kept, the fourth
    generate, asked = scripted([round_1, round_2])
    kept = synthesize_inputs(spec, 4, GIVEN[:3], GIVEN, tmp_path / "data", generate)
    assert kept == ["How do I paint a radiator?", "Can I patch a hole in plaster myself?",
                    "What size drill bit for wall plugs?", "Is caulk waterproof?"]
    # round 1 asks for ~1.5x the 4 missing (3 requests of 2 samples), round 2 for ~1.5x the 3 still missing
    assert [len(conversations) for conversations, _ in asked] == [3, 2]
    # every request shows seeds from the training inputs or the examples, never the held-out one (GIVEN[3])
    for conversation in asked[0][0]:
        shown = [m["content"] for m in conversation if m["role"] == "assistant"]
        assert shown and set(shown) <= set(GIVEN[:3]) and conversation[0]["role"] == "system"
    journal = [json.loads(x) for x in (tmp_path / "data" / JOURNAL).read_text().splitlines()]
    assert [r["input"] for r in journal] == kept
    # a resumed build reads the journal and asks for nothing more
    generate_again, asked_again = scripted([])
    assert synthesize_inputs(spec, 4, GIVEN[:3], GIVEN, tmp_path / "data", generate_again) == kept
    assert asked_again == []


def test_synthesis_needs_seeds_and_unlabelled_inputs(tmp_path):
    spec = make_spec(tmp_path)
    with pytest.raises(InputError, match="no inputs and no examples to seed synthesis"):
        synthesize_inputs(spec, 4, [], GIVEN, tmp_path, scripted([])[0])
    (tmp_path / "l.jsonl").write_text(json.dumps({"input": "a", "label": "b"}) + "\n")
    with pytest.raises(InputError, match="synthesis.min_inputs: synthesized inputs would have no labels"):
        load_spec(tmp_path / "s.yaml", ["inputs.path=l.jsonl", "inputs.label_field=label"])


def test_build_adds_synthesized_inputs_to_the_training_side_only(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, target=10, model=tiny_model_dir)
    manifest = build.main(spec)
    c = manifest["counts"]
    synthesized = [json.loads(x)["input"] for x in (tmp_path / "data" / JOURNAL).read_text().splitlines()] \
        if (tmp_path / "data" / JOURNAL).exists() else []
    assert c["synthesized_inputs"] == len(synthesized) <= 6 and c["inputs"] == 4
    assert c["train_inputs"] == 3 + len(synthesized) and c["eval_inputs"] == 1
    held_out = [json.loads(x)["prompt"][0]["content"] for x in (tmp_path / "data" / "eval_inputs.jsonl").open()]
    assert held_out[0] in GIVEN and not set(synthesized) & set(GIVEN)
    assert all(s.endswith("?") for s in synthesized)
