"""The main job on the embedded default model: `promptbake bake` on the demo spec.

    promptbake demo [--out runs/demo] [bake or spec. overrides, e.g. spec.inputs.limit=40]

The demo spec (`configs/specs/demo_style.yaml`) asks SmolLM2-135M-Instruct for five formatting rules it breaks
with the prompt; the bake builds the data, trains with a validation slice choosing the step, evaluates the
tuned model without the prompt against the prompted base, and merges the weights. A re-run resumes a killed
demo from its last finished stage (and the data build from its journal, training from its checkpoint).
"""

from __future__ import annotations

from pathlib import Path

from promptbake.bake import CONFIGS, load_bake
from promptbake.bake import main as bake

DEMO_SPEC = CONFIGS / "specs" / "demo_style.yaml"


def main(out: str | Path = "runs/demo", overrides: list[str] | tuple[str, ...] = ()) -> dict:
    config, spec_overrides = load_bake(str(DEMO_SPEC), [*overrides, f"output_dir={out}"])
    return bake(config, spec_overrides)
