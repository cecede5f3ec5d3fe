"""Training runs started the way users start them: a real 2-process DDP run under `accelerate launch`, and a
run killed with SIGKILL after a checkpoint that `--resume` finishes with the same weights."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from accelerate_run import accelerate_launch  # tests/ is on sys.path (pytest)
from safetensors.torch import load_file
from wandb_offline import config, history

REPO = Path(__file__).resolve().parents[1]
PROBE = REPO / "tests" / "train_probe.py"


@pytest.fixture
def recipe(tmp_path, tiny_model_dir):
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"question number {i}"}],
        "completion": [{"role": "assistant", "content": f"ok: answer {i}"}]}) + "\n" for i in range(16)))

    def write(name: str, **training) -> Path:
        settings = {"per_device_train_batch_size": 2, "learning_rate": 1e-3, "max_length": 64,
                    "logging_steps": 1, "seed": 3, **training}
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model: {tiny_model_dir}\ndataset: {rows}\noutput_dir: {tmp_path / name}\n"
                        f"report_to: none\ntraining: {json.dumps(settings)}\n")
        return path
    return write


def env_for(probe_dir: Path, sleep: float = 0.0) -> dict:
    probe_dir.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "PROBE_DIR": str(probe_dir), "PROBE_STEP_SLEEP": str(sleep)}


def test_two_process_ddp_on_cpu_splits_batches_and_saves_once(recipe, tmp_path):
    config = recipe("ddp", max_steps=4, save_steps=2)
    result = accelerate_launch([str(PROBE), str(config)], env=env_for(tmp_path / "probe"))
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = {p.stem: [json.loads(x) for x in p.read_text().splitlines()] for p in (tmp_path / "probe").iterdir()}
    assert set(ranks) == {"rank0", "rank1"}
    assert all(r["world_size"] == 2 for records in ranks.values() for r in records)
    seen = {rank: {row for r in records for row in r["rows"]} for rank, records in ranks.items()}
    assert seen["rank0"] and seen["rank1"] and not seen["rank0"] & seen["rank1"]  # each rank its own rows
    # exactly one set of weights: rank 0 saved the adapter, nobody saved a second copy anywhere
    weights = sorted(p.relative_to(tmp_path / "ddp") for p in (tmp_path / "ddp").rglob("adapter_model.safetensors"))
    expected = ["adapter", "checkpoints/checkpoint-2", "checkpoints/checkpoint-4"]
    assert weights == [Path(d) / "adapter_model.safetensors" for d in expected]


def train_cmd(config: Path, *extra: str) -> list[str]:
    return [sys.executable, str(PROBE), str(config), *extra]


def test_killed_run_resumes_to_the_same_weights(recipe, tmp_path, reliability_log):
    straight = recipe("straight", max_steps=8, save_steps=2)
    subprocess.run(train_cmd(straight), cwd=REPO, env=env_for(tmp_path / "p1"), check=True,
                   capture_output=True, timeout=300)

    killed = recipe("killed", max_steps=8, save_steps=2)
    proc = subprocess.Popen(train_cmd(killed), cwd=REPO, env=env_for(tmp_path / "p2", sleep=0.4),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state = tmp_path / "killed" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert state.exists() and proc.poll() is None, "the run should be mid-way, past checkpoint-4"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    reliability_log("faults_injected", 1)
    assert not (tmp_path / "killed" / "adapter").exists()
    # a half-written newer checkpoint (a kill during a save) must be skipped, not resumed from
    (tmp_path / "killed" / "checkpoints" / "checkpoint-6").mkdir(exist_ok=True)

    result = subprocess.run(train_cmd(killed, "--resume"), cwd=REPO, env=env_for(tmp_path / "p3"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipping incomplete checkpoint" in result.stdout and "resuming from" in result.stdout
    resumed_steps = [json.loads(x)["step"] for x in (tmp_path / "p3" / "rank0.jsonl").read_text().splitlines()]
    assert resumed_steps[0] >= 4 and resumed_steps[-1] == 7  # continued, did not start over

    a = load_file(tmp_path / "straight" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_wandb_offline_run_holds_metrics_and_sample_completions(recipe, tmp_path, fresh_wandb, monkeypatch):
    from promptbake.core.config import load_config
    from sft.train import SFTRecipe, main

    monkeypatch.delenv("WANDB_MODE")  # offline must follow from the missing API key alone
    path = recipe("tracked", max_steps=3, save_steps=10)
    main(load_config(SFTRecipe, path, ["report_to=wandb"]))
    runs = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(runs) == 1, "expected one offline run (WANDB_MODE defaults to offline without an API key)"
    steps = history(runs[0])
    losses = [s["train/loss"] for s in steps if "train/loss" in s]
    assert len(losses) == 3 and all(loss > 0 for loss in losses)
    assert any("samples/completions/nrows" in s for s in steps)
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/samples/completions_*.table.json"))
    table = json.loads(tables[0].read_text())
    assert table["columns"] == ["prompt", "completion"] and len(table["data"]) == 4
    assert config(runs[0])["learning_rate"] == 1e-3


def test_end_token_weight_weighs_the_loss_under_two_process_ddp(recipe, tmp_path):
    """`end_token_weight` hooks the forward TRL's loss comes from; under DDP that forward is the wrapped model's.
    The first step's loss (the same weights and rows in both runs) is higher with the end token weighed 3 times."""
    first_loss = {}
    for weight in (1, 3):
        config = recipe(f"w{weight}", max_steps=2, save_steps=2)
        result = accelerate_launch([str(PROBE), str(config), f"end_token_weight={weight}"],
                                   env=env_for(tmp_path / f"probe{weight}"))
        assert result.returncode == 0, result.stderr[-3000:]
        state_file = tmp_path / f"w{weight}" / "checkpoints" / "checkpoint-2" / "trainer_state.json"
        state = json.loads(state_file.read_text())
        first_loss[weight] = next(h["loss"] for h in state["log_history"] if "loss" in h)
    assert first_loss[3] > first_loss[1] + 1.0, first_loss  # measured: 10.85 -> 13.81


def test_retention_term_trains_under_two_process_ddp(recipe, tmp_path):
    """The retention term's two extra forwards (the base without gradients, the tuned model with them) go through
    the DDP-wrapped model beside TRL's own: the run trains, and the KL it logs is 0 at the first step (LoRA's B
    starts at zero: the tuned model is the base) and above 0 once the adapter has moved."""
    retention = tmp_path / "replay_rows.jsonl"
    retention.write_text("".join(json.dumps({
        "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
        "completion": [{"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}) + "\n" for i in range(6)))
    config = recipe("retention", max_steps=3, save_steps=3, learning_rate=3e-2)
    result = accelerate_launch([str(PROBE), str(config), f"retention_rows={retention}", "retention_batch_size=2"],
                               env=env_for(tmp_path / "probe"))
    assert result.returncode == 0, result.stderr[-3000:]
    state_file = tmp_path / "retention" / "checkpoints" / "checkpoint-3" / "trainer_state.json"
    kls = [h["retention_kl"] for h in json.loads(state_file.read_text())["log_history"] if "retention_kl" in h]
    assert len(kls) == 3 and kls[0] == 0.0 and kls[-1] > 0.0, kls
