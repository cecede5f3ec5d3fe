"""A command leaves nothing behind but its outputs, and W&B never costs a run: with a WANDB_API_KEY that W&B cannot
accept (an invalid key, and a W&B server that cannot be reached: a closed local port, so nothing leaves the
machine) a training run and an eval fall back to offline with one warning each and exit 0; W&B's files are in
each command's output directory, nothing is written to the working directory or left in the system temp
directory, and the libraries' progress bars and the trainer's raw `{'loss': ...}` dicts stay quiet.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROW = {"prompt": [{"role": "user", "content": "say hi"}], "completion": [{"role": "assistant", "content": "hi"}]}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(argv: list[str], cwd: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"PYTHONPATH": str(REPO), "TMPDIR": str(tmp), "WANDB_API_KEY": "x" * 40,
            "WANDB_BASE_URL": f"http://127.0.0.1:{closed_port()}",
            "WANDB_HTTP_TIMEOUT": "3"}  # W&B's own bound on the verification request (10 s by default)
    return subprocess.run([sys.executable, "-m", "promptbake.cli", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_wandb_failures_fall_back_offline_and_nothing_is_left_outside_the_outputs(tiny_spec, tiny_model_dir,
                                                                                  tmp_path):
    cwd, tmp, out = tmp_path / "cwd", tmp_path / "tmp", tmp_path / "out"
    for d in (cwd, tmp, out):
        d.mkdir()
    (out / "sft_train.jsonl").write_text("".join(json.dumps(ROW) + "\n" for _ in range(8)))
    (out / "eval_inputs.jsonl").write_text(json.dumps({"prompt": ROW["prompt"]}) + "\n")
    (out / "r.yaml").write_text(f"model: {tiny_model_dir}\ndataset: {out / 'sft_train.jsonl'}\n"
                                f"output_dir: {out / 'sft'}\ntraining: {{max_steps: 4, logging_steps: 1, "
                                "per_device_train_batch_size: 4}\n")
    (out / "e.yaml").write_text(f"spec: {tiny_spec}\neval_inputs: {out / 'eval_inputs.jsonl'}\n"
                                f"base_model: {tiny_model_dir}\ntuned_model: {out / 'sft' / 'adapter'}\n"
                                f"sampling: {{max_new_tokens: 4}}\noutput_dir: {out / 'eval'}\n")
    for argv, run_dir in ((["train", "sft", str(out / "r.yaml")], out / "sft"),
                          (["eval", str(out / "e.yaml")], out / "eval")):
        done = run_command(argv, cwd, tmp)
        said = done.stdout + done.stderr
        assert done.returncode == 0, said
        assert "Traceback" not in said
        assert said.count("W&B could not log in with WANDB_API_KEY") == 1, said
        assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1, said
        assert "{'loss'" not in said and "Loading weights" not in said, said
        assert list(cwd.iterdir()) == [], f"{argv[0]} wrote into the working directory"
        assert list(tmp.iterdir()) == [], f"{argv[0]} left {[p.name for p in tmp.iterdir()]} in the temp directory"
    assert (out / "eval" / "metrics.json").is_file()


def test_report_to_none_trains_where_wandb_is_not_installed(tiny_model_dir, tmp_path, monkeypatch):
    """W&B is a tracking choice, not a requirement: with `report_to: none` a run trains on a machine without the
    wandb package (an air-gapped GPU image, scripts/gpu_offline.sh), and nothing imports it."""
    from sft.train import SFTRecipe
    from sft.train import main as train

    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as where it is absent
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps(ROW) + "\n")
    recipe = SFTRecipe(model=str(tiny_model_dir), dataset=str(rows), output_dir=str(tmp_path / "run"),
                       report_to="none", lora={"r": 4},
                       training={"max_steps": 1, "per_device_train_batch_size": 1, "save_steps": 1})
    adapter_dir = train(recipe)
    assert (adapter_dir / "adapter_model.safetensors").exists()
    assert sys.modules["wandb"] is None  # never replaced by a real import
