"""A teacher/eval backend that calls OpenAI-compatible `/v1/chat/completions` endpoints (vLLM, SGLang, llama.cpp
server, Ollama, hosted APIs), behind the same interface as `LocalBackend`:

    backend = OpenAIBackend(EndpointSpec(base_url="http://127.0.0.1:8080/v1", model="smollm2"))
    backend.generate(conversations, sampling, on_batch=...) -> list[Completion]
    for group in backend.stream(conversations, sampling): ...   # [(index, Completion), ...] as they finish

Built to stream millions of requests: a fixed set of worker threads (one per request the endpoints take at
once) pulls conversations from the iterable lazily, at most two per worker ahead of the answers, so memory
does not grow with the number of inputs. Several endpoints (replicas of one model) are served round-robin
with per-endpoint limits and backoff (data_tools/http_endpoints.py). Finished answers come back in groups,
by count (`journal_every`) and by time (`journal_interval_s`), so that a caller journaling them fsyncs once
per group. 429 (honouring `Retry-After`), 5xx, timeouts, dropped connections and garbled bodies are retried,
on another endpoint when there is one; any other 4xx fails at once. The API key is read from an environment
variable at request time: it is never a config field, and never appears in a log or an error.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator

from data_tools.backends import Completion
from data_tools.http_endpoints import Connections, Endpoint, EndpointPool, Transient, retry_after_s
from data_tools.spec import EndpointSpec, Sampling
from promptbake.core.config import InputError

log = logging.getLogger(__name__)


class _Stopped(Exception):
    """The run ended (another request failed for good): a worker drops what it was doing."""


class OpenAIBackend:
    """Concurrent chat completions against one or several OpenAI-compatible endpoints."""

    def __init__(self, endpoints: EndpointSpec | list[EndpointSpec], journal_every: int = 256,
                 journal_interval_s: float = 2.0):
        specs = [endpoints] if isinstance(endpoints, EndpointSpec) else list(endpoints)
        if not specs:
            raise ValueError("OpenAIBackend needs at least one endpoint")
        self.pool = EndpointPool(specs)
        self.max_retries = max(s.max_retries for s in specs)
        self.journal_every, self.journal_interval_s = journal_every, journal_interval_s

    def generate(
        self,
        conversations: Iterable[list[dict]],
        sampling: Sampling,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
        skip: Collection[int] = (),
    ) -> list[Completion]:
        """Answer every conversation with `sampling.n` samples; `on_batch(indices, completions)` is called on
        this thread with each group of finished requests, with indices into `conversations`. Results are in
        input order. `skip`: indices of `conversations` answered before (a resumed journal), not sent (None in
        the result); a conversation's seed comes from the conversation itself (`Sampling.stream_seed`), so the
        others are sent as they would be without `skip`."""
        found: dict[int, Completion] = {}
        for group in self.stream(conversations, sampling, skip):
            found.update(group)
            if on_batch is not None:
                on_batch([i for i, _ in group], [c for _, c in group])
        return [found.get(i) for i in range(len(found) + len(skip))]  # type: ignore[misc]

    def stream(self, conversations: Iterable[list[dict]], sampling: Sampling, skip: Collection[int] = ()
               ) -> Iterator[list[tuple[int, Completion]]]:
        """Groups of (index, completion) as requests finish: a group closes at `journal_every` answers or
        `journal_interval_s` after its first, whichever comes first. The iterable is read lazily, at most two
        conversations per worker ahead of the answers. A request that fails for good raises its InputError
        here, on the caller's thread, and stops the others."""
        todo: queue.SimpleQueue = queue.SimpleQueue()
        done: queue.SimpleQueue = queue.SimpleQueue()
        stop = threading.Event()
        workers = [threading.Thread(target=self._work, args=(todo, done, sampling, stop), daemon=True,
                                    name=f"openai-backend-{k}") for k in range(self.pool.capacity)]
        window = 2 * len(workers)  # enough queued that no worker waits on this thread between requests
        source = ((i, c) for i, c in enumerate(conversations) if i not in skip)
        ahead = 0  # conversations handed to the workers and not yet answered
        exhausted = False
        group: list[tuple[int, Completion]] = []
        deadline = 0.0
        for worker in workers:
            worker.start()
        try:
            while True:
                while not exhausted and ahead < window:
                    item = next(source, None)
                    if item is None:
                        exhausted = True
                    else:
                        todo.put(item)
                        ahead += 1
                if ahead == 0:
                    break
                try:
                    index, outcome = done.get(timeout=max(0.0, deadline - time.monotonic()) if group else None)
                except queue.Empty:  # the group's time is up
                    pass
                else:
                    ahead -= 1
                    if isinstance(outcome, BaseException):
                        raise outcome  # the request's InputError, on the caller's thread
                    if not group:
                        deadline = time.monotonic() + self.journal_interval_s
                    group.append((index, outcome))
                if group and (len(group) >= self.journal_every or time.monotonic() >= deadline or ahead == 0):
                    yield group
                    group = []
        finally:
            stop.set()
            self.pool.wake()
            for _ in workers:
                todo.put(None)
        self._report_failed_endpoints()

    def endpoint_summary(self) -> list[dict]:
        """Per endpoint, over this backend's life: requests sent, answered, failures by kind, last error."""
        return self.pool.summary()

    def _report_failed_endpoints(self) -> None:
        summary = self.endpoint_summary()
        if len(summary) < 2:
            return
        for e in summary:
            if e["failures"] and e["answered"] < e["requests"] / 2:
                log.warning("endpoint %s answered %d of the %d requests sent to it (last error: %s); the other "
                            "endpoints answered the rest", e["base_url"], e["answered"], e["requests"],
                            e["last_error"])

    def _work(self, todo: queue.SimpleQueue, done: queue.SimpleQueue, sampling: Sampling,
              stop: threading.Event) -> None:
        connections = Connections()
        try:
            while (item := todo.get()) is not None:
                index, conversation = item
                try:
                    # seeded by the conversation, not its place in the list: a resume or a shard sends the same
                    seed = sampling.stream_seed(json.dumps(conversation, sort_keys=True), 0, bits=31)
                    completion = self._complete(conversation, sampling, seed, stop, connections)
                except _Stopped:
                    return
                except Exception as e:  # handed to the caller's thread, which raises it
                    done.put((index, e))
                    return
                done.put((index, completion))
        finally:
            connections.close()

    def _complete(self, conversation: list[dict], sampling: Sampling, seed: int, stop: threading.Event,
                  connections: Connections) -> Completion:
        """All n samples of one conversation. `n` is asked for in one request; a server that returns fewer
        choices (llama.cpp ignores `n`) gets one more request per missing sample, each with its own seed,
        since a repeated seed would repeat the sample. `latency_s` is the wall time of all its requests."""
        t0 = time.perf_counter()
        texts: list[str] = []
        lengths: list[int] = []
        prompt_tokens = 0
        while len(texts) < sampling.n:
            missing = sampling.n - len(texts)
            body = {
                "messages": conversation,
                "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "seed": (seed + len(texts)) % 2**31,  # a 32-bit signed seed on every server
            }
            if missing > 1:
                body["n"] = missing
            if sampling.top_k > 0:  # not an OpenAI field: hosted APIs may refuse it, so only sent when asked
                body["top_k"] = sampling.top_k
            response = self._post(body, stop, connections)
            choices = response["choices"][:missing]
            usage = response.get("usage") or {}
            prompt_tokens = prompt_tokens or int(usage.get("prompt_tokens") or 0)
            # usage counts every choice of the request together; split it evenly among them
            per_choice = round(int(usage.get("completion_tokens") or 0) / len(response["choices"]))
            for choice in choices:
                texts.append((choice["message"].get("content") or "").strip())
                lengths.append(per_choice)
        return Completion(texts, prompt_tokens, lengths, time.perf_counter() - t0)

    def _post(self, body: dict, stop: threading.Event, connections: Connections) -> dict:
        """POST one request to the next free endpoint, retrying transient failures: each retry waits for an
        endpoint that is not backing off, so on one endpoint it waits out that endpoint's backoff, and with
        several it goes to one it has not failed on yet. Returns the parsed response."""
        last: tuple[Endpoint, Transient] | None = None
        failed_on: set[Endpoint] = set()
        for attempt in range(self.max_retries + 1):
            taken = self.pool.acquire(stop, failed_on)
            if taken is None:
                raise _Stopped
            endpoint, sent_at = taken
            if attempt:
                log.debug("retry %d/%d on %s after %s", attempt, self.max_retries, endpoint.url, last[1])
            try:
                response = self._post_once(endpoint, {**body, **endpoint.spec.extra_body, "model": endpoint.spec.model},
                                           connections)
            except Transient as e:
                self.pool.fail(endpoint, e, sent_at)
                last = (endpoint, e)
                failed_on.add(endpoint)
                continue
            except BaseException:
                self.pool.release(endpoint)
                raise
            self.pool.release(endpoint, answered=True)
            return response
        assert last is not None
        endpoint, error = last
        if error.kind == "unreachable":
            raise InputError(f"cannot reach {endpoint.url}: {error} (after {self.max_retries} retries)")
        if error.kind == "malformed":
            raise InputError(f"malformed response from {endpoint.url}: {error}")
        raise InputError(f"{endpoint.url} kept failing after {self.max_retries} retries; last: {error}")

    def _post_once(self, endpoint: Endpoint, body: dict, connections: Connections) -> dict:
        headers = {"Content-Type": "application/json", "User-Agent": "promptbake"}
        key = os.environ.get(endpoint.spec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        try:
            status, response_headers, raw = connections.post(endpoint, json.dumps(body).encode(), headers)
        except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, dropped mid-answer
            detail = str(e) or type(e).__name__
            label = "timeout" if isinstance(e, TimeoutError) else "unreachable"
            raise Transient("unreachable", self._redact(detail), label=label) from None
        if status >= 400:
            message = self._redact(_server_message(raw, status))
            if status == 429 or status >= 500:
                wait = retry_after_s(response_headers.get("Retry-After")) if status in (429, 503) else None
                detail = f"status {status}: {message}" + (f" (Retry-After {wait:.1f} s)" if wait is not None else "")
                raise Transient("status", detail, label=f"status {status}", retry_after=wait)
            raise self._client_error(endpoint, status, message)
        try:
            parsed = json.loads(raw)
            choices = parsed["choices"]
            if not choices or not all(isinstance(c.get("message"), dict) for c in choices):
                raise ValueError("no choice with a message")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            snippet = self._redact(raw[:200].decode("utf-8", "replace"))
            raise Transient("malformed", f"{type(e).__name__}: {e}; body starts {snippet!r}") from None
        return parsed

    def _client_error(self, endpoint: Endpoint, status: int, message: str) -> InputError:
        """A 4xx other than 429 (or a 3xx, which is not followed): the request itself is wrong, so retrying
        cannot help."""
        env, url = endpoint.spec.api_key_env, endpoint.url
        if status in (401, 403):
            source = f"${env}" if os.environ.get(env) else f"${env}, which is unset,"
            return InputError(f"endpoint {url} rejected the API key from {source} (status {status}): {message}")
        if status == 404:
            return InputError(f"{url}: not found (status 404): check that base_url ends in the API version "
                              f"(e.g. /v1) and that the server serves model {endpoint.spec.model!r}: {message}")
        return InputError(f"{url} refused the request (status {status}): {message}")

    def _redact(self, text: str) -> str:
        """Servers may echo the key back in an error; never let it into a message or a log."""
        for endpoint in self.pool.endpoints:
            key = os.environ.get(endpoint.spec.api_key_env)
            if key:
                text = text.replace(key, "***")
        return text


def _server_message(raw: bytes, status: int) -> str:
    """The `error.message` of an OpenAI-style error body, else the start of the body, else the status's name."""
    try:
        err = json.loads(raw).get("error")
        message = err.get("message") if isinstance(err, dict) else err
        if message:
            return str(message)
    except (ValueError, AttributeError):
        pass
    return raw[:200].decode("utf-8", "replace").strip() or http.client.responses.get(status, "")
