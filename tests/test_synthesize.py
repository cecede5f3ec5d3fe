"""Input synthesis: what is kept (new, of the right length, passing the input checks, close to no given input),
the journal a killed build resumes from, and a build that adds synthesized inputs to the training side only."""

import json
from pathlib import Path

import pytest

from data_tools import build
from data_tools.spec import load_spec
from data_tools.synthesize import JOURNAL, synthesize_inputs
from promptbake.core.config import InputError

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


def unlabelled(texts: list[str]) -> list[tuple[str, None]]:
    return [(t, None) for t in texts]


def make_spec(tmp_path: Path, target=8, model="smollm2-135m-instruct"):
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
    kept = synthesize_inputs(spec, 4, unlabelled(GIVEN[:3]), GIVEN, tmp_path / "data", generate)
    assert kept == unlabelled(["How do I paint a radiator?", "Can I patch a hole in plaster myself?",
                               "What size drill bit for wall plugs?", "Is caulk waterproof?"])
    # round 1 asks for ~1.5x the 4 missing (3 requests of 2 samples), round 2 for ~1.5x the 3 still missing
    assert [len(conversations) for conversations, _ in asked] == [3, 2]
    # every request shows seeds from the training inputs or the examples, never the held-out one (GIVEN[3])
    for conversation in asked[0][0]:
        shown = [m["content"] for m in conversation if m["role"] == "assistant"]
        assert shown and set(shown) <= set(GIVEN[:3]) and conversation[0]["role"] == "system"
    journal = [json.loads(x) for x in (tmp_path / "data" / JOURNAL).read_text().splitlines()]
    assert [(r["input"], None) for r in journal] == kept and not any("label" in r for r in journal)
    # a resumed build reads the journal and asks for nothing more
    generate_again, asked_again = scripted([])
    assert synthesize_inputs(spec, 4, unlabelled(GIVEN[:3]), GIVEN, tmp_path / "data", generate_again) == kept
    assert asked_again == []


def test_synthesis_needs_seeds_and_no_chat_logs(tmp_path):
    spec = make_spec(tmp_path)
    with pytest.raises(InputError, match="no inputs and no examples to seed synthesis"):
        synthesize_inputs(spec, 4, [], GIVEN, tmp_path, scripted([])[0])
    with pytest.raises(InputError, match="synthesis.min_inputs: synthesized inputs would have no logged answers"):
        load_spec(tmp_path / "s.yaml", ["inputs.format=chat_logs", "inputs.checks=[]"])


NEW_QUESTIONS = ["How do I patch a hole in drywall?", "How do I fix a dripping tap?",  # the second: a given one
                 "Why does my fridge hum at night?", "How can I stop a window from rattling?",
                 "What oil keeps a hinge quiet?", "How do I reseal a bathtub?", "How do I oil a squeaky fan?",
                 "How do I level a wobbly table?", "How can I quiet a noisy pipe?"]


class ScriptedTeacher:
    """A teacher (the backends' interface) that writes one new question each time synthesis asks for an input, and
    a short answer to everything else, so that the build's use of what synthesis keeps is what is tested."""

    def __init__(self):
        self.asked_for_inputs = 0

    def generate(self, conversations, sampling, on_batch=None, skip=()):
        from data_tools.backends import Completion
        from data_tools.synthesize import ASK

        out = []
        for i, conversation in enumerate(conversations):
            if conversation[-1]["content"] == ASK:
                texts = []
                for _ in range(sampling.n):
                    texts.append(NEW_QUESTIONS[self.asked_for_inputs % len(NEW_QUESTIONS)])
                    self.asked_for_inputs += 1
            else:
                texts = ["tighten it and test it"] * sampling.n
            out.append(None if i in skip else Completion(texts, 10, [5] * sampling.n, 0.0))
        if on_batch is not None:
            on_batch([i for i in range(len(conversations)) if i not in skip], [c for c in out if c is not None])
        return out


