"""Labels as the teacher's privileged hints, several label columns, labels as fallback answers, label match per
field in the evals; and two things a user's first spec runs into: repeated inputs, a check module beside it."""

import json
import logging
import sys
from pathlib import Path

import pytest

from data_tools import build
from data_tools.backends import LocalBackend
from data_tools.inputs import load_inputs
from data_tools.spec import load_spec
from evals.labels import label_matches
from promptbake.core.config import InputError

TRIAGE = """\
name: triage
system_prompt: You triage tickets.
rules:
  - id: json
    text: Answer with one JSON object.
    check: {{kind: json_format}}
inputs:
  path: tickets.jsonl
  label_fields: [category, urgent]
teacher:
  model: {model}
  hint: {hint}
  sampling: {{n: 1, temperature: 1.0, max_new_tokens: 6, seed: 0}}
  batch_size: 8
split: {{eval_fraction: 0.25, seed: 0}}
output_dir: {out}
"""

TICKETS = [{"input": f"ticket {i}: my parcel is late", "category": "shipping", "urgent": i % 2 == 0}
           for i in range(8)]


def write_triage(tmp_path: Path, model, hint='"The correct category is {category}; urgent: {urgent}."',
                 rows=TICKETS) -> Path:
    (tmp_path / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "triage.yaml"
    spec.write_text(TRIAGE.format(model=model, hint=hint, out=tmp_path / "data"))
    return spec


def test_label_fields_make_a_dict_label_and_a_teacher_hint(tmp_path):
    spec = load_spec(write_triage(tmp_path, "smollm2-135m-instruct"))
    inputs = load_inputs(spec)
    assert inputs["ticket 2: my parcel is late"].label == {"category": "shipping", "urgent": True}
    hint = spec.hint_for(inputs["ticket 3: my parcel is late"].label)
    assert hint == "The correct category is shipping; urgent: False."
    teacher = spec.prompted_messages("ticket 3: my parcel is late", hint=hint)
    assert teacher[0]["role"] == "system" and teacher[0]["content"].endswith("\n\n" + hint)
    assert hint not in json.dumps(spec.prompted_messages("ticket 3: my parcel is late"))  # the eval arm's prompt


def test_hint_naming_a_field_the_inputs_lack_fails_at_load(tmp_path):
    with pytest.raises(InputError,
                       match=r"triage.yaml:\d+: field 'teacher': .*hint names \['priority'\], which the inputs lack"):
        load_spec(write_triage(tmp_path, "smollm2-135m-instruct", hint='"Priority {priority}"'))


def test_row_missing_a_label_field_names_file_line_and_field(tmp_path):
    rows = [*TICKETS[:3], {"input": "ticket x", "category": "billing"}]
    spec = load_spec(write_triage(tmp_path, "smollm2-135m-instruct", rows=rows))
    with pytest.raises(InputError, match=r"tickets.jsonl:4: label field 'urgent' is missing"):
        load_inputs(spec)


@pytest.fixture
def seen(monkeypatch) -> list:
    """Every conversation the local teacher is asked, in order (it still answers them)."""
    asked = []
    original = LocalBackend.generate

    def recording(self, conversations, sampling, on_batch=None, skip=()):
        asked.extend(c for i, c in enumerate(conversations) if i not in skip)
        return original(self, conversations, sampling, on_batch=on_batch, skip=skip)

    monkeypatch.setattr(LocalBackend, "generate", recording)
    return asked


def test_the_teacher_sees_the_hint_and_the_rows_never_do(tmp_path, tiny_model_dir, seen):
    spec = load_spec(write_triage(tmp_path, tiny_model_dir))
    with pytest.raises(InputError):  # a random tiny model writes no JSON: every sample fails
        build.main(spec)
    assert len(seen) == 6 and all("The correct category is shipping; urgent:" in c[0]["content"] for c in seen)
    for row in (json.loads(x) for x in (Path(spec.output_dir) / "samples.jsonl").read_text().splitlines()):
        assert "correct category" not in row["input"]


def test_label_that_passes_every_check_becomes_the_answer(tmp_path, tiny_model_dir, capsys, seen):
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"input": f"question {i}", "label": f"answer {i}"}) + "\n"
                                              for i in range(8)))
    (tmp_path / "s.yaml").write_text(f"""\
name: labelled
rules:
  - id: says_answer
    text: Start with "answer".
    check: {{kind: starts_with, prefix: "answer"}}
inputs: {{path: q.jsonl, label_field: label}}
teacher: {{model: {tiny_model_dir}, repair: false, sampling: {{n: 1, temperature: 1.0, max_new_tokens: 4}}}}
output_dir: {tmp_path / 'data'}
""")
    manifest = build.main(load_spec(tmp_path / "s.yaml"))
    c = manifest["counts"]
    assert c["sft_rows_from_labels"] == c["sft_rows"] == c["train_inputs"] == 6 and c["sft_rows_raw"] == 0
    # the teacher failed every input, so each got one more round with its label as a hint (teacher.auto_hint)
    assert c["hinted_inputs"] == 6 and len(seen) == 12
    assert all("reference answer" not in conv[0]["content"] for conv in seen[:6])
    assert all(conv[0]["content"].endswith(f"The reference answer for this message is: "
                                           f"{conv[-1]['content'].replace('question', 'answer')}\nWrite your answer "
                                           "so that it agrees with the reference and follows every rule.")
               for conv in seen[6:])
    rows = [json.loads(x) for x in (tmp_path / "data" / "sft_train.jsonl").read_text().splitlines()]
    assert all(r["completion"][0]["content"] == r["prompt"][0]["content"].replace("question", "answer") for r in rows)
    assert "6 of 6 training rows take the input's own label as the answer" in capsys.readouterr().out
    # switched off, the same build has nothing to train on and says so
    with pytest.raises(InputError, match="no teacher sample passed every check"):
        build.main(load_spec(tmp_path / "s.yaml", ["teacher.label_fallback=false", "teacher.auto_hint=false",
                                                   f"output_dir={tmp_path / 'd2'}"]))


