"""The command line: bad input exits 2 with a message naming file and field, never a traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def promptbake(*args, cwd=REPO):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "promptbake.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["data", "build", "missing.yaml"], "missing.yaml: file not found"),
    (["data", "build", "configs/specs/demo_style.yaml", "teacher.sampling.n=0"],
     "field 'teacher.sampling.n': Input should be greater than 0"),
    (["data", "build", "configs/specs/demo_style.yaml", "teacher.sampling.n"], "expected key=value"),
    (["train", "sft", "configs/sft/demo_lora.yaml", "lora.rank=8"], "field 'lora.rank': unknown field"),
    (["train", "sft", "configs/sft/demo_lora.yaml", "dataset=/nonexistent/rows.jsonl"],
     "dataset '/nonexistent/rows.jsonl': file not found"),
    (["eval", "configs/evals/demo.yaml", "arms=[base_prompted]", "eval_inputs=/nonexistent.jsonl"],
     "/nonexistent.jsonl: file not found"),
    (["eval", "configs/evals/demo.yaml", "tuned_model=runs/nonexistent/adapter"],
     "field 'tuned_model': 'runs/nonexistent/adapter': no such directory or file"),
    (["export", "/nonexistent-run"], "/nonexistent-run: no such directory"),
])
def test_bad_input_exits_2_without_traceback(args, message):
    result = promptbake(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_row_in_training_data_names_the_line(tmp_path):
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text('{"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "assistant", '
                    '"content": "ok"}]}\n{"prompt": "hi", "completion": "ok"}\n')
    result = promptbake("train", "sft", "configs/sft/demo_lora.yaml", f"dataset={rows}")
    assert result.returncode == 2
    assert f"{rows}:2: field 'prompt' must be a non-empty list of messages" in result.stderr


@pytest.mark.parametrize("module", ["data_tools.build", "evals.run", "sft.train"])
def test_python_dash_m_runs_the_same_command(module):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-m", module, "missing.yaml"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2 and "missing.yaml: file not found" in result.stderr, result.stderr


@pytest.mark.parametrize("argv, module, module_argv", [
    (["data", "build", "s.yaml", "a=1"], "data_tools.build", ["s.yaml", "a=1"]),
    (["data", "lint", "runs/x", "spec=s.yaml"], "data_tools.lint", ["runs/x", "spec=s.yaml"]),
    (["train", "dpo", "r.yaml", "beta=0.2", "--resume"], "sft.dpo", ["r.yaml", "beta=0.2", "--resume"]),
    (["eval", "e.yaml", "limit=3"], "evals.run", ["e.yaml", "limit=3"]),
    (["export", "runs/x", "--out", "m"], "sft.export", ["runs/x", "--out", "m"]),
])
def test_one_parser_per_stage(argv, module, module_argv):
    """`promptbake ...` and `python -m MODULE ...` parse with the stage's own parser, to the same arguments."""
    import importlib

    from promptbake.cli import make_parser

    ours = vars(make_parser(argv[0]).parse_args(argv))
    own = vars(importlib.import_module(module).make_parser().parse_args(module_argv))
    assert ours.pop("run").__code__ is own.pop("run").__code__  # one definition turns arguments into main(...)
    assert own.items() <= ours.items()  # ours adds the command words
    assert ours["verbose"] is False


@pytest.mark.parametrize("argv", [["--verbose", "eval", "e.yaml"], ["eval", "e.yaml", "--verbose"]])
def test_verbose_before_or_after_the_command(argv):
    from promptbake.cli import make_parser

    assert make_parser("eval").parse_args(argv).verbose is True


# what transformers 5.x raises from inside generate/forward and TRL's trainer setup, word for word
UPSTREAM_WARNINGS = [
    "`past_key_values` is deprecated and will be removed in version 5.40.0 for `LlamaForCausalLM.forward`. "
    "Use `cache` instead.",
    "`is_gradient_checkpointing` is deprecated and will be removed in v6. Use `is_activation_checkpointing` instead.",
    "`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing` instead.",
]


@pytest.mark.parametrize("verbose", [False, True])
def test_quiet_unless_verbose(verbose, monkeypatch):
    import warnings

    from promptbake.core.entry import configure_logging

    for name in ("WANDB_SILENT", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
        monkeypatch.setenv(name, "unset")  # recorded, so that the test leaves the environment as it found it
        monkeypatch.delenv(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        configure_logging(verbose=verbose)
        for message in UPSTREAM_WARNINGS:
            warnings.warn(message, FutureWarning, stacklevel=1)
        warnings.warn("`max_length` is deprecated", FutureWarning, stacklevel=1)  # not one of ours: shown
    shown = [str(w.message) for w in caught]
    assert shown == (UPSTREAM_WARNINGS if verbose else []) + ["`max_length` is deprecated"]
    assert os.environ.get("WANDB_SILENT") == (None if verbose else "true")
    assert os.environ.get("HF_DATASETS_DISABLE_PROGRESS_BARS") == (None if verbose else "1")
