"""How every command starts and ends, from `promptbake ...` and `python -m MODULE` alike.

    def make_parser(subparsers=None):                    # in a stage module, e.g. data_tools/build.py
        parser = stage_parser(subparsers, "build", "build a checked dataset from a prompt spec")
        parser.add_argument("spec")
        parser.set_defaults(run=lambda args: main(load_spec(args.spec)))
        return parser

    if __name__ == "__main__":
        run_command(make_parser())

Exit codes: 0 done, 2 bad input (the message names the file, line and field), 1 internal failure.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from promptbake.config import InputError

EXIT_BAD_INPUT = 2


def configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    for ours in ("promptbake", "sft", "data_tools", "evals"):  # our progress notes, not every library's
        logging.getLogger(ours).setLevel(logging.INFO)
    # bitsandbytes warns on every CPU import that an optional hub-downloaded kernel is missing; its CPU
    # 4-bit path works without it (QLoRA trains here), so the warning only alarms users
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def run_main(fn: Callable[[], object]) -> None:
    """Run a stage; a bad input ends with its message and exit code 2, never a traceback."""
    configure_logging()
    try:
        fn()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def stage_parser(subparsers: argparse._SubParsersAction | None, name: str, help: str) -> argparse.ArgumentParser:
    """A stage's parser (TRL's `make_parser(subparsers=None)`): the command `name` of `promptbake` when
    `subparsers` is given, else the standalone parser of `python -m MODULE`. The stage adds its arguments and
    `set_defaults(run=...)`: the function from parsed arguments to its `main(config)`."""
    if subparsers is None:
        return argparse.ArgumentParser(description=help)
    return subparsers.add_parser(name, help=help, description=help)


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> None:
    """Parse the command line and run the stage it names (`python -m MODULE` and `promptbake` alike)."""
    args = parser.parse_args(argv)
    run_main(lambda: args.run(args))