def test_label_match_is_per_field_for_json_answers():
    assert label_matches('{"category": "Shipping", "urgent": true, "summary": "late"}',
                         {"category": "shipping", "urgent": True}) == {"category": True, "urgent": True}
    assert label_matches('{"category": "billing"}', {"category": "shipping", "urgent": False}) == \
        {"category": False, "urgent": False}
    assert label_matches("no json here", {"category": "shipping"}) == {"category": False}
    # a label that is itself a JSON object: key order and spacing do not matter, values do
    call = '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>'
    assert label_matches('<tool_call>{"arguments": {"city": "Oslo"},"name":"get_weather"}</tool_call>', call) == \
        {"name": True, "arguments": True}
    assert label_matches('<tool_call>{"name": "get_weather", "arguments": {"city": "Bergen"}}</tool_call>',
                         call) == {"name": True, "arguments": False}
    assert label_matches("I don't know.", "i don't know") == {"label": True}


def test_repeated_inputs_are_counted_with_their_lines(tmp_path, caplog):
    (tmp_path / "q.txt").write_text("How do I reset it?\nWhere is my order?\nHow do I reset it?\n\n"
                                    "How do I reset it?\nWhere is my order?\nCan I pay later?\n")
    (tmp_path / "s.yaml").write_text("name: faq\nrules: [{id: r, text: Be brief.}]\ninputs: {path: q.txt}\n")
    with caplog.at_level(logging.WARNING, logger="data_tools.inputs"):
        inputs = load_inputs(load_spec(tmp_path / "s.yaml"))
    assert list(inputs) == ["How do I reset it?", "Where is my order?", "Can I pay later?"]
    assert "3 of 6 inputs repeat an earlier one and were dropped (repeats at line 3, 5, 6); 3 distinct inputs " \
           "remain" in caplog.text


def test_an_input_past_max_chars_is_dropped_with_its_line(tmp_path, caplog):
    """A pasted megabyte never reaches the teacher: it is named with its line and dropped."""
    (tmp_path / "q.txt").write_text("How do I reset it?\n" + "x" * 5_000_000 + "\nWhere is my order?\n")
    (tmp_path / "s.yaml").write_text("name: faq\nrules: [{id: r, text: Be brief.}]\ninputs: {path: q.txt}\n")
    with caplog.at_level(logging.WARNING, logger="data_tools.inputs"):
        inputs = load_inputs(load_spec(tmp_path / "s.yaml"))
    assert list(inputs) == ["How do I reset it?", "Where is my order?"]
    assert f"{tmp_path / 'q.txt'}: 1 input(s) longer than inputs.max_chars=4000 were dropped (line 2: 5,000,000 " \
           "characters)" in caplog.text


def test_a_check_module_beside_the_spec_imports_without_pythonpath(tmp_path):
    (tmp_path / "my_spec_checks_7f3a.py").write_text(
        "def polite(input, response):\n    return 'please' in response.lower()\n")
    (tmp_path / "q.txt").write_text("a\nb\n")
    (tmp_path / "s.yaml").write_text("name: polite\nrules:\n  - id: polite\n    text: Say please.\n"
                                     "    check: {kind: python, function: 'my_spec_checks_7f3a:polite'}\n"
                                     "inputs: {path: q.txt}\n")
    path_before = list(sys.path)
    spec = load_spec(tmp_path / "s.yaml")
    assert sys.path == path_before  # the folder was on the path only while the checks loaded
    check = spec.rules[0].check
    assert check.evaluate("a", "Please wait").passed and not check.evaluate("a", "wait").passed
