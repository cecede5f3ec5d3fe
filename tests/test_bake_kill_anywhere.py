"""Kill anywhere in a whole bake: `promptbake bake`, started as a user starts it, is SIGKILLed at a point in every
stage (synthesis, the teacher's journal, the dataset files; SFT after a checkpoint, between a validation point and
its checkpoint, and while its adapter is written; the on-policy round likewise; the eval between arms; the export
while it writes) and started again with the same command each time. It ends with the result of an uninterrupted
bake of the same spec and seed: every eval arm's held-out answers, metrics.json and the verdict (timing aside), the
data and validation curves, and the merged weights and every adapter bit for bit.

The kill points are chosen by watching files appear (journal lines, a checkpoint's trainer_state.json, a
validation point, an eval arm's answers, an output's temporary directory), never by sleeping; each is checked to
have landed in its stage (bake.json does not list that stage as finished, and lists the one before)."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A recipe that moves the tiny random model in a few steps, so that validation keeps a trained step (at the bake
# recipe's 3e-4 the kept step is 0, the untrained adapter, and the merged weights would be the base's whatever
# the training did)
RECIPE = """\
model: {model}
dataset: set-by-the-bake
method: lora
precision: fp32
report_to: none
lora: {{r: 16, alpha: 32, dropout: 0.0, target_modules: all-linear}}
training: {{per_device_train_batch_size: 4, learning_rate: 5.0e-3, lr_scheduler_type: cosine, warmup_steps: 0,
           max_length: 512, logging_steps: 5, seed: 0}}
