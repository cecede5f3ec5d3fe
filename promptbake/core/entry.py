"""How every command starts and ends, from `promptbake ...` and `python -m MODULE` alike.

    def make_parser(subparsers=None):                    # in a stage module, e.g. data_tools/build.py
        parser = stage_parser(subparsers, "build", "build a checked dataset from a prompt spec")
        parser.add_argument("spec")
        parser.set_defaults(run=lambda args: main(load_spec(args.spec)))
        return parser

    if __name__ == "__main__":
        run_command(make_parser())

Exit codes: 0 done, 2 bad input (the message names the file, line and field), 1 internal failure.

Quiet by default: a command shows its own progress bars, its notes and its summary table; not the warnings
libraries raise about their own internals, which a user cannot act on, nor the bars of the datasets library's
internal steps and of transformers' loading and saving (hub downloads among them), nor the trainer's raw
`{'loss': ...}` dicts (the step bar shows the loss; W&B and trainer_state.json keep every figure), nor W&B's
console block (the run still logs). `--verbose` shows everything.

Tidy: nothing is left in the system temp directory; torch's compile cache, which it would put there, goes to
`~/.cache/promptbake/torchinductor` (TORCHINDUCTOR_CACHE_DIR, when set, wins).
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from promptbake.core.config import InputError

EXIT_BAD_INPUT = 2
USER_OS_ERRORS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
"""Failures of the machine a user can act on (permissions, a read-only or full disk): one line, like a bad input,
not a traceback. Any other exception is an internal failure: its traceback, exit 1."""

# (category, message regex): upstream deprecations raised from inside the libraries, whatever the recipe says.
UNACTIONABLE_WARNINGS = [
    # transformers 5.x renames the forward/generate keyword `past_key_values` to `cache`; decoding passes the old
    # name, the one every 5.x release accepts
    (FutureWarning, r"`past_key_values` is deprecated"),
    # TRL and PEFT read the deprecated property on every trainer setup
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # the training arguments alias of `activation_checkpointing`, set from a recipe's `gradient_checkpointing`
    (FutureWarning, r"`gradient_checkpointing` is deprecated and will be removed in v6"),
]


_verbose = False


def is_verbose() -> bool:
    """Whether the command runs with `--verbose` (configure_logging was told so)."""
    return _verbose


def configure_logging(verbose: bool = False) -> None:
    """Our progress notes at INFO, libraries' at WARNING; unless `verbose`, the warnings above filtered and
    bitsandbytes, W&B and the libraries' progress bars quiet. Calling it again with the same `verbose` changes
    nothing."""
    global _verbose
    _verbose = verbose
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    for ours in ("promptbake", "sft", "data_tools", "evals"):  # our progress notes, not every library's
        logging.getLogger(ours).setLevel(logging.INFO)
    if verbose:
        return
    # bitsandbytes warns on every CPU import that an optional hub-downloaded kernel is missing; its CPU
    # 4-bit path works without it (QLoRA trains here), so the warning only alarms users
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    for category, message in UNACTIONABLE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    # W&B's banner and run-summary block around every run; metrics, tables and files are logged all the same
    os.environ.setdefault("WANDB_SILENT", "true")
    # the datasets library's own steps (saving a build's hf/ copy, loading JSONL, TRL's tokenizing passes) take
    # well under a second on promptbake's datasets; their bars would bury the stage's own. Read when datasets
    # is imported, so a datasets imported already is told directly.
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    # transformers' bars (loading weights, writing shards) follow huggingface_hub's switch, read as they import
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


def keep_caches_out_of_tmp() -> None:
    """torch makes its compile cache in the system temp directory as it is imported (`/tmp/torchinductor_USER`),
    and leaves it there; promptbake's caches live under ~/.cache/promptbake."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(Path.home() / ".cache" / "promptbake" / "torchinductor"))


def run_main(fn: Callable[[], object], verbose: bool = False) -> None:
    """Run a stage; a bad input ends with its message and exit code 2, never a traceback."""
    configure_logging(verbose)
    keep_caches_out_of_tmp()
    try:
        fn()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as e:
        if e.errno not in USER_OS_ERRORS:
            raise
        print(f"error: {e.filename or 'promptbake'}: {e.strerror}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def add_verbose_flag(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument("--verbose", action="store_true", default=default,
                        help="show every library warning and W&B's console output")


def stage_parser(subparsers: argparse._SubParsersAction | None, name: str, help: str) -> argparse.ArgumentParser:
    """A stage's parser (TRL's `make_parser(subparsers=None)`): the command `name` of `promptbake` when
    `subparsers` is given, else the standalone parser of `python -m MODULE`. The stage adds its arguments and
    `set_defaults(run=...)`: the function from parsed arguments to its `main(config)`."""
    if subparsers is None:
        parser = argparse.ArgumentParser(description=help)
        add_verbose_flag(parser)
    else:
        parser = subparsers.add_parser(name, help=help, description=help)
        # unset unless given here, so that it does not overwrite `promptbake --verbose ...`
        add_verbose_flag(parser, default=argparse.SUPPRESS)
    return parser


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse the command line and run the stage it names (`python -m MODULE` and `promptbake` alike)."""
    args = parser.parse_args(argv)
    run_main(lambda: args.run(args), verbose=args.verbose)
