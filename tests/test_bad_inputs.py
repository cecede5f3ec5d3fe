"""The bad-input suite: each malformed spec, input file, recipe, dataset, config or argument ends the command
with exit code 2 and the exact message a user sees (file, line, field) — never a traceback.

Cases run in-process through `promptbake.cli.main`, exactly the code path of the `promptbake` command.
"""

import argparse
import json

import pytest

from promptbake.cli import main as cli
from promptbake.cli import make_parser

GOOD_SPEC = """\
name: t
rules:
  - id: lower
    text: Write in lowercase.
    check: {kind: lowercase}
inputs:
  path: inputs.jsonl
teacher: {model: TINY}
output_dir: OUT
"""
ROW = json.dumps({"prompt": [{"role": "user", "content": "hi"}],
                  "completion": [{"role": "assistant", "content": "ok"}]})


def spec(old: str = "", new: str = "") -> str:
    return GOOD_SPEC.replace(old, new) if old else GOOD_SPEC


# (case id, files to write {name: text or bytes}, command line, exact message expected on stderr)
CASES = [
    ("vllm lora without a name", {}, ["data", "serve-vllm", "TINY", "--lora", "runs/x/adapter"],
     "--lora 'runs/x/adapter': expected NAME=ADAPTER_DIR, e.g. tuned=runs/demo/sft/adapter"),
    ("spec missing", {}, ["data", "build", "{tmp}/nope.yaml"], "{tmp}/nope.yaml: file not found"),
    ("spec invalid yaml", {"s.yaml": "name: [unclosed\n"}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/s.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"),
    ("spec empty", {"s.yaml": ""}, ["data", "build", "{tmp}/s.yaml"], "{tmp}/s.yaml: file is empty"),
    ("spec not a mapping", {"s.yaml": "- a\n"}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/s.yaml: expected a mapping of fields at the top level, got list"),
    ("spec non-utf8", {"s.yaml": b"name: caf\xe9\n"}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/s.yaml: not valid UTF-8 (invalid continuation byte at byte 9)"),
    ("spec unknown key", {"s.yaml": spec("name: t", "name: t\nnmae: x")}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/s.yaml:2: field 'nmae': unknown field"),
    ("spec wrong type", {"s.yaml": spec("  - id: lower\n    text: Write in lowercase.\n    check: {kind: lowercase}",
                                        "  lower")}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/s.yaml:2: field 'rules': Input should be a valid list"),
    ("unknown check kind", {"s.yaml": spec("kind: lowercase", "kind: lowercaps")}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/s.yaml:5: field 'rules.0.check': Input tag 'lowercaps' found using 'kind' does not match"),
    ("check bad parameter", {"s.yaml": spec("kind: lowercase", "kind: max_words, n: zero")},
     ["data", "build", "{tmp}/s.yaml"], "{tmp}/s.yaml:5: field 'rules.0.check.max_words.n': Input should be a valid "
                                        "integer"),
    ("check bad regex", {"s.yaml": spec("kind: lowercase", "kind: regex, pattern: '(a'")},
     ["data", "build", "{tmp}/s.yaml"], "field 'rules.0.check.regex.pattern': Value error, not a valid regular "
                                        "expression: missing ), unterminated subpattern at position 0"),
    ("duplicate rule ids", {"s.yaml": spec("    check: {kind: lowercase}\n",
                                           "    check: {kind: lowercase}\n  - {id: lower, text: again}\n")},
     ["data", "build", "{tmp}/s.yaml"], "rule ids must be unique; repeated: ['lower']"),
    ("template slot without values",
     {"s.yaml": spec("  path: inputs.jsonl", "  template: 'say {x}'\n  slots: {x: []}")},
     ["data", "build", "{tmp}/s.yaml"], "field 'inputs': Value error, template slot {x} has no values in `slots.x`"),
    ("two input sources", {"s.yaml": spec("  path: inputs.jsonl", "  path: inputs.jsonl\n  template: 'a {x}'\n"
                                          "  slots: {x: [1]}")},
     ["data", "build", "{tmp}/s.yaml"], "field 'inputs': Value error, give exactly one of `path` or `template`"),
    ("greedy with n > 1", {"s.yaml": spec("teacher: {model: TINY}", "teacher: {model: TINY, sampling: {n: 3}}")},
     ["data", "build", "{tmp}/s.yaml"], "greedy decoding (temperature 0) gives the same answer n times"),
    ("python check not importable", {"s.yaml": spec("kind: lowercase", "kind: python, function: 'nowhere.mod:fn'")},
     ["data", "build", "{tmp}/s.yaml"], "function 'nowhere.mod:fn': cannot import module 'nowhere.mod'"),
    ("override without =", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "teacher.sampling.n"],
     "override 'teacher.sampling.n': expected key=value"),
    ("shard out of range", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "shard=3/2"],
     "override 'shard=3/2': field 'shard': shard 3 of 2 does not exist: i runs from 1 to N"),
    ("merge shard missing", {}, ["data", "merge", "{tmp}/merged", "{tmp}/nope"], "{tmp}/nope: no such directory"),
    ("merge an unsharded build", {"manifest.json": "{}"}, ["data", "merge", "{tmp}/merged", "{tmp}"],
     "{tmp}: an unsharded build (its manifest has no `shard`), not a shard to merge"),
    ("input file missing", {"s.yaml": spec("inputs.jsonl", "gone.jsonl")}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/s.yaml: field 'inputs.path': file not found: {tmp}/gone.jsonl"),
    ("input file empty", {"s.yaml": spec(), "inputs.jsonl": ""}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/inputs.jsonl: no inputs (the file is empty)"),
    ("jsonl line not json", {"s.yaml": spec(), "inputs.jsonl": '{"input": "a"}\n{"input": "b"\n'},
     ["data", "build", "{tmp}/s.yaml"], "{tmp}/inputs.jsonl:2: not valid JSON (Expecting ',' delimiter at column 14)"),
    ("jsonl line not an object", {"s.yaml": spec(), "inputs.jsonl": '["a"]\n'}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/inputs.jsonl:1: expected a JSON object, got list"),
    ("jsonl missing field", {"s.yaml": spec(), "inputs.jsonl": '{"input": "a"}\n{"text": "b"}\n'},
     ["data", "build", "{tmp}/s.yaml"], "{tmp}/inputs.jsonl:2: field 'input' is missing or not a non-empty string"),
    ("input non-utf8", {"s.yaml": spec(), "inputs.jsonl": b'{"input": "caf\xe9"}\n'}, ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/inputs.jsonl: not valid UTF-8 (invalid continuation byte at byte 14)"),
    ("csv missing column", {"s.yaml": spec("inputs.jsonl", "inputs.csv"), "inputs.csv": "text\nhello\n"},
     ["data", "build", "{tmp}/s.yaml"], "{tmp}/inputs.csv:1: no column 'input' in the header ['text']"),
    ("csv row missing value", {"s.yaml": spec("inputs.jsonl", "inputs.csv"), "inputs.csv": "input,id\nhello,1\n,2\n"},
     ["data", "build", "{tmp}/s.yaml"], "{tmp}/inputs.csv:3: field 'input' is missing or not a non-empty string"),
    ("chat log malformed", {"s.yaml": spec("  path: inputs.jsonl", "  path: logs.jsonl\n  format: chat_logs"),
                            "logs.jsonl": '{"messages": [{"role": "user", "content": "q"}]}\n'},
     ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/logs.jsonl:1: a log must end with a user turn and the assistant's answer"),
    ("recipe unknown key", {"r.yaml": "dataset: d.jsonl\nlora: {rank: 8}\n"}, ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/r.yaml:2: field 'lora.rank': unknown field"),
    ("recipe wrong value", {"r.yaml": "dataset: d.jsonl\n"},
     ["train", "sft", "{tmp}/r.yaml", "training.learning_rate=fast"],
     "{tmp}/r.yaml: field 'training.learning_rate': Input should be a valid number"),
    ("recipe misspelled TRL field", {"r.yaml": "dataset: d.jsonl\ntraining:\n  num_train_epoch: 1\n"},
     ["train", "sft", "{tmp}/r.yaml"], "{tmp}/r.yaml:3: field 'training.num_train_epoch': not a field of TRL's "
                                       "SFTConfig (did you mean 'num_train_epochs'?)"),
    ("recipe TRL field promptbake sets", {"r.yaml": "dataset: d.jsonl\ntraining: {beta: 0.2}\n"},
     ["train", "dpo", "{tmp}/r.yaml"], "{tmp}/r.yaml:2: field 'training.beta': promptbake sets it: use the recipe's "
                                       "`beta`"),
    ("recipe bad method", {"r.yaml": "dataset: d.jsonl\nmethod: lorra\n"}, ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/r.yaml:2: field 'method': Input should be 'lora', 'qlora', 'dora' or 'full'"),
    ("dataset missing", {"r.yaml": "dataset: {tmp}/none.jsonl\n"}, ["train", "sft", "{tmp}/r.yaml"],
     "dataset '{tmp}/none.jsonl': file not found (expected sft_train.jsonl from `promptbake data build`)"),
    ("dataset empty", {"r.yaml": "dataset: {tmp}/d.jsonl\n", "d.jsonl": ""}, ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/d.jsonl: no rows (the file is empty)"),
    ("dataset wrong columns", {"r.yaml": "dataset: {tmp}/d.jsonl\n", "d.jsonl": '{"text": "hello"}\n'},
     ["train", "sft", "{tmp}/r.yaml"], "{tmp}/d.jsonl:1: field 'prompt' must be a non-empty list of messages"),
    ("dataset plain strings",
     {"r.yaml": "dataset: {tmp}/d.jsonl\n", "d.jsonl": ROW + '\n{"prompt": "hi", "completion": "ok"}\n'},
     ["train", "sft", "{tmp}/r.yaml"], "{tmp}/d.jsonl:2: field 'prompt' must be a non-empty list of messages"),
    ("max_length too small", {"r.yaml": "model: TINY\ndataset: {tmp}/d.jsonl\nreport_to: none\noutput_dir: OUT\n"
                                        "training: {max_length: 8}\n", "d.jsonl": ROW + "\n" + ROW + "\n"},
     ["train", "sft", "{tmp}/r.yaml"], "training.max_length=8 leaves no response token in any of the 2 rows"),
    ("model missing",
     {"r.yaml": "model: ./no/such/model\ndataset: {tmp}/d.jsonl\nreport_to: none\n", "d.jsonl": ROW + "\n"},
     ["train", "sft", "{tmp}/r.yaml"], "{tmp}/r.yaml:1: field 'model': './no/such/model': no such directory or file"),
    ("chat template missing", {"r.yaml": "model: NOTEMPLATE\ndataset: {tmp}/d.jsonl\nreport_to: none\n",
                               "d.jsonl": ROW + "\n"},
     ["train", "sft", "{tmp}/r.yaml"], "its tokenizer has no chat template; promptbake needs one"),
    ("packing not a boolean", {"r.yaml": "dataset: d.jsonl\npacking: sometimes\n"}, ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/r.yaml:2: field 'packing': Input should be a valid boolean"),
    ("eval tuned arm without model", {"s.yaml": spec(), "inputs.jsonl": '{"input": "a"}\n',
                                      "e.yaml": "spec: {tmp}/s.yaml\neval_inputs: {tmp}/inputs.jsonl\n"
                                                "arms: [tuned_unprompted]\n"},
     ["eval", "{tmp}/e.yaml"], "{tmp}/e.yaml: field '(top level)': Value error, field 'tuned_model' is required by "
                               "the arms ['tuned_unprompted']"),
    ("eval unknown arm", {"e.yaml": "spec: s.yaml\neval_inputs: i.jsonl\narms: [tuned_prompted, base_promptd]\n"},
     ["eval", "{tmp}/e.yaml"], "{tmp}/e.yaml:3: field 'arms.1': Input should be 'base_prompted'"),
    ("eval inputs wrong rows", {"s.yaml": spec(), "inputs.jsonl": '{"input": "a"}\n',
                                "e.yaml": "spec: {tmp}/s.yaml\neval_inputs: {tmp}/inputs.jsonl\n"
                                          "arms: [base_prompted]\n"},
     ["eval", "{tmp}/e.yaml"],
     "{tmp}/inputs.jsonl:1: field 'prompt' must be a list of messages ending with a user turn"),
    ("export without adapter", {}, ["export", "{tmp}"], "{tmp}: no LoRA adapter found"),
    ("lint dataset missing", {}, ["data", "lint", "{tmp}/nope"],
     "{tmp}/nope: dataset not found (give a build output directory or an sft_train.jsonl)"),
    ("lint override wrong value", {}, ["data", "lint", "{tmp}", "max_length=long"],
     "promptbake data lint: field 'max_length': Input should be a valid integer"),
    ("distill unknown key", {"r.yaml": "spec: s.yaml\ndataset: d.jsonl\nkl_weight: 2\n"},
     ["train", "distill", "{tmp}/r.yaml"], "{tmp}/r.yaml:3: field 'kl_weight': unknown field"),
    ("dpo dataset missing", {"r.yaml": "dataset: {tmp}/none.jsonl\n"}, ["train", "dpo", "{tmp}/r.yaml"],
     "dataset '{tmp}/none.jsonl': file not found (expected prefs_train.jsonl from `promptbake data build`)"),
    ("reward dataset empty", {"r.yaml": "dataset: {tmp}/d.jsonl\n", "d.jsonl": ""}, ["train", "reward", "{tmp}/r.yaml"],
     "{tmp}/d.jsonl: no rows (the file is empty)"),
    ("rl recipe without spec", {"r.yaml": "dataset: d.jsonl\n"}, ["train", "rl", "{tmp}/r.yaml"],
     "{tmp}/r.yaml: field 'spec': required field is missing"),
    ("bake spec missing", {}, ["bake", "{tmp}/nope.yaml"], "{tmp}/nope.yaml: file not found"),
    ("demo override wrong value", {}, ["demo", "--out", "{tmp}/demo", "spec.inputs.limit=many"],
     "field 'inputs.limit': Input should be a valid integer"),  # the shipped spec's line is not pinned here
]


@pytest.fixture
def no_template_model(tiny_model_dir, tmp_path_factory):
    import shutil

    copy = tmp_path_factory.mktemp("no-template") / "model"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("name, files, argv, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_the_exact_message(name, files, argv, message, tmp_path, tiny_model_dir,
                                                  no_template_model, capsys, monkeypatch, reliability_log):
    monkeypatch.chdir(tmp_path)

    def fill(text):
        return (text.replace("{tmp}", str(tmp_path)).replace("NOTEMPLATE", str(no_template_model))
                .replace("TINY", str(tiny_model_dir)).replace("OUT", str(tmp_path / "out")))

    for filename, content in files.items():
        target = tmp_path / filename
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(fill(content))
    with pytest.raises(SystemExit) as exit_info:
        cli([fill(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert fill(message) in err
    assert "Traceback" not in err
    reliability_log("bad_inputs", 1)


def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command an argparse tree runs, as the words that select it: ("train", "sft"), ("eval",), ..."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    if sub is None:
        return [words]
    return [c for name, p in sub.choices.items() for c in commands(p, (*words, name))]


def test_every_command_has_a_bad_input_case():
    """A command added to `promptbake` (a new trainer, a new stage) fails here until a malformed input of its
    own is shown to end with exit code 2 and a message."""
    found = commands(make_parser())
    assert ("train", "sft") in found and ("eval",) in found  # the walk reaches nested and top-level commands
    missing = [" ".join(c) for c in found if not any(tuple(argv[:len(c)]) == c for _, _, argv, _ in CASES)]
    assert not missing, f"commands without a bad-input case: {missing}"
