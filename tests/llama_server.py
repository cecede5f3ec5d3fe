"""A real llama.cpp server (llama-cpp-python's `python -m llama_cpp.server`) on a free loopback port, for the
tests that serve a GGUF file the way users do. Not a test module: tests import it (pytest puts tests/ on
sys.path)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI: a missing llama-cpp-python there is a broken install, not a choice."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the install is incomplete)")
    pytest.skip(reason)


def require_server() -> None:
    require(all(find_spec(m) for m in ("llama_cpp", "uvicorn", "fastapi")),
            "llama-cpp-python[server] is not installed (bash scripts/setup_env.sh installs it)")


def chat(base_url: str, messages: list[dict], max_tokens: int, **fields) -> str:
    request = urllib.request.Request(
        f"{base_url}/chat/completions", headers={"Content-Type": "application/json"},
        data=json.dumps({"messages": messages, "max_tokens": max_tokens, **fields}).encode())
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.load(response)["choices"][0]["message"]["content"]


@contextmanager
def serve_gguf(gguf: Path, log_dir: Path, *extra_args: str):
    """Start the server on `gguf` (plus any server flags, e.g. `--lora_path FILE`), wait until it has
    answered one real generation, yield its base URL (…/v1); stop it afterwards."""
    require_server()
    port = free_port()
    log_path = log_dir / f"server-{port}.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false",
                                 *extra_args], stdout=log_file, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                    break
            except OSError:  # refused while it loads the model (URLError is an OSError)
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not answer within 60 s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.25)
        # one real generation up front: a llama.cpp build that crashes on this CPU should fail here, plainly,
        # not as "cannot reach" in every test
        try:
            chat(base_url, [{"role": "user", "content": "hi"}], max_tokens=1)
        except OSError as e:
            time.sleep(0.5)  # let a crashed server's exit status settle
            pytest.fail(f"llama_cpp.server failed its first generation ({e}; exit status {proc.poll()}; -11 is a "
                        "segfault, e.g. a -march=native build using AMX that this VM does not enable: reinstall "
                        f"with CMAKE_ARGS=-DGGML_NATIVE=OFF):\n{log_path.read_text()[-3000:]}")
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
