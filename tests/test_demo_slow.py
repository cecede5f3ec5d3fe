"""Integration: `promptbake demo` (a bake of the demo spec) on the real SmolLM2-135M-Instruct, shrunk to a
handful of inputs and steps.

Runs the real command line in a subprocess (as a user would), with W&B offline, and checks every artefact.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_end_to_end_on_the_default_model(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path)}
    env.pop("WANDB_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "promptbake.cli", "demo", "--out", str(out), "spec.inputs.limit=12",
         "synthesis_min_inputs=0", "budget.min_steps=6", "budget.max_steps=6"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run directory: {out}" in result.stdout

    manifest = json.loads((out / "data" / "manifest.json").read_text())
    assert manifest["counts"]["train_inputs"] == 8 and manifest["counts"]["eval_inputs"] == 4  # 30% of 12
    rows = [json.loads(x) for x in (out / "data" / "sft_train.jsonl").read_text().splitlines()]
    assert rows and all(r["prompt"] == [{"role": "user", "content": r["prompt"][0]["content"]}] for r in rows)

    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    for arm in ("base_prompted", "tuned_unprompted"):
        for key in ("all_rules_adherence", "per_rule", "prompt_tokens_per_request", "latency_s_per_request", "n"):
            assert key in metrics[arm]
        assert metrics[arm]["n"] == 4
    # the point of the whole exercise: no prompt means far fewer prompt tokens per request
    tokens = {arm: metrics[arm]["prompt_tokens_per_request"] for arm in ("base_prompted", "tuned_unprompted")}
    assert tokens["tuned_unprompted"] * 4 < tokens["base_prompted"]

    merged = out / "merged"
    assert (merged / "model.safetensors").exists() and (merged / "tokenizer.json").exists()
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["tuned_unprompted"] == metrics["tuned_unprompted"]["all_rules_adherence"]
    assert verdict["statement"] in result.stdout and verdict["statement"] in (out / "report.md").read_text()
    assert list(json.loads((out / "bake.json").read_text())["stages"]) == ["data", "sft", "eval", "export"]
    assert list(tmp_path.glob("wandb/offline-run-*")), "W&B offline run files were not written"
