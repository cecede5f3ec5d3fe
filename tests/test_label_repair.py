"""Label repair: a teacher answer that fails only the label-reading checks gets the label's fields in its JSON and
is kept if it then passes every check; anything else is left alone. Then a build with a teacher that gets one
field wrong keeps those inputs as `label_repaired` rows instead of rejecting them."""

import json
from pathlib import Path

import pytest

from data_tools import build
from data_tools.backends import Completion
from data_tools.label_repair import label_repair
from data_tools.spec import load_spec
from promptbake.core.config import InputError

SPECS = Path(__file__).resolve().parents[1] / "configs" / "specs"
TICKET = "I was charged twice for order #58213. Please fix this."
GOOD = '{"category": "billing", "urgent": true, "summary": "Charged twice for order 58213; wants one charge removed."}'
WRONG = GOOD.replace('"billing"', '"shipping"')

CHECKS = """\
import json


def parse(response):
    text = response.strip().removeprefix("<ticket>").removesuffix("</ticket>")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def has_summary(input, response):
    obj = parse(response)
    return obj is not None and bool(obj.get("summary"))


def right_fields(input, response, label):
    obj = parse(response) or {}
    expected = label if isinstance(label, dict) else {"category": label}
    return all(obj.get(k) == v for k, v in expected.items())


def mentions_label(input, response, label):
    return f'"{label}"' in response or response == label
"""

RULES = """\
  - id: envelope
    text: Answer with <ticket>{...}</ticket>.
    check: {kind: regex, pattern: '^<ticket>\\{.*\\}</ticket>$'}
  - id: summary
    text: Summarise the ticket.
    check: {kind: python, function: "lr_checks_3b7e:has_summary"}
  - id: right
    text: Pick the right category.
    check: {kind: python, function: "lr_checks_3b7e:right_fields"}
"""

SPEC = """\
name: lr
rules:
{rules}
inputs: {{path: tickets.jsonl, {labels}}}
teacher: {{model: smollm2-135m-instruct, sampling: {{n: 2, temperature: 1.0}}}}
split: {{eval_fraction: 0.25, seed: 0}}
output_dir: {out}
"""