"""

# Every stage on: synthesis (8 new inputs, in several rounds: the random teacher's long candidates are refused),
# one teacher batch per input (many journal appends), 6 SFT steps validated every 2 with a checkpoint at each,
# one DPO round, the eval's five arms and the content judge, the export. The tiny spec's `short` rule becomes
# "at least one word": the untrained model answers nothing, a trained one something, so validation prefers a
# trained step.
OVERRIDES = ["report_to=none", "synthesis_min_inputs=20", "spec.synthesis.max_new_tokens=14",
             "spec.teacher.batch_size=2", "spec.rules.2.id=words", "spec.rules.2.text=Answer in words.",
             "spec.rules.2.check.kind=min_words", "spec.rules.2.check.n=1",
             "budget.min_steps=4", "budget.max_steps=6", "validation.fraction=0.3", "validation.min_inputs=2",
             "validation.min_train_inputs=4", "validation.evaluations=3", "validation.patience=2",
             "rounds.method=dpo", "rounds.max_rounds=1", "rounds.samples=2", "rounds.min_pairs=1",
             "rounds.epochs=1", "rounds.learning_rate=1e-2", "eval_batch_size=8", "judge=true", "drift=false",
             "export=true"]

TIMING = {"latency_s_per_request", "throughput_requests_per_s", "time_s", "examples_per_s", "stage_times_s",
          "profile_s"}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def curve_steps(path: Path) -> list[int]:
    return [p["step"] for p in lines(path)]


def fresh(path: Path, since_ns: int) -> bool:
    """Written by the process started at `since_ns` (not left by an earlier, killed one)."""
    try:
        return path.stat().st_mtime_ns >= since_ns
    except FileNotFoundError:
        return False


def finished_stages(run: Path) -> list[str]:
    state = run / "bake.json"
    return list(json.loads(state.read_text())["stages"]) if state.exists() else []


def kill_points(run: Path):
    """(name, the stage it must land in, ready(launched_ns, lines_at_launch) -> bool), in bake order."""
    data, sft, round1, ev = run / "data", run / "sft", run / "rounds" / "1", run / "eval"
    return [
        ("synthesis: after its first round's inputs were journaled", "data",
         lambda t, n: count_lines(data / "synthesized.jsonl") >= 1),
        ("data: teacher journal, 2 inputs answered", "data",
         lambda t, n: count_lines(data / "samples.jsonl") >= 2),
        ("data: teacher journal, 3 more inputs answered after the resume", "data",
         lambda t, n: count_lines(data / "samples.jsonl") >= n + 3),
        ("data: journal complete, the datasets being written", "data",
         lambda t, n: any(fresh(p, t) for p in data.glob(".hf.*"))),
        ("sft: checkpoint-2 saved", "sft",
         lambda t, n: (sft / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()),
        ("sft: validation point of step 4 measured, before its checkpoint", "sft",
         lambda t, n: 4 in curve_steps(sft / "validation.jsonl")),
        ("sft: training over, the adapter being written", "sft",
         lambda t, n: any(fresh(p, t) for p in sft.glob(".adapter.*"))),
        ("rounds: round 1's checkpoint-2 saved", "rounds",
         lambda t, n: (round1 / "checkpoints" / "checkpoint-2" / "trainer_state.json").exists()),
        ("rounds: round 1 stopped by validation, its adapter being written", "rounds",
         lambda t, n: any(fresh(p, t) for p in round1.glob(".adapter.*"))),
        ("eval: base_prompted arm answered", "eval",
         lambda t, n: fresh(ev / "answers_base_prompted.jsonl", t)),
        ("eval: tuned_unprompted arm answered (constant arm and judge to come)", "eval",
         lambda t, n: fresh(ev / "answers_tuned_unprompted.jsonl", t)),
        ("export: merged weights being written under their temporary name", "export",
         lambda t, n: any(fresh(p, t) for p in run.glob(".merged.*"))),
    ]


def bake_command(spec: Path, model: Path, recipe: Path, run: Path) -> list[str]:
    return [sys.executable, "-m", "promptbake.cli", "bake", str(spec), *OVERRIDES, f"model={model}",
            f"recipe={recipe}", f"output_dir={run}"]


def bake_env() -> dict:
    # one thread: every process computes the same sums in the same order (and two bakes share 2 cores)
    return {**os.environ, "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}


def launch(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=bake_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_at(cmd: list[str], log: Path, ready, journal: Path, timeout: float = 240) -> bool:
    """Start the bake, SIGKILL its process group as soon as `ready` holds; False if it ended first."""
    launched = time.time_ns()
    at_launch = count_lines(journal)
    proc = launch(cmd, log)
    deadline = time.time() + timeout
    while proc.poll() is None and not ready(launched, at_launch) and time.time() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def untimed(obj, run: Path):
    """`obj` without wall-clock fields and figures, the run directory's path written as <run>."""
    if isinstance(obj, dict):
        return {k: untimed(v, run) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [untimed(v, run) for v in obj]
    if isinstance(obj, str):  # the verdict's sentences quote latencies ("0.07 s per request")
        return re.sub(r"\b\d+(?:\.\d+)? s\b", "<seconds> s", obj.replace(str(run), "<run>"))
    return obj


def assert_same_weights(a: Path, b: Path) -> None:
    import torch
    from safetensors.torch import load_file

    ta, tb = load_file(a), load_file(b)
    assert ta.keys() == tb.keys(), a
    for key in ta:
        assert torch.equal(ta[key], tb[key]), f"{a.parent.name}: {key} differs by " \
                                              f"{(ta[key] - tb[key]).abs().max().item():.3g}"


@pytest.mark.slow  # ~1.5-2 minutes on 2 cores: 13 bake processes
def test_bake_killed_in_every_stage_resumes_to_the_same_answers_and_weights(tiny_spec, tiny_model_dir, tmp_path,
                                                                          reliability_log):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(model=tiny_model_dir))
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the uninterrupted bake runs beside the killed ones
    reference = launch(bake_command(tiny_spec, tiny_model_dir, recipe, straight), tmp_path / "straight.log")
    cmd = bake_command(tiny_spec, tiny_model_dir, recipe, killed)
    landed = []
    for k, (name, stage, ready) in enumerate(kill_points(killed)):
        log = tmp_path / f"killed-{k}.log"
        assert kill_at(cmd, log, ready, killed / "data" / "samples.jsonl"), \
            f"the bake ended before the kill point {name!r}:\n{log.read_text()[-3000:]}"
        done = finished_stages(killed)
        assert stage not in done, f"{name}: the kill landed after the {stage} stage finished ({done})"
        assert stage == "data" or done[-1] == {"sft": "data", "rounds": "sft", "eval": "rounds",
                                                "export": "eval"}[stage], f"{name}: landed before {stage} ({done})"
        if name.startswith("synthesis"):
            assert not (killed / "data" / "samples.jsonl").exists(), f"{name}: landed after synthesis ended"
        landed.append(name)
    print("killed at:", *landed, sep="\n  ")
    final = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=bake_env())
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert reference.wait(timeout=300) == 0, (tmp_path / "straight.log").read_text()[-3000:]

    # every eval arm's held-out answers
    arms = sorted(p.name for p in (straight / "eval").glob("answers_*.jsonl"))
    assert arms == sorted(p.name for p in (killed / "eval").glob("answers_*.jsonl"))
    assert len(arms) == 5, arms  # base_prompted, _repaired, _best_of_n, tuned_unprompted, constant
    for name in arms:
        assert lines(straight / "eval" / name) == lines(killed / "eval" / name), name
    # the metrics (judge included), the verdict and what bake.json recorded of every stage, timing aside
    for rel in ("eval/metrics.json", "verdict.json", "bake.json"):
        a, b = json.loads((straight / rel).read_text()), json.loads((killed / rel).read_text())
        assert untimed(a, straight) == untimed(b, killed), rel
    # what led there: the data, the validation curves (each step once), the round's own samples
    for rel in ("data/synthesized.jsonl", "data/sft_train.jsonl", "data/prefs_train.jsonl", "data/rejects.jsonl",
                "data/train_inputs.jsonl", "data/val_inputs.jsonl", "data/eval_inputs.jsonl",
                "sft/validation.jsonl", "rounds/1/samples.jsonl", "rounds/1/validation.jsonl"):
        assert lines(straight / rel) == lines(killed / rel), rel
    for rel in ("sft/validation.jsonl", "rounds/1/validation.jsonl"):
        steps = curve_steps(killed / rel)
        assert steps == sorted(set(steps)), f"{rel}: a step measured twice ({steps})"
    # the weights, bit for bit (no tolerance needed): a resumed run reloads the optimizer, scheduler and RNG state
    # of its checkpoint and skips the batches already trained on, and every process sums in the same order
    for rel in ("merged/model.safetensors", "sft/adapter/adapter_model.safetensors",
                "sft/best_adapter/adapter_model.safetensors", "rounds/1/adapter/adapter_model.safetensors",
                "rounds/1/best_adapter/adapter_model.safetensors"):
        assert_same_weights(straight / rel, killed / rel)
    # not a vacuous comparison: the kept adapter is a trained step, so the merged weights are not the base's
    kept = json.loads((straight / "verdict.json").read_text())["kept_step"]
    assert kept and kept > 0, "validation kept the untrained adapter: the test would compare the base with itself"
    assert len(landed) == len(kill_points(killed))
    reliability_log("faults_injected", len(landed))
    reliability_log("bake_kill_points_identical", len(landed))


def test_a_validation_stop_leaves_no_checkpoint_to_resume_past_it(tiny_spec, tmp_path):
    """The decision to stop is not in a checkpoint: one at the stopping step (save_steps asks for it) would let a
    bake killed before SFT's end resume there and train past the stop. Without it, the resume starts from the
    checkpoint before, replays the steps and stops at the same one."""
    from transformers import TrainerControl, TrainerState

    from data_tools.spec import load_spec
    from sft.validation import ValidationCallback, ValidationPoint

    callback = ValidationCallback(load_spec(tiny_spec), [("x", None)], tmp_path, every=2, patience=1, run_info={})
    callback.curve = [ValidationPoint(0, None, 0.5, {"a": 0.5})]

    def measure(model, state):  # worse than step 0: with patience 1, a stop
        callback.curve.append(ValidationPoint(state.global_step, 1.0, 0.0, {"a": 0.0}))
        return callback.curve[-1]

    callback.measure = measure
    control = TrainerControl(should_save=True)  # as the trainer's save_steps set it
    callback.on_step_end(None, TrainerState(global_step=2, max_steps=10), control)
    assert control.should_training_stop and not control.should_save
