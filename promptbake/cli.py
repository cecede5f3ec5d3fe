"""The `promptbake` command: the stages' own parsers under one roof.

    promptbake data build configs/specs/demo_style.yaml [key=value ...]
    promptbake data merge runs/demo/data runs/demo/data-shard-*-of-3   # the shards of `data build SPEC shard=i/3`
    promptbake data lint runs/demo/data [spec=configs/specs/demo_style.yaml]
    promptbake data serve-vllm smollm2-135m-instruct [--lora tuned=runs/demo/sft/adapter]   # a teacher/eval server
    promptbake train sft|distill|dpo|reward|rl CONFIG [key=value ...] [--resume]
    promptbake eval configs/evals/demo.yaml [key=value ...]
    promptbake export runs/demo/sft [--out DIR]
    promptbake bake configs/specs/style_rules.yaml [key=value ...] [spec.KEY=VALUE ...]
    promptbake demo [--out runs/demo]     # bake on the demo spec
    promptbake --verbose ...   # every library warning and W&B's console output too

Each stage module adds its own command with `make_parser(subparsers)` and runs the same parser as
`python -m MODULE`; this file only lists them. Exit codes: 0 done, 2 bad input (the message names the file,
line and field), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from promptbake.core.entry import add_verbose_flag, configure_logging, run_main, stage_parser
from sft.trainers import TRAINERS

# group -> (its help, the stage modules whose commands it holds); None: commands directly under `promptbake`
STAGES: dict[str | None, tuple[str | None, list[str]]] = {
    "data": ("dataset tools", ["data_tools.build", "data_tools.merge", "data_tools.lint", "data_tools.vllm_server"]),
    "train": ("train a model", [trainer.module for trainer in TRAINERS.values()]),
    None: (None, ["evals.run", "sft.export", "promptbake.bake"]),
}


def add_demo_parser(subparsers: argparse._SubParsersAction) -> None:
    demo = stage_parser(subparsers, "demo", "the whole loop on the embedded default model")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("overrides", nargs="*", help="bake overrides, and spec overrides prefixed with `spec.`, "
                                                   "e.g. spec.inputs.limit=40")
    demo.set_defaults(run=lambda args: run_demo(args.out, args.overrides))


def run_demo(out: str, overrides: list[str]) -> None:
    from promptbake.demo import main as demo_main

    demo_main(out, overrides)


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole command line. Importing a stage can load torch and transformers (seconds), so with `command`
    (the first word of the command line) only the stages it can reach are imported: `data` imports only the
    data tools; a word that names no group, the top-level stages. Without it, every stage is."""
    parser = argparse.ArgumentParser(prog="promptbake", description=__doc__.split("\n")[0])
    add_verbose_flag(parser)
    commands = parser.add_subparsers(dest="command", required=True)
    for group, (help_text, modules) in STAGES.items():
        target = commands
        if group is not None:
            target = commands.add_parser(group, help=help_text).add_subparsers(dest=f"{group}_command", required=True)
        if command is None or command == group or (group is None and command not in STAGES):
            for name in modules:
                importlib.import_module(name).make_parser(target)
    add_demo_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    flags = argparse.ArgumentParser(add_help=False)
    add_verbose_flag(flags)
    verbose = flags.parse_known_args(argv)[0].verbose
    configure_logging(verbose)  # before any stage is imported: some libraries warn as they are imported
    command = next((a for a in argv if not a.startswith("-")), None)
    args = make_parser(command).parse_args(argv)
    run_main(lambda: args.run(args), verbose=args.verbose)


if __name__ == "__main__":
    main()