def test_build_adds_synthesized_inputs_to_the_training_side_only(tmp_path, monkeypatch):
    spec = make_spec(tmp_path, target=10)
    monkeypatch.setattr(build, "make_backend", lambda spec: ScriptedTeacher())
    manifest = build.main(spec)
    c = manifest["counts"]
    synthesized = [json.loads(x)["input"] for x in (tmp_path / "data" / JOURNAL).read_text().splitlines()]
    kept = set(synthesized) & set(NEW_QUESTIONS)
    # 10 wanted, 4 given: exactly 6 new ones (the given question the teacher repeated is not one), each once, all
    # on the training side, none a held-out one
    assert c["synthesized_inputs"] == len(kept) == 6 and c["inputs"] == 4
    assert "How do I fix a dripping tap?" not in kept
    assert c["train_inputs"] == 3 + 6 and c["eval_inputs"] == 1 and c["sft_rows"] == 9
    trained = {json.loads(x)["prompt"][0]["content"] for x in (tmp_path / "data" / "sft_train.jsonl").open()}
    held_out = [json.loads(x)["prompt"][0]["content"] for x in (tmp_path / "data" / "eval_inputs.jsonl").open()]
    assert kept <= trained and held_out[0] in GIVEN and held_out[0] not in trained
    assert manifest["provenance"]["synthesized_inputs"] == 6


LABELLED_SPEC = """\
name: lsynth
system_prompt: Answer with the capital city only.
rules:
  - {id: right, text: Name the capital., check: {kind: label_match, mode: normalised}}
  - {id: short, text: One or two words., check: {kind: max_words, n: 2}}
inputs: {path: c.jsonl, label_field: label}
synthesis: {min_inputs: 8, samples_per_request: 2, max_rounds: 1}
teacher: {model: smollm2-135m-instruct, sampling: {n: 2, temperature: 1.0, max_new_tokens: 8}}
split: {eval_fraction: 0.25, seed: 0}
output_dir: data
"""
CAPITALS = [("Capital of France?", "Paris"), ("Capital of Spain?", "Madrid"), ("Capital of Peru?", "Lima"),
            ("Capital of Japan?", "Tokyo")]


def labelled_spec(tmp_path: Path, extra=()):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"input": q, "label": a}) + "\n" for q, a in CAPITALS))
    (tmp_path / "s.yaml").write_text(LABELLED_SPEC)
    return load_spec(tmp_path / "s.yaml", [f"output_dir={tmp_path / 'data'}", *extra])


def test_labelled_synthesis_keeps_an_input_with_its_label_and_shows_labelled_seeds(tmp_path):
    spec = labelled_spec(tmp_path)
    (tmp_path / "data").mkdir()
    candidates = ["Capital of Chile?\nAnswer: Santiago",                       # kept, label "Santiago"
                  "Capital of Kenya?",                                         # no Answer line: not a labelled one
                  "Capital of Peru?\nAnswer: Lima",                            # a given input again
                  "Capital of Norway?\nAnswer: Oslo\nCapital of Chad?",        # the label is the first line only
                  "Capital of Italy?\nAnswer: " + "Rome " * 20,                # label longer than twice any given
                  "Capital of Egypt?\nAnswer:   "]                             # empty label
    generate, asked = scripted([candidates])
    kept = synthesize_inputs(spec, 4, CAPITALS[:3], [q for q, _ in CAPITALS], tmp_path / "data", generate)
    assert kept == [("Capital of Chile?", "Santiago"), ("Capital of Norway?", "Oslo")]
    shown = [m["content"] for m in asked[0][0][0] if m["role"] == "assistant"]
    assert shown and all("\nAnswer: " in s and s.split("\nAnswer: ")[0] in dict(CAPITALS[:3]) for s in shown)
    assert asked[0][1].max_new_tokens > 8  # room for the label line after the message
    journal = [json.loads(x) for x in (tmp_path / "data" / JOURNAL).read_text().splitlines()]
    assert [(r["input"], r["label"]) for r in journal] == kept
    assert synthesize_inputs(spec, 2, CAPITALS[:3], [], tmp_path / "data", scripted([])[0]) == kept  # resumed


