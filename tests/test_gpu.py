"""promptbake's training path on a CUDA device, on the tiny model: a bf16 LoRA run learns with the CPU fast paths
off, and QLoRA's 4-bit base loads onto the GPU and trains; where vLLM is installed, the vLLM teacher
(`teacher.backend: vllm`) and GRPO generating with vLLM (`training.use_vllm`), on the default model. Skipped without
CUDA (tests/conftest.py); scripts/gpu_check.sh runs them with `pytest -m gpu`."""

import json
import math
from pathlib import Path

import pytest
import torch

from sft.recipe import load_for_training
from sft.train import SFTRecipe
from sft.train import main as train

pytestmark = pytest.mark.gpu

THINGS = ["cats", "dogs", "rain", "snow", "tea", "bread", "maps", "ships"]


def sft_rows(path: Path) -> Path:
    """The same rule-following answer shape for every input: a loss a tiny model brings down in a few steps."""
    path.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"Tell me about {t}."}],
                                        "completion": [{"role": "assistant", "content": f"ok: {t} are nice"}]}) + "\n"
                            for t in THINGS * 2))
    return path


def losses(run_dir: Path, step: int) -> list[float]:
    state = json.loads((run_dir / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    return [h["loss"] for h in state["log_history"] if "loss" in h]


def recipe(tiny_model_dir, tmp_path, **fields) -> SFTRecipe:
    return SFTRecipe(model=str(tiny_model_dir), dataset=str(sft_rows(tmp_path / "sft_train.jsonl")),
                     output_dir=str(tmp_path / "run"), report_to="none", lora={"r": 8},
                     training={"max_steps": 10, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
                               "logging_steps": 1, "save_steps": 10, "max_length": 64}, **fields)


def test_bf16_lora_sft_learns_with_the_cpu_fast_paths_off(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PROMPTBAKE_FAST_PATHS", raising=False)  # the device alone must turn them off
    adapter_dir = train(recipe(tiny_model_dir, tmp_path))
    out = capsys.readouterr().out
    assert "precision=bf16" in out  # `auto` picks bf16 on a GPU that has it (every H100/H200)
    fast_paths = next(line for line in out.splitlines() if "CPU fast paths:" in line)
    assert "off" in fast_paths and "cuda" in fast_paths, fast_paths
    history = losses(tmp_path / "run", 10)
    assert len(history) == 10 and all(math.isfinite(x) for x in history), history
    # LoRA on a random tiny model moves a near-uniform loss (ln 49152 = 10.8) only so far: 10.64 -> 10.30 over
    # these 10 steps on a CPU in fp32
    assert sum(history[-3:]) / 3 < sum(history[:3]) / 3 - 0.15, history
    assert json.loads((adapter_dir / "promptbake_run.json").read_text())["precision"] == "bf16"


def test_qlora_base_loads_in_4bit_on_the_gpu(tiny_model_dir, tmp_path):
    import bitsandbytes as bnb

    model, tokenizer = load_for_training(recipe(tiny_model_dir, tmp_path, method="qlora"), "bf16")
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down in each of the 2 layers
    for layer in quantized:
        assert layer.weight.device.type == "cuda" and layer.weight.dtype == torch.uint8
        assert layer.weight.quant_state.quant_type == "nf4"
    reference, _ = load_for_training(recipe(tiny_model_dir, tmp_path), "bf16")
    ids = tokenizer("quick question about tea", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        q = model(ids.to(model.device)).logits.float().flatten()
        r = reference.to("cuda")(ids.to("cuda")).logits.float().flatten()
    assert torch.isfinite(q).all()
    assert torch.nn.functional.cosine_similarity(q, r, dim=0) > 0.9  # nf4 keeps the model, roughly


def test_qlora_sft_trains_on_the_gpu(tiny_model_dir, tmp_path):
    adapter_dir = train(recipe(tiny_model_dir, tmp_path, method="qlora"))
    history = losses(tmp_path / "run", 10)
    assert all(math.isfinite(x) for x in history) and history[-1] < history[0], history
    assert (adapter_dir / "adapter_model.safetensors").exists()


DEMO_SPEC = Path(__file__).resolve().parents[1] / "configs" / "specs" / "demo_style.yaml"


def test_vllm_teacher_builds_data_and_answers_as_the_local_backend(tmp_path):
    """`teacher.backend: vllm` (vLLM's offline engine in this process, n samples per request, prefix caching): a
    data build, then greedy fp32 answers equal to the local backend's for the same prompted conversations."""
    pytest.importorskip("vllm", reason="vllm is not installed in this environment (pip install vllm)")
    from data_tools import build
    from data_tools.backends import LocalBackend, VLLMBackend
    from data_tools.inputs import load_inputs
    from data_tools.spec import Sampling, load_spec
    from promptbake.core.config import DEFAULT_MODEL

    spec = load_spec(DEMO_SPEC, ["teacher.backend=vllm", "teacher.vllm.gpu_memory_utilization=0.3",
                                 "inputs.limit=16", f"output_dir={tmp_path / 'data'}"])
    manifest = build.main(spec)
    assert manifest["counts"]["samples"] == 2 * manifest["counts"]["train_inputs"] > 0
    conversations = [spec.prompted_messages(t) for t in list(load_inputs(spec))[:8]]
    greedy = Sampling(max_new_tokens=32)
    served = VLLMBackend(DEFAULT_MODEL, gpu_memory_utilization=0.3, dtype="float32").generate(conversations, greedy)
    local = LocalBackend.from_name(DEFAULT_MODEL).generate(conversations, greedy)
    assert [c.prompt_tokens for c in served] == [c.prompt_tokens for c in local]
    agreement = sum(s.texts == a.texts for s, a in zip(served, local)) / len(local)
    assert agreement >= 0.75, [(s.texts, a.texts) for s, a in zip(served, local)]


def test_grpo_generates_with_vllm_colocated(tmp_path):
    """GRPO with `training.use_vllm` (TRL's colocate mode: vLLM on the training GPU, weights synced each step)."""
    pytest.importorskip("vllm", reason="vllm is not installed in this environment (pip install vllm)")
    from promptbake.core.config import DEFAULT_MODEL
    from sft.rl import RLRecipe
    from sft.rl import main as train_rl

    recipe = RLRecipe(model=DEFAULT_MODEL, dataset=str(sft_rows(tmp_path / "rows.jsonl")), spec=str(DEMO_SPEC),
                      output_dir=str(tmp_path / "rl"), report_to="none", num_generations=4, max_completion_length=16,
                      training={"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2,
                                "use_vllm": True, "vllm_gpu_memory_utilization": 0.2})
    adapter_dir = train_rl(recipe)
    state = json.loads((tmp_path / "rl" / "checkpoints" / "checkpoint-2" / "trainer_state.json").read_text())
    rewards = [h["reward"] for h in state["log_history"] if "reward" in h]
    assert len(rewards) == 2 and all(0.0 <= r <= 1.0 for r in rewards), rewards
    assert (adapter_dir / "adapter_model.safetensors").exists()
