"""The layers (docs/ARCHITECTURE.md) hold: `lint-imports` checks the contracts in pyproject.toml's [tool.importlinter]
over every import, those inside functions included, and a breach fails here with the offending import named. The
contracts name packages, so a file nobody listed is checked too: a copy of the packages with one offending new
module added must fail."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ["promptbake", "data_tools", "sft", "evals"]


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    # the venv's entry point when running from one, else whichever `lint-imports` is on PATH
    lint_imports = Path(sys.executable).with_name("lint-imports")
    command = str(lint_imports) if lint_imports.exists() else shutil.which("lint-imports")
    assert command, "lint-imports not found: install the dev extra (pip install -e '.[dev]')"
    return subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_imports_point_down_the_layers():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("new_files, breach", [
    ({"promptbake/core/new.py": "from sft.train import main\n"}, "promptbake.core.new -> sft.train"),
    ({"promptbake/core/new.py": "from promptbake.bake import main\n"}, "promptbake.core.new -> promptbake.bake"),
    ({"data_tools/new.py": "from promptbake.rounds import RoundsSpec\n"}, "data_tools.new -> promptbake.rounds"),
    ({"evals/new.py": "import sft.export\n"}, "evals.new -> sft.export"),
    ({"sft/new_a.py": "from sft import new_b\n", "sft/new_b.py": "from sft import new_a\n"},
     "No cycles are allowed in sft."),
], ids=["core-imports-stage", "core-imports-pipeline", "stage-imports-pipeline", "stage-imports-stage", "cycle"])
def test_a_new_module_that_breaks_the_layers_is_caught(tmp_path, new_files, breach):
    # lint-imports puts its working directory first on sys.path, so it reads the copy, not the installed packages
    for package in PACKAGES:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    for path, text in new_files.items():
        (tmp_path / path).write_text(text)
    result = lint_imports(tmp_path)
    assert result.returncode != 0 and breach in result.stdout, result.stdout + result.stderr


def test_the_trainer_table_is_what_the_cli_and_the_rounds_run():
    """sft/trainers.py: each row's module holds its recipe class and main, reads the rows file the row names,
    and is a `promptbake train` command; every round method runs a trainer of the table."""
    import inspect
    import typing

    from promptbake.cli import make_parser
    from promptbake.rounds import ROUND_TRAINERS, RoundsSpec
    from sft.trainers import TRAINERS

    train = next(a for a in make_parser("train")._subparsers._group_actions if a.dest == "command")
    commands = train.choices["train"]._subparsers._group_actions[0].choices
    assert set(commands) == set(TRAINERS)
    for name, trainer in TRAINERS.items():
        recipe_cls, main = trainer.load()
        assert recipe_cls.__module__ == trainer.module and main.__module__ == trainer.module, name
        assert "recipe" in inspect.signature(main).parameters
        source = inspect.getsource(inspect.getmodule(main))
        assert f"rows_file=DatasetLayout.{'PREFS_TRAIN' if 'prefs' in trainer.rows_file else 'SFT_TRAIN'}" in source
    methods = set(typing.get_args(RoundsSpec.model_fields["method"].annotation)) - {"none"}
    assert set(ROUND_TRAINERS) == methods and set(ROUND_TRAINERS.values()) <= set(TRAINERS)