def test_labelled_synthesis_with_label_fields_needs_a_json_object_with_exactly_them(tmp_path):
    rows = [{"input": q, "city": a, "ok": True} for q, a in CAPITALS]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.yaml").write_text(LABELLED_SPEC.replace("label_field: label", "label_fields: [city, ok]")
                                     .replace("{kind: label_match, mode: normalised}", "{kind: max_words, n: 3}"))
    spec = load_spec(tmp_path / "s.yaml", [f"output_dir={tmp_path / 'data'}"])
    (tmp_path / "data").mkdir()
    candidates = ['Capital of Chile?\nAnswer: {"city": "Santiago", "ok": true}',      # kept
                  'Capital of Kenya?\nAnswer: {"city": "Nairobi"}',                   # a field missing
                  'Capital of Chad?\nAnswer: {"city": "N\'Djamena", "ok": true, "x": 1}',  # an extra field
                  "Capital of Oman?\nAnswer: Muscat"]                                 # not JSON
    seeds = [(q, {"city": a, "ok": True}) for q, a in CAPITALS[:3]]
    kept = synthesize_inputs(spec, 4, seeds, [], tmp_path / "data", scripted([candidates])[0])
    assert kept == [("Capital of Chile?", {"city": "Santiago", "ok": True})]


class TeacherThatKnowsSome:
    """A scripted teacher (the component under test is what the build keeps): it writes labelled inputs when
    asked to synthesize, and answers the two capitals it knows, Berlin otherwise: it fails every given input,
    so those get a hinted round (teacher.auto_hint) and then their labels as answers (teacher.label_fallback)."""

    KNOWS = {"Capital of Chile?": "Santiago", "Capital of Ghana?": "Accra"}
    WRITES = ["Capital of Chile?\nAnswer: Santiago",     # the teacher's answer agrees: a training row
              "Capital of Ghana?\nAnswer: Kumasi",       # it answers Accra: the label is unconfirmed, dropped
              "Capital of Fiji?\nAnswer: Suva",          # it answers Berlin: unconfirmed, dropped
              "Capital of Laos?\nAnswer: Vientiane"]     # likewise

    def __init__(self):
        self.hinted = []

    def generate(self, conversations, sampling, on_batch=None, skip=()):
        from data_tools.backends import Completion

        out = []
        for conv in conversations:
            if conv[0]["content"].startswith("You write realistic messages"):
                texts = self.WRITES[len(out) * sampling.n:(len(out) + 1) * sampling.n]
            else:
                question = conv[-1]["content"]
                if "reference answer" in conv[0]["content"]:
                    self.hinted.append(question)
                texts = [self.KNOWS.get(question, "Berlin")] * sampling.n
            out.append(Completion(texts, 10, [2] * sampling.n, 0.0))
        if on_batch:
            on_batch(list(range(len(out))), out)
        return out


def test_build_trains_only_on_synthesized_inputs_whose_label_the_teacher_confirms(tmp_path, monkeypatch):
    spec = labelled_spec(tmp_path, ["synthesis.samples_per_request=1"])
    teacher = TeacherThatKnowsSome()
    monkeypatch.setattr(build, "make_backend", lambda spec: teacher)
    c = build.main(spec)["counts"]
    assert c["synthesized_inputs"] == 4 and c["synthesized_unconfirmed"] == 3
    rows = {json.loads(x)["prompt"][0]["content"]: json.loads(x)["completion"][0]["content"]
            for x in (tmp_path / "data" / "sft_train.jsonl").open()}
    given_train = set(rows) - {"Capital of Chile?"}
    assert rows["Capital of Chile?"] == "Santiago" and len(given_train) == 3
    assert all(rows[q] == dict(CAPITALS)[q] for q in given_train)  # given inputs: hinted, then their labels
    # an unconfirmed label never becomes an answer (no label fallback), a hint, a reject or a training input
    assert not {"Capital of Ghana?", "Capital of Fiji?", "Capital of Laos?"} & set(rows)
    assert c["sft_rows_from_labels"] == 3 and c["rejects"] == 0 and set(teacher.hinted) == given_train
    train_inputs = [json.loads(x)["prompt"][0]["content"] for x in (tmp_path / "data" / "train_inputs.jsonl").open()]
    assert c["train_inputs"] == len(train_inputs) == 4 and "Capital of Ghana?" not in train_inputs
