"""Secrets never reach a file; a tampered (pickle-bearing) checkpoint is refused, not executed."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECRETS = {"WANDB_API_KEY": "wandb-secret-7f3a9c1e5b", "HF_TOKEN": "hf_secretTOKEN8d2e4f6a",
           "OPENAI_API_KEY": "sk-secret-0c9b8a7d6e5f", "MY_ENDPOINT_KEY": "endpoint-secret-91ab22cd"}


def promptbake(*args, env):
    return subprocess.run([sys.executable, "-m", "promptbake.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_pipeline_writes_no_secret_anywhere(tiny_spec, tiny_model_dir, tmp_path, reliability_log):
    env = {**os.environ, **SECRETS, "PYTHONPATH": str(REPO), "WANDB_MODE": "offline",
           "WANDB_DIR": str(tmp_path / "wb")}
    (tmp_path / "wb").mkdir()
    data = tmp_path / "data"
    steps = [
        ["data", "build", str(tiny_spec), f"output_dir={data}"],
        ["train", "sft", str(REPO / "configs/sft/demo_lora.yaml"), f"model={tiny_model_dir}", f"dataset={data}",
         f"output_dir={tmp_path / 'run'}", "training.max_steps=2", "training.save_steps=1", "report_to=wandb"],
        ["eval", str(REPO / "configs/evals/demo.yaml"), f"spec={tiny_spec}",
         f"eval_inputs={data / 'eval_inputs.jsonl'}", f"base_model={tiny_model_dir}",
         f"tuned_model={tmp_path / 'run' / 'adapter'}", "sampling.max_new_tokens=4",
         f"output_dir={tmp_path / 'eval'}", "report_to=wandb"],
        ["export", str(tmp_path / "run")],
    ]
    outputs = ""
    for args in steps:
        result = promptbake(*args, env=env)
        assert result.returncode == 0, result.stderr[-2000:]
        outputs += result.stdout + result.stderr
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 30 and any("offline-run" in str(p) for p in files)
    found = [(str(p), name) for p in files for name, secret in SECRETS.items()
             if secret.encode() in p.read_bytes()]
    reliability_log("secrets_found", len(found))
    assert found == [], f"secrets written to files: {found}"
    assert not any(secret in outputs for secret in SECRETS.values()), "a secret reached the terminal output"


MALICIOUS = """
import os, pickle, torch
class Exploit:
    def __reduce__(self):
        return (os.system, ("touch {marker}",))
torch.save({{"state": Exploit()}}, "{path}")
"""


def test_tampered_checkpoint_is_refused_not_executed(tiny_model_dir, tmp_path, reliability_log):
    rows = tmp_path / "sft_train.jsonl"
    rows.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"q{i}"}],
                                        "completion": [{"role": "assistant", "content": "ok"}]}) + "\n"
                            for i in range(4)))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["train", "sft", str(REPO / "configs/sft/demo_lora.yaml"), f"model={tiny_model_dir}", f"dataset={rows}",
            f"output_dir={tmp_path / 'run'}", "training.max_steps=2", "training.save_steps=2", "report_to=none",
            "training.per_device_train_batch_size=2"]
    assert promptbake(*args, env=env).returncode == 0
    checkpoint = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    target = next(checkpoint.glob("rng_state*.pth"))
    marker = tmp_path / "pwned"
    subprocess.run([sys.executable, "-c", MALICIOUS.format(marker=marker, path=target)], check=True)
    result = promptbake(*args, "training.max_steps=4", "--resume", env=env)
    assert result.returncode == 2
    assert f"{target}: refused to resume: not a plain tensor file" in result.stderr
    assert not marker.exists(), "the pickle's payload ran"
    reliability_log("faults_injected", 1)
