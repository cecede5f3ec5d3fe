"""Kills at random points: a data build and an export killed with SIGKILL and started again finish with nothing
lost, duplicated or half-written under a final name. (Training: see test_distributed.py's resume test.)"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from promptbake.core.io import MARKER, recover_journal

REPO = Path(__file__).resolve().parents[1]


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    return subprocess.Popen([sys.executable, "-m", "promptbake.cli", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, extra: float, timeout: float = 120) -> bool:
    """SIGKILL the whole process group `extra` seconds after `ready()` turns true; False if it finished first."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(extra)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def journal_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_data_build_killed_at_random_points_loses_and_duplicates_nothing(tiny_spec, reliability_log):
    out = tiny_spec.parent / "data"
    # batch_size 2 -> one input per batch (n=2): many journal appends, many places to be killed
    args = ["data", "build", str(tiny_spec), "teacher.batch_size=2", "teacher.sampling.max_new_tokens=32"]
    journal_path = out / "samples.jsonl"
    rng = random.Random(7)
    kills = 0
    for _ in range(4):  # kill after a random number of journaled inputs, at a random moment after that
        target = journal_lines(journal_path) + rng.randint(1, 2)
        if kill_when(start(args), lambda t=target: journal_lines(journal_path) >= t, rng.uniform(0, 0.3)):
            kills += 1
        for name in ("sft_train.jsonl", "prefs_train.jsonl", "rejects.jsonl", "eval_inputs.jsonl"):
            if (out / name).exists():  # whatever exists under a final name is whole: every line parses
                [json.loads(line) for line in (out / name).read_text().splitlines()]
        assert not (out / "manifest.json").exists() or (out / "hf").exists()  # manifest only after the rest
    final = subprocess.run([sys.executable, "-m", "promptbake.cli", *args], cwd=REPO, capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert final.returncode == 0, final.stderr[-2000:]
    journal = recover_journal(out / "samples.jsonl")
    ids = [r["id"] for r in journal]
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(ids) == len(set(ids)) == manifest["counts"]["train_inputs"]  # each input generated exactly once
    rows = [json.loads(x) for x in (out / "sft_train.jsonl").read_text().splitlines()]
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    answered = [r["prompt"][0]["content"] for r in rows] + [r["input"] for r in rejects]
    assert sorted(answered) == sorted(r["input"] for r in journal)  # every input accounted for, once
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER]  # no temporary left
    assert kills >= 1, "no kill landed mid-build; the test proved nothing"
    reliability_log("faults_injected", kills)
    reliability_log("rows_lost", len(set(r["input"] for r in journal)) - len(answered))


def test_export_killed_midway_never_leaves_a_half_model(tiny_model_dir, tmp_path, reliability_log):
    from transformers import AutoModelForCausalLM

    from promptbake.core.config import load_config
    from sft.train import SFTRecipe
    from sft.train import main as train

    rows = tmp_path / "sft_train.jsonl"
    rows.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"q{i}"}],
                                        "completion": [{"role": "assistant", "content": "ok"}]}) + "\n"
                            for i in range(4)))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {tiny_model_dir}\ndataset: {rows}\noutput_dir: {tmp_path / 'run'}\nreport_to: none\n"
                      "training: {max_steps: 1, per_device_train_batch_size: 2}\n")
    train(load_config(SFTRecipe, recipe))
    merged = tmp_path / "run" / "merged"
    rng = random.Random(3)
    kills = 0
    def saving() -> bool:  # the export has started writing under its temporary name
        return any(p.name.startswith(".merged.") for p in (tmp_path / "run").iterdir())

    for _ in range(3):
        if kill_when(start(["export", str(tmp_path / "run")]), saving, rng.uniform(0, 0.2)):
            kills += 1
        if merged.exists():  # whatever is under the final name is complete and loads
            AutoModelForCausalLM.from_pretrained(merged)
    result = subprocess.run([sys.executable, "-m", "promptbake.cli", "export", str(tmp_path / "run")], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    AutoModelForCausalLM.from_pretrained(merged)
    assert kills >= 1, "no kill landed mid-export; the test proved nothing"
    reliability_log("faults_injected", kills)