def lr_spec(tmp_path: Path, labels: str, rows: list[dict], rules: str = RULES):
    (tmp_path / "lr_checks_3b7e.py").write_text(CHECKS)
    (tmp_path / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.yaml").write_text(SPEC.format(rules=rules.rstrip(), labels=labels, out=tmp_path / "data"))
    return load_spec(tmp_path / "s.yaml")


def test_a_wrong_labelled_field_is_set_and_the_rest_kept():
    spec = load_spec(SPECS / "ticket_triage.yaml")
    assert spec.inputs.label_json_key == "category"
    # the category is replaced in place: key order, the teacher's urgent and summary, its spacing all stay
    assert label_repair(spec.rules, TICKET, WRONG, "billing", "category") == GOOD
    compact = json.dumps(json.loads(WRONG), separators=(",", ":"))
    assert label_repair(spec.rules, TICKET, compact, "billing", "category") == \
        json.dumps(json.loads(GOOD), separators=(",", ":"))
    # a fenced answer (the triage checks tolerate the fence): the fence is kept as written
    assert label_repair(spec.rules, TICKET, f"```json\n{WRONG}\n```", "billing", "category") == f"```json\n{GOOD}\n```"


def test_nothing_to_repair_or_nothing_sound_to_do():
    spec = load_spec(SPECS / "ticket_triage.yaml")
    assert label_repair(spec.rules, TICKET, GOOD, "billing", "category") is None  # already passes
    assert label_repair(spec.rules, TICKET, "Category: shipping. Urgent.", "billing", "category") is None  # no JSON
    # a plain label with no key saying where it goes: which field "billing" belongs to would be a guess
    assert label_repair(spec.rules, TICKET, WRONG, "billing") is None
    assert label_repair(spec.rules, TICKET, WRONG, None, "category") is None


def test_a_failure_that_does_not_read_the_label_blocks_the_repair():
    spec = load_spec(SPECS / "ticket_triage.yaml")
    long = WRONG.replace("wants one charge removed", "the customer would like us to remove one of the two charges soon")
    assert label_repair(spec.rules, TICKET, long, "billing", "category") is None  # short_summary fails too
    # "Billing" fails category_enum (no label read) as well as right_category
    assert label_repair(spec.rules, TICKET, GOOD.replace('"billing"', '"Billing"'), "billing", "category") is None
    assert label_repair(spec.rules, TICKET, "Here it is: " + WRONG, "billing", "category") is None  # json_only fails


def test_a_dict_label_sets_each_field_inside_an_envelope(tmp_path):
    spec = lr_spec(tmp_path, "label_fields: [category, urgent]",
                   [{"input": "my parcel is late", "category": "shipping", "urgent": True}])
    label = {"category": "shipping", "urgent": True}
    wrong = '<ticket>{"category": "billing", "summary": "Parcel late.", "urgent": false}</ticket>'
    assert label_repair(spec.rules, "my parcel is late", wrong, label) == \
        '<ticket>{"category": "shipping", "summary": "Parcel late.", "urgent": true}</ticket>'
    # a missing labelled key is added at the end (the re-check decides whether the answer may have it)
    assert label_repair(spec.rules, "my parcel is late", '<ticket>{"summary": "Parcel late."}</ticket>', label) == \
        '<ticket>{"summary": "Parcel late.", "category": "shipping", "urgent": true}</ticket>'
    # the envelope check fails too: not the label's to fix
    assert label_repair(spec.rules, "my parcel is late", wrong.replace("<ticket>", "<tkt>"), label) is None


def test_a_label_that_is_the_whole_answer_is_no_repair():
    """tool_call's label is the whole reference call: setting its keys leaves nothing of the teacher's, which is
    the label as the answer (label_fallback, counted as such), not a label repair."""
    spec = load_spec(SPECS / "tool_call.yaml")
    label = '<tool_call>{"name": "get_weather", "arguments": {"city": "Lisbon"}}</tool_call>'
    wrong = '<tool_call>{"name": "get_weather", "arguments": {"city": "Porto"}}</tool_call>'
    assert {r.id for r in spec.rules if not r.check.evaluate("Weather in Lisbon?", wrong, label).passed} == \
        {"right_call"}
    assert label_repair(spec.rules, "Weather in Lisbon?", wrong, label) is None


def test_label_json_key_needs_one_label_field(tmp_path):
    with pytest.raises(InputError, match=r"s.yaml:\d+: field 'inputs': .*`label_json_key` says which key"):
        lr_spec(tmp_path, "label_fields: [category, urgent], label_json_key: category", [])


class WrongCategoryTeacher:
    """A scripted teacher: a well-formed ticket with a summary of the input, always category billing."""

    def generate(self, conversations, sampling, on_batch=None, skip=()):
        out = []
        for conv in conversations:
            obj = {"category": "billing", "urgent": False, "summary": conv[-1]["content"]}
            out.append(Completion([f"<ticket>{json.dumps(obj)}</ticket>"] * sampling.n, 10, [20] * sampling.n, 0.0))
        if on_batch:
            on_batch([i for i in range(len(out)) if i not in skip], [c for i, c in enumerate(out) if i not in skip])
        return out


def test_build_keeps_the_inputs_the_teacher_got_one_field_wrong(tmp_path, monkeypatch, capsys):
    rows = [{"input": f"ticket {i}: {'charged twice' if i % 2 else 'parcel late'}",
             "label": "billing" if i % 2 else "shipping"} for i in range(12)]
    spec = lr_spec(tmp_path, "label_field: label, label_json_key: category", rows)
    monkeypatch.setattr(build, "make_backend", lambda spec: WrongCategoryTeacher())
    manifest = build.main(spec)
    c, p = manifest["counts"], manifest["provenance"]
    train = [json.loads(x) for x in (tmp_path / "data" / "train_inputs.jsonl").open()]
    shipping = sum(r["label"] == "shipping" for r in train)
    assert 0 < shipping < len(train)
    assert c["sft_rows"] == len(train) and c["rejects"] == 0
    assert c["sft_rows_label_repaired"] == p["label_repaired"] == shipping
    assert p["teacher"] == c["sft_rows_raw"] == len(train) - shipping and p["label_as_answer"] == 0
    for row in (json.loads(x) for x in (tmp_path / "data" / "sft_train.jsonl").open()):
        text, answer = row["prompt"][0]["content"], row["completion"][0]["content"]
        category = "shipping" if "parcel" in text else "billing"
        assert answer == f'<ticket>{json.dumps({"category": category, "urgent": False, "summary": text})}</ticket>'
    # the teacher's own answer, one field from the kept one, is the rejected side of a preference pair
    pairs = [json.loads(x) for x in (tmp_path / "data" / "prefs_train.jsonl").open()]
    assert len(pairs) == shipping
    assert all(pair["rejected"][0]["content"] == pair["chosen"][0]["content"].replace('"shipping"', '"billing"')
               for pair in pairs)
    assert f"{shipping} of {len(train)} training rows are teacher answers whose label fields were set" in \
        capsys.readouterr().out
    from promptbake.bake_report import provenance_line

    assert f"label repaired {shipping}" in provenance_line(p)
    # switched off: the label is no JSON answer (label_fallback cannot help), so those inputs are rejected
    off = build.main(load_spec(tmp_path / "s.yaml", ["teacher.label_repair=false", f"output_dir={tmp_path / 'd2'}"]))
    assert off["counts"]["rejects"] == shipping and off["counts"]["sft_rows"] == len(train) - shipping
    assert off["provenance"]["label_repaired"] == 0


def test_a_label_repaired_answer_comes_before_the_label_as_answer(tmp_path):
    """Where the bare label would pass every check too, the label-repaired teacher answer is chosen: it keeps the
    teacher's other fields. The label as the answer stays the last resort."""
    mentions = ('  - {id: says, text: Name the category.,\n'
                '     check: {kind: python, function: "lr_checks_3b7e:mentions_label"}}')
    spec = lr_spec(tmp_path, "label_field: label, label_json_key: category", [], rules=mentions)
    picked = build.select(spec, "x", ['{"category": "billing", "summary": "late"}'], "shipping")
    assert picked["label_repaired"] and not picked["from_label"]
    assert picked["chosen"] == '{"category": "shipping", "summary": "late"}' and picked["index"] == 0
    assert build.row_source(spec, picked, None) == "label_repaired"
    # an answer with no field but the labelled one would be the label in disguise: the label itself it is
    picked = build.select(spec, "x", ['{"category": "billing"}'], "shipping")
    assert picked["from_label"] and picked["chosen"] == "shipping"
    assert build.row_source(spec, picked, None) == "label_as_answer"
