"""The bad-input suite: each malformed spec, input file, recipe, dataset, config or argument ends the command
with exit code 2 and the exact message a user sees (file, line, field) — never a traceback — and before torch
or any other heavy library is imported, so in well under 2 s.

Each case runs as its own process (tests/cli_probe.py: `promptbake.cli.main`, exactly the code path of the
`promptbake` command), timed from start to exit.
"""

import argparse
import json

import pytest
from refusal import assert_quick_refusal, run_refused

from promptbake.cli import make_parser

LATE = {"TRL refuses a value": "only TRL's config class can say (here a rule across two fields), and importing it "
                               "imports torch (seconds)"}
"""Refusals that come after torch is imported, and why: held to exit 2, the message and no traceback, and timed
apart from the others in the reliability report."""

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


INPUTS = '{"input": "a"}\n{"input": "b"}\n'
EVAL = """\
spec: {tmp}/s.yaml
eval_inputs: {tmp}/ev.jsonl
base_model: TINY
arms: [base_prompted]
report_to: none
output_dir: OUT
"""
EVAL_FILES = {"s.yaml": GOOD_SPEC, "inputs.jsonl": INPUTS,
              "ev.jsonl": json.dumps({"prompt": [{"role": "user", "content": "a"}]}) + "\n"}


# (case id, files to write {name: text or bytes}, command line, exact message expected on stderr)
CASES = [
    ("vllm lora without a name", {}, ["data", "serve-vllm", "TINY", "--lora", "runs/x/adapter"],
     "--lora 'runs/x/adapter': expected NAME=ADAPTER_DIR, e.g. tuned=runs/demo/sft/adapter"),
    ("spec missing", {}, ["data", "build", "{tmp}/nope.yaml"], "{tmp}/nope.yaml: file not found"),
    ("spec teacher model missing", {"s.yaml": spec("teacher: {model: TINY}", "teacher: {model: ./no/teacher}"),
                                    "inputs.jsonl": INPUTS},
     ["data", "build", "{tmp}/s.yaml"], "{tmp}/s.yaml:8: field 'teacher.model': './no/teacher': no such directory "
                                       "or file"),
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
    # the command line itself
    ("unknown command", {}, ["nosuch"], "argument command: invalid choice: 'nosuch'"),
    ("train without a method", {}, ["train"], "the following arguments are required: train_command"),
    # data build: where it writes, the teacher, the overrides
    ("build output is a file", {"s.yaml": spec(), "inputs.jsonl": INPUTS, "afile": "x"},
     ["data", "build", "{tmp}/s.yaml", "output_dir={tmp}/afile"],
     "{tmp}/afile: exists and is a file, not a dataset build directory promptbake wrote"),
    ("build output under a file", {"s.yaml": spec(), "inputs.jsonl": INPUTS, "afile": "x"},
     ["data", "build", "{tmp}/s.yaml", "output_dir={tmp}/afile/sub"],
     "{tmp}/afile/sub: cannot be made: {tmp}/afile is a file, not a directory"),
    ("negative temperature", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "teacher.sampling.temperature=-1"],
     "{tmp}/s.yaml:8: field 'teacher.sampling.temperature': Input should be greater than or equal to 0"),
    ("unknown spec override", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "nosuch=1"],
     "{tmp}/s.yaml: field 'nosuch': unknown field"),
    ("shard not i/N", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "shard=abc"],
     "override 'shard=abc': field 'shard': expected i/N, two whole numbers"),
    ("unknown teacher backend", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "teacher.backend=nope"],
     "{tmp}/s.yaml:8: field 'teacher.backend': Input should be 'local', 'openai', 'vllm', 'labels' or 'logs'"),
    ("inputs limit zero", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "inputs.limit=0"],
     "{tmp}/s.yaml:6: field 'inputs.limit': Input should be greater than 0"),
    ("eval fraction past 1", {"s.yaml": spec()}, ["data", "build", "{tmp}/s.yaml", "split.eval_fraction=1.5"],
     "{tmp}/s.yaml: field 'split.eval_fraction': Input should be less than 1"),
    ("every input past max_chars", {"s.yaml": spec(), "inputs.jsonl": json.dumps({"input": "x" * 5_000_000}) + "\n"},
     ["data", "build", "{tmp}/s.yaml"],
     "{tmp}/inputs.jsonl: no inputs left: every one is longer than inputs.max_chars=4000"),
    # data merge, lint, serve-vllm
    ("merge without shards", {}, ["data", "merge", "{tmp}/merged"], "the following arguments are required: dirs"),
    ("lint spec missing", {"sft_train.jsonl": ROW + "\n"}, ["data", "lint", "{tmp}", "spec={tmp}/nope.yaml"],
     "{tmp}/nope.yaml: file not found"),
    ("lint unknown option", {}, ["data", "lint", "{tmp}", "nosuch=1"],
     "promptbake data lint: field 'nosuch': unknown field"),
    ("lint model missing", {}, ["data", "lint", "{tmp}", "model=./nope"],
     "promptbake data lint: field 'model': './nope': no such directory or file"),
    ("vllm model missing", {}, ["data", "serve-vllm", "./nope"], "model './nope': no such directory or file"),
    ("vllm lora not an adapter", {}, ["data", "serve-vllm", "TINY", "--lora", "tuned={tmp}/nope"],
     "LoRA adapter {tmp}/nope: no adapter_config.json (not a PEFT adapter directory)"),
    # trainers
    ("dataset directory without rows", {"r.yaml": "dataset: {tmp}\n"}, ["train", "sft", "{tmp}/r.yaml"],
     "dataset '{tmp}': file not found (expected sft_train.jsonl from `promptbake data build`)"),
    ("adapter path is a file", {"r.yaml": "dataset: {tmp}/d.jsonl\noutput_dir: {tmp}/run\nreport_to: none\n",
                                "d.jsonl": ROW + "\n", "run/adapter": "x"}, ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/run/adapter: exists and is a file"),
    ("training output under a file", {"r.yaml": "dataset: {tmp}/d.jsonl\noutput_dir: {tmp}/afile/run\n",
                                      "d.jsonl": ROW + "\n", "afile": "x"}, ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/afile/run/adapter: cannot be made: {tmp}/afile is a file, not a directory"),
    ("TRL refuses a value", {"r.yaml": "model: TINY\ndataset: {tmp}/d.jsonl\nreport_to: none\noutput_dir: OUT\n"
                                      "training: {logging_steps: 0}\n", "d.jsonl": ROW + "\n"},
     ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/r.yaml:5: field 'training.logging_steps': TRL's SFTConfig: logging strategy IntervalStrategy.STEPS "
     "requires non-zero --logging_steps"),
    ("negative learning rate", {"r.yaml": "model: TINY\ndataset: {tmp}/d.jsonl\nreport_to: none\noutput_dir: OUT\n"
                                          "training: {learning_rate: -2.0e-4}\n", "d.jsonl": ROW + "\n"},
     ["train", "sft", "{tmp}/r.yaml"],
     "{tmp}/r.yaml:5: field 'training.learning_rate': -0.0002 is below 0: a negative rate trains away from the data"),
    ("dpo pair without chosen", {"r.yaml": "dataset: {tmp}/p.jsonl\n",
                                 "p.jsonl": '{"prompt": [{"role": "user", "content": "q"}], '
                                            '"rejected": [{"role": "assistant", "content": "b"}]}\n'},
     ["train", "dpo", "{tmp}/r.yaml"], "{tmp}/p.jsonl:1: field 'chosen' must be a non-empty list of messages"),
    ("dpo init_adapter with a lora section", {"r.yaml": "dataset: d.jsonl\ninit_adapter: {tmp}\nlora: {r: 4}\n"},
     ["train", "dpo", "{tmp}/r.yaml"],
     "init_adapter fixes the adapter's rank and target modules; remove the `lora` section"),
    ("dpo unknown loss type", {"r.yaml": "dataset: d.jsonl\nloss_type: sigmod\n"}, ["train", "dpo", "{tmp}/r.yaml"],
     "{tmp}/r.yaml:2: field 'loss_type': Value error, unknown loss type 'sigmod'"),
    ("rl both rewards without a reward model", {"r.yaml": "dataset: d.jsonl\nspec: s.yaml\nreward: both\n"},
     ["train", "rl", "{tmp}/r.yaml"], "reward 'both' needs `reward_model`: a reward run directory"),
    ("rl one generation", {"r.yaml": "dataset: d.jsonl\nspec: s.yaml\nnum_generations: 1\n"},
     ["train", "rl", "{tmp}/r.yaml"], "{tmp}/r.yaml:3: field 'num_generations': Input should be greater than or "
                                      "equal to 2"),
    ("reward full with a lora section", {"r.yaml": "dataset: d.jsonl\nmethod: full\nlora: {r: 4}\n"},
     ["train", "reward", "{tmp}/r.yaml"], "method 'full' trains every weight; remove the `lora` section"),
    ("distill full fine-tuning", {"r.yaml": "dataset: d.jsonl\nspec: s.yaml\nmethod: full\n"},
     ["train", "distill", "{tmp}/r.yaml"],
     "distillation uses the adapter-disabled base as the teacher: pick lora, qlora or dora"),
    ("distill spec missing", {"r.yaml": "dataset: {tmp}/d.jsonl\nspec: {tmp}/nope.yaml\nreport_to: none\n"
                                        "output_dir: OUT\n", "d.jsonl": ROW + "\n"},
     ["train", "distill", "{tmp}/r.yaml"], "{tmp}/nope.yaml: file not found"),
    # eval
    ("eval spec missing", {"e.yaml": EVAL.replace("{tmp}/s.yaml", "{tmp}/nope.yaml"), **EVAL_FILES},
     ["eval", "{tmp}/e.yaml"], "{tmp}/nope.yaml: file not found"),
    ("eval limit zero", {"e.yaml": EVAL + "limit: 0\n", **EVAL_FILES}, ["eval", "{tmp}/e.yaml"],
     "{tmp}/e.yaml:7: field 'limit': Input should be greater than 0"),
    ("eval judge against a missing arm", {"e.yaml": EVAL + "judge: {against: tuned_unprompted}\n", **EVAL_FILES},
     ["eval", "{tmp}/e.yaml"], "judge.against='tuned_unprompted' is not one of the arms ['base_prompted']"),
    ("eval repaired arm without its source",
     {"e.yaml": EVAL.replace("[base_prompted]", "[base_prompted_repaired]"), **EVAL_FILES}, ["eval", "{tmp}/e.yaml"],
     "the arm base_prompted_repaired repairs the answers of base_prompted: add base_prompted to 'arms'"),
    ("eval inputs missing", {"e.yaml": EVAL.replace("ev.jsonl", "nope.jsonl"), **EVAL_FILES},
     ["eval", "{tmp}/e.yaml"], "{tmp}/nope.jsonl: file not found"),
    ("eval output under a file", {"e.yaml": EVAL.replace("OUT", "{tmp}/afile/eval"), "afile": "x", **EVAL_FILES},
     ["eval", "{tmp}/e.yaml"], "{tmp}/afile/eval: cannot be made: {tmp}/afile is a file, not a directory"),
    # export
    ("export unknown gguf type", {}, ["export", "{tmp}", "--gguf", "q3"], "argument --gguf: invalid choice: 'q3'"),
    ("export gguf without its converter", {}, ["export", "{tmp}", "--gguf", "f16"],
     "--gguf needs llama.cpp's converter from the llama-cpp-python"),
    ("export adapter without run info", {"run/adapter/adapter_config.json": "{}"}, ["export", "{tmp}/run"],
     "{tmp}/run/adapter: has no promptbake_run.json; was it written by `promptbake train`?"),
    ("export out under a file", {"afile": "x"}, ["export", "{tmp}", "--out", "{tmp}/afile/merged"],
     "{tmp}/afile/merged: cannot be made: {tmp}/afile is a file, not a directory"),
    # bake and demo
    ("bake unknown override", {"s.yaml": spec()}, ["bake", "{tmp}/s.yaml", "nosuch=1"],
     "bake overrides: field 'nosuch': unknown field"),
    ("bake zero step budget", {"s.yaml": spec()}, ["bake", "{tmp}/s.yaml", "budget.max_steps=0"],
     "bake overrides: field 'budget.max_steps': Input should be greater than 0"),
    ("bake validation fraction 1", {"s.yaml": spec()}, ["bake", "{tmp}/s.yaml", "validation.fraction=1"],
     "bake overrides: field 'validation.fraction': Input should be less than 1"),
    ("bake recipe missing", {"s.yaml": spec(), "inputs.jsonl": INPUTS},
     ["bake", "{tmp}/s.yaml", "recipe={tmp}/nope.yaml", "output_dir={tmp}/b"], "{tmp}/nope.yaml: file not found"),
    ("bake spec override wrong", {"s.yaml": spec()}, ["bake", "{tmp}/s.yaml", "spec.inputs.limit=0"],
     "{tmp}/s.yaml:6: field 'inputs.limit': Input should be greater than 0"),
    ("bake into another spec's run", {"s.yaml": spec(), "inputs.jsonl": INPUTS,
                                      "b/bake.json": '{"spec": {"name": "other"}, "config": {}, "stages": {}}'},
     ["bake", "{tmp}/s.yaml", "output_dir={tmp}/b"], "{tmp}/b holds a bake of a different spec (changed: "),
    ("bake output under a file", {"s.yaml": spec(), "inputs.jsonl": INPUTS, "afile": "x"},
     ["bake", "{tmp}/s.yaml", "output_dir={tmp}/afile/b"],
     "{tmp}/afile/b: cannot be made: {tmp}/afile is a file, not a directory"),
    ("demo unknown override", {}, ["demo", "--out", "{tmp}/demo", "nosuch=1"],
     "bake overrides: field 'nosuch': unknown field"),
    ("demo out is a file", {"afile": "x"}, ["demo", "--out", "{tmp}/afile"],
     "{tmp}/afile exists and is a file, not a bake's run directory"),
]
CASE_ENV = {"export gguf without its converter": {"PROMPTBAKE_LLAMA_CPP_CACHE": "{tmp}/none"}}
"""Environment variables a case sets."""


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
                                                  no_template_model, warm_trainer_fields, reliability_log):
    def fill(text):
        return (text.replace("{tmp}", str(tmp_path)).replace("NOTEMPLATE", str(no_template_model))
                .replace("TINY", str(tiny_model_dir)).replace("OUT", str(tmp_path / "out")))

    for filename, content in files.items():
        target = tmp_path / filename
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(fill(content))
    refusal = run_refused([fill(a) for a in argv], tmp_path, {k: fill(v) for k, v in CASE_ENV.get(name, {}).items()})
    print(f"{name}: exit {refusal.code} in {refusal.seconds:.2f} s, imported {refusal.heavy or 'no heavy library'}")
    assert fill(message) in refusal.err, refusal.err
    if name in LATE:
        reliability_log("bad_inputs", 1)
        reliability_log("bad_inputs_exit_2", int(refusal.code == 2))
        reliability_log("late_refusals", 1)
        reliability_log("slowest_late_refusal_s", round(refusal.seconds, 2), how="max")
        assert refusal.code == 2 and "Traceback" not in refusal.err, refusal.err
    else:
        assert_quick_refusal(refusal, reliability_log)


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
