"""The whole loop on the embedded default model: spec -> dataset -> LoRA SFT -> eval -> merged weights.

    promptbake demo [--out runs/demo] [spec overrides, e.g. inputs.limit=40]

Uses the shipped configs (`configs/specs/demo_style.yaml`, `configs/sft/demo_lora.yaml`,
`configs/evals/demo.yaml`) with their paths pointed into `--out`. Each stage is the same `main(config)` that
its own command runs. A re-run reuses the finished data journal, so a killed demo resumes its data build.
"""

from __future__ import annotations

import time
from pathlib import Path

from promptbake.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def main(out: str | Path = "runs/demo", spec_overrides: list[str] | tuple[str, ...] = ()) -> dict:
    from data_tools.build import main as build
    from data_tools.spec import load_spec
    from evals.run import EvalConfig
    from evals.run import main as evaluate
    from sft.export import main as export
    from sft.train import SFTRecipe
    from sft.train import main as train

    out = Path(out)
    start = time.time()
    spec_path = CONFIGS / "specs" / "demo_style.yaml"
    # Load every config first: a bad override fails before any model is loaded.
    spec = load_spec(spec_path, [*spec_overrides, f"output_dir={out / 'data'}"])
    recipe = load_config(SFTRecipe, CONFIGS / "sft" / "demo_lora.yaml",
                         [f"dataset={out / 'data' / 'sft_train.jsonl'}", f"output_dir={out / 'sft'}"])
    eval_config = load_config(EvalConfig, CONFIGS / "evals" / "demo.yaml", [
        f"spec={spec_path}", f"eval_inputs={out / 'data' / 'eval_inputs.jsonl'}",
        f"tuned_model={out / 'sft' / 'adapter'}", f"output_dir={out / 'eval'}",
    ])
    stage_times = {}

    def stage(name: str, fn):
        print(f"\n=== {name} ===", flush=True)
        t0 = time.time()
        result = fn()
        stage_times[name] = time.time() - t0
        return result

    stage("1/4 data: the prompted teacher answers the training inputs", lambda: build(spec))
    stage("2/4 train: LoRA SFT on bare inputs (no rules in the prompt)", lambda: train(recipe))
    metrics = stage("3/4 eval: base WITH the prompt vs tuned WITHOUT it", lambda: evaluate(eval_config))
    merged = stage("4/4 export: merge the adapter into standalone weights", lambda: export(out / "sft"))

    base, tuned = metrics["base_prompted"], metrics["tuned_unprompted"]
    print(f"\n=== done in {time.time() - start:.0f} s: "
          + ", ".join(f"{k.split(':')[0]} {v:.0f} s" for k, v in stage_times.items()) + " ===")
    print(f"all rules followed: base with prompt {base['all_rules_adherence']:.0%}, "
          f"tuned without prompt {tuned['all_rules_adherence']:.0%}")
    print(f"prompt tokens per request: {base['prompt_tokens_per_request']:.0f} -> "
          f"{tuned['prompt_tokens_per_request']:.0f}; latency per request: "
          f"{base['latency_s_per_request']:.2f} s -> {tuned['latency_s_per_request']:.2f} s")
    print(f"run directory: {out}  (eval: {out / 'eval' / 'metrics.json'}, merged model: {merged})")
    return metrics
