"""The `promptbake` command: thin wrappers over each stage's `main(config)`.

    promptbake data build configs/specs/demo_style.yaml [key=value ...]
    promptbake data lint runs/demo/data [spec=configs/specs/demo_style.yaml]
    promptbake train sft|distill|dpo|reward|rl CONFIG [key=value ...] [--resume]
    promptbake eval configs/evals/demo.yaml [key=value ...]
    promptbake export runs/demo/sft [--out DIR]
    promptbake demo [--out runs/demo]

Exit codes: 0 done, 2 bad input (the message names the file, line and field), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from promptbake.config import InputError, load_config

EXIT_BAD_INPUT = 2
# `promptbake train METHOD`: module, its recipe class, help. Each module also runs as `python -m MODULE`.
TRAINERS = {
    "sft": ("sft.train", "SFTRecipe", "SFT (LoRA/QLoRA/DoRA/full) on prompt-completion rows"),
    "distill": ("sft.distill", "DistillRecipe", "prompt baking: match the prompted base's distributions (KL)"),
    "dpo": ("sft.dpo", "DPORecipe", "DPO on preference rows (reference: the adapter-disabled base)"),
    "reward": ("sft.reward", "RewardRecipe", "a reward model on preference rows"),
    "rl": ("sft.rl", "RLRecipe", "online RL (GRPO) with the spec's checks and/or a reward model as reward"),
}


def configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="[%(name)s] %(message)s")
    for ours in ("promptbake", "sft", "data_tools", "evals"):  # our progress notes, not every library's
        logging.getLogger(ours).setLevel(logging.INFO)
    # bitsandbytes warns on every CPU import that an optional hub-downloaded kernel is missing; its CPU
    # 4-bit path works without it (QLoRA trains here), so the warning only alarms users
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def run_main(fn: Callable[[], object]) -> None:
    """Run a stage (from `promptbake` or `python -m MODULE`); a bad input ends with its message and exit
    code 2, never a traceback."""
    configure_logging()
    try:
        fn()
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="promptbake", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    build = data.add_parser("build", help="build a checked dataset from a prompt spec")
    build.add_argument("spec")
    build.add_argument("overrides", nargs="*")
    lint = data.add_parser("lint", help="lint a built dataset: duplicates, leakage, invented values, lengths, rules")
    lint.add_argument("dataset")
    lint.add_argument("overrides", nargs="*", help="e.g. spec=configs/specs/demo_style.yaml max_length=128")

    train = sub.add_parser("train", help="train a model").add_subparsers(dest="method", required=True)
    for method, (_, _, help_text) in TRAINERS.items():
        p = train.add_parser(method, help=help_text)
        p.add_argument("config")
        p.add_argument("overrides", nargs="*")
        p.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")

    ev = sub.add_parser("eval", help="tuned model without the prompt vs base model with it")
    ev.add_argument("config")
    ev.add_argument("overrides", nargs="*")

    export = sub.add_parser("export", help="merge a run's LoRA adapter into its base and save safetensors")
    export.add_argument("run_dir", help="a training run directory (or its adapter/ directory)")
    export.add_argument("--out", help="where to write the merged model (default: RUN_DIR/merged)")

    demo = sub.add_parser("demo", help="the whole loop on the embedded default model")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("overrides", nargs="*", help="overrides for the spec, e.g. inputs.limit=40")
    return parser


def dispatch(args: argparse.Namespace) -> None:
    if args.command == "data" and args.data_command == "lint":
        from data_tools.lint import config_from_args
        from data_tools.lint import main as lint_main

        lint_main(config_from_args(args.dataset, args.overrides))
    elif args.command == "data":
        from data_tools.build import main as build_main
        from data_tools.spec import load_spec

        build_main(load_spec(args.spec, args.overrides))
    elif args.command == "train":
        module_name, recipe_name, _ = TRAINERS[args.method]
        module = importlib.import_module(module_name)
        module.main(load_config(getattr(module, recipe_name), args.config, args.overrides), resume=args.resume)
    elif args.command == "eval":
        from evals.run import EvalConfig
        from evals.run import main as eval_main

        eval_main(load_config(EvalConfig, args.config, args.overrides))
    elif args.command == "export":
        from sft.export import main as export_main

        export_main(args.run_dir, args.out)
    elif args.command == "demo":
        from promptbake.demo import main as demo_main

        demo_main(args.out, args.overrides)


def main(argv: list[str] | None = None) -> None:
    args = make_parser().parse_args(argv)
    run_main(lambda: dispatch(args))


if __name__ == "__main__":
    main()
