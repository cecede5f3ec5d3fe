"""Configs and specs: bad input fails at once with the file, line and field; every shipped config loads."""

import json
import re
from pathlib import Path

import pytest

from data_tools.inputs import load_inputs, split_inputs
from data_tools.spec import load_spec
from evals.run import EvalConfig
from promptbake.core.config import InputError, apply_overrides, load_config
from sft.train import SFTRecipe

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: t
rules:
  - id: lower
    text: Write in lowercase.
    check: {kind: lowercase}
inputs:
  path: inputs.jsonl
"""


def write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def inputs_file(tmp_path):
    (tmp_path / "inputs.jsonl").write_text('{"input": "a"}\n{"input": "b"}\n{"input": "c"}\n')


@pytest.mark.parametrize("text, message", [
    (GOOD.replace("name: t", "name: t\nnmae: x"), r"spec.yaml:2: field 'nmae': unknown field"),
    (GOOD.replace("{kind: lowercase}", "{kind: lowercse}"),
     r"spec.yaml:5: field 'rules.0.check': Input tag 'lowercse'"),
    (GOOD.replace("{kind: lowercase}", "{kind: max_words, n: -1}"),
     r"spec.yaml:5: field 'rules.0.check.max_words.n': Input should be greater than 0"),
    (GOOD.replace("  - id: lower\n", "  - id: lower\n    text: [1\n"), r"spec.yaml:\d+: invalid YAML"),
    (GOOD.replace("  path: inputs.jsonl", "  template: 'say {x}'\n  slots: {x: []}"),
     r"field 'inputs': Value error, template slot \{x\} has no values"),
    (GOOD.replace("  path: inputs.jsonl", "  path: nowhere.jsonl"), r"field 'inputs.path': file not found"),
    (GOOD.replace("name: t\n", ""), r"field 'name': required field is missing"),
    ("", r"spec.yaml: file is empty"),
    ("- a\n- b\n", r"expected a mapping"),
])
def test_bad_spec_names_file_line_and_field(tmp_path, inputs_file, text, message):
    with pytest.raises(InputError, match=message):
        load_spec(write(tmp_path, text))


def test_missing_spec_file(tmp_path):
    with pytest.raises(InputError, match=r"nope.yaml: file not found"):
        load_spec(tmp_path / "nope.yaml")


def test_non_utf8_spec(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(InputError, match="not valid UTF-8"):
        load_spec(path)


@pytest.mark.parametrize("content, message", [
    ("", r"inputs.jsonl: no inputs"),
    ('{"input": "a"}\nnot json\n', r"inputs.jsonl:2: not valid JSON"),
    ('{"input": "a"}\n{"text": "b"}\n', r"inputs.jsonl:2: field 'input' is missing"),
])
def test_bad_input_files_name_the_line(tmp_path, content, message):
    (tmp_path / "inputs.jsonl").write_text(content)
    spec = load_spec(write(tmp_path, GOOD))
    with pytest.raises(InputError, match=message):
        load_inputs(spec)


def test_csv_and_text_inputs(tmp_path):
    (tmp_path / "inputs.csv").write_text("id,input\n1,first\n2,\n")
    spec = load_spec(write(tmp_path, GOOD.replace("inputs.jsonl", "inputs.csv")))
    with pytest.raises(InputError, match=r"inputs.csv:3: field 'input' is missing or not a non-empty string"):
        load_inputs(spec)
    (tmp_path / "inputs.txt").write_text("one\n\ntwo\none\n")
    spec = load_spec(write(tmp_path, GOOD.replace("inputs.jsonl", "inputs.txt")))
    assert list(load_inputs(spec)) == ["one", "two"]  # blank lines skipped, duplicates dropped


def test_labels_come_from_the_named_column(tmp_path):
    (tmp_path / "inputs.csv").write_text("input,answer\nwhat is 2+2?,4\nwhat is 3+3?,6\n")
    text = GOOD.replace("inputs.jsonl", "inputs.csv") + "  label_field: answer\n"
    inputs = load_inputs(load_spec(write(tmp_path, text)))
    assert {t: item.label for t, item in inputs.items()} == {"what is 2+2?": "4", "what is 3+3?": "6"}
    (tmp_path / "inputs.jsonl").write_text('{"input": "a", "answer": "x"}\n{"input": "b"}\n')
    with pytest.raises(InputError, match=r"inputs.jsonl:2: label field 'answer' is missing"):
        load_inputs(load_spec(write(tmp_path, GOOD + "  label_field: answer\n")))


def test_template_expands_every_combination(tmp_path):
    text = GOOD.replace("  path: inputs.jsonl", "  template: '{a} and {b}'\n  slots: {a: [x, y], b: [1, 2, 3]}")
    assert len(load_inputs(load_spec(write(tmp_path, text)))) == 6


def test_split_is_seeded_and_disjoint():
    texts = [f"input {i}" for i in range(50)]
    train, held = split_inputs(texts, 0.2, seed=1)
    assert len(held) == 10 and not set(train) & set(held) and set(train) | set(held) == set(texts)
    assert split_inputs(list(reversed(texts)), 0.2, seed=1) == (train, held)  # order of the source is irrelevant
    assert split_inputs(texts, 0.2, seed=2) != (train, held)


def test_overrides():
    data = {"training": {"num_train_epochs": 3}, "arms": ["a", "b"]}
    apply_overrides(data, ["training.num_train_epochs=1", "lora.r=8", "arms.1=c", "report_to=none"])
    assert data == {"training": {"num_train_epochs": 1}, "arms": ["a", "c"], "lora": {"r": 8},
                    "report_to": "none"}
    with pytest.raises(InputError, match="expected key=value"):
        apply_overrides(data, ["training.num_train_epochs"])


def test_override_with_wrong_type_names_the_field(tmp_path):
    path = write(tmp_path, "dataset: x.jsonl\ntraining:\n  learning_rate: 1.0e-4\n", "recipe.yaml")
    with pytest.raises(InputError, match=r"field 'training.learning_rate': Input should be a valid number"):
        load_config(SFTRecipe, path, ["training.learning_rate=fast"])


def test_every_shipped_config_validates(as_after_the_demo):
    specs = sorted((REPO / "configs" / "specs").glob("*.yaml"))
    recipes = sorted((REPO / "configs" / "sft").glob("*.yaml"))
    evals = sorted((REPO / "configs" / "evals").glob("*.yaml"))
    assert specs and recipes and evals
    for path in specs:
        spec = load_spec(path)
        assert load_inputs(spec)
        assert path.read_text().startswith("#"), f"{path} must start with a comment saying what it is for"
    for path in recipes:
        load_config(SFTRecipe, path)
        assert path.read_text().startswith("#")
    for path in evals:
        as_after_the_demo(path)  # the shipped eval names the adapter the demo trains (runs/demo/sft/adapter)
        load_config(EvalConfig, path)
        assert path.read_text().startswith("#")


def test_every_accelerate_config_is_valid_for_accelerate():
    from accelerate.commands.config.config_args import ClusterConfig

    paths = sorted((REPO / "configs" / "accelerate").glob("*.yaml"))
    names = {p.stem for p in paths}
    assert {"cpu_single", "cpu_ddp", "gpu_ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3",
            "multi_node_ddp"} <= names
    for path in paths:
        text = path.read_text()
        assert text.startswith("#") and "accelerate launch --config_file" in text, path
        config = ClusterConfig.from_yaml_file(str(path))  # accelerate's own loader refuses unknown keys
        assert config.num_processes >= 1
        # the command its comment shows must name a recipe (and overrides) that validate
        for recipe, overrides in re.findall(r"-m sft\.train (configs/\S+\.yaml)((?: [\w.]+=\S+)*)", text):
            load_config(SFTRecipe, REPO / recipe, overrides.split())


def test_chat_logs_keep_the_user_turn_and_logged_answer(tmp_path):
    logs = [
        {"messages": [{"role": "system", "content": "PROMPT v2"}, {"role": "user", "content": "hello"},
                      {"role": "assistant", "content": "hi there"}]},
        {"messages": [{"role": "system", "content": "PROMPT v1"}, {"role": "user", "content": "old"},
                      {"role": "assistant", "content": "stale"}]},
    ]
    (tmp_path / "logs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in logs))
    source = "  path: logs.jsonl\n  format: chat_logs\n  system_prompts: [PROMPT v2]"
    text = GOOD.replace("  path: inputs.jsonl", source)
    inputs = load_inputs(load_spec(write(tmp_path, text + "teacher: {backend: logs}\n")))
    assert list(inputs) == ["hello"] and inputs["hello"].logged == "hi there"  # v1 log skipped
    (tmp_path / "logs.jsonl").write_text('{"messages": [{"role": "user", "content": "q"}]}\n')
    with pytest.raises(InputError, match=r"logs.jsonl:1: a log must end with a user turn and the assistant"):
        load_inputs(load_spec(write(tmp_path, text)))


def test_backend_needs_its_answers(tmp_path, inputs_file):
    with pytest.raises(InputError, match="teacher.backend 'labels' needs `inputs.label_field`"):
        load_spec(write(tmp_path, GOOD + "teacher: {backend: labels}\n"))


def test_missing_field_variants_are_seeded(tmp_path):
    text = GOOD.replace("  path: inputs.jsonl", "  template: 'order {item} for {name}'\n"
                        "  slots: {item: [tea, rice, soap, milk, salt, corn], name: [Ana, Bo, Cy]}\n"
                        "  missing: {name: {fraction: 0.5, text: 'a customer'}}")
    spec = load_spec(write(tmp_path, text))
    inputs = list(load_inputs(spec))
    absent = [t for t in inputs if t.endswith("for a customer")]
    assert 0 < len(absent) < 18 and list(load_inputs(spec)) == inputs
    assert len(inputs) == len(set(inputs))


def test_saved_datasets_directory_as_input(tmp_path):
    from datasets import Dataset

    Dataset.from_list([{"input": "alpha"}, {"input": "beta"}]).save_to_disk(str(tmp_path / "ds"))
    spec = load_spec(write(tmp_path, GOOD.replace("inputs.jsonl", "ds")))
    assert list(load_inputs(spec)) == ["alpha", "beta"]
