"""A teacher/eval backend that calls any OpenAI-compatible `/v1/chat/completions` endpoint (vLLM, llama.cpp
server, Ollama, hosted APIs), behind the same interface as `LocalBackend`:

    backend = OpenAIBackend(EndpointSpec(base_url="http://127.0.0.1:8080/v1", model="smollm2"))
    backend.generate(conversations, sampling, on_batch=...) -> list[Completion]

Requests run concurrently on a thread pool; 429, 5xx, timeouts, dropped connections and garbled bodies are
retried with exponential backoff and jitter, any other 4xx fails at once. The API key is read from an
environment variable at request time: it is never a config field, and never appears in a log or an error.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from data_tools.backends import Completion
from data_tools.spec import EndpointSpec, Sampling
from promptbake.config import InputError

log = logging.getLogger(__name__)


class _Transient(Exception):
    """A failure worth retrying; `kind` picks the message if retries run out."""

    def __init__(self, kind: str, detail: str):
        super().__init__(detail)
        self.kind = kind


class OpenAIBackend:
    """Concurrent chat completions against an OpenAI-compatible endpoint."""

    def __init__(self, spec: EndpointSpec):
        self.spec = spec
        self.url = spec.base_url.rstrip("/") + "/chat/completions"

    def generate(
        self,
        conversations: list[list[dict]],
        sampling: Sampling,
        on_batch: Callable[[list[int], list[Completion]], None] | None = None,
    ) -> list[Completion]:
        """Answer every conversation with `sampling.n` samples; `on_batch(indices, completions)` is called on
        this thread as requests finish, with indices into `conversations`. Results are in input order."""
        results: list[Completion | None] = [None] * len(conversations)
        stop = threading.Event()  # set on the first failure, so that requests in flight stop retrying
        pool = ThreadPoolExecutor(max_workers=self.spec.concurrency, thread_name_prefix="openai-backend")
        try:
            pending: dict[Future, int] = {
                pool.submit(self._complete, conv, sampling, sampling.seed + i * sampling.n, stop): i
                for i, conv in enumerate(conversations)
            }
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                # result() re-raises a request's failure (its InputError) here, on the caller's thread
                finished = sorted((pending.pop(f), f.result()) for f in done)
                for i, completion in finished:
                    results[i] = completion
                if on_batch is not None:
                    on_batch([i for i, _ in finished], [c for _, c in finished])
        finally:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
        return results  # type: ignore[return-value]

    def _complete(self, conversation: list[dict], sampling: Sampling, seed: int, stop: threading.Event
                  ) -> Completion:
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
                "model": self.spec.model,
                "messages": conversation,
                "max_tokens": sampling.max_new_tokens,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "seed": seed + len(texts),
            }
            if missing > 1:
                body["n"] = missing
            if sampling.top_k > 0:  # not an OpenAI field: hosted APIs may refuse it, so only sent when asked
                body["top_k"] = sampling.top_k
            response = self._post(body, stop)
            choices = response["choices"][:missing]
            usage = response.get("usage") or {}
            prompt_tokens = prompt_tokens or int(usage.get("prompt_tokens") or 0)
            # usage counts every choice of the request together; split it evenly among them
            per_choice = round(int(usage.get("completion_tokens") or 0) / len(response["choices"]))
            for choice in choices:
                texts.append((choice["message"].get("content") or "").strip())
                lengths.append(per_choice)
        return Completion(texts, prompt_tokens, lengths, time.perf_counter() - t0)

    def _post(self, body: dict, stop: threading.Event) -> dict:
        """POST one request, retrying transient failures; returns the parsed response."""
        data = json.dumps(body).encode()
        last: _Transient | None = None
        for attempt in range(self.spec.max_retries + 1):
            if attempt:
                delay = self.spec.backoff_s * 2 ** (attempt - 1) * random.uniform(0.5, 1.5)
                log.info("retry %d/%d of %s in %.2f s after %s", attempt, self.spec.max_retries, self.url,
                         delay, last)
                if stop.wait(delay):  # another request failed for good: don't keep a dead run busy
                    break
            try:
                return self._post_once(data)
            except _Transient as e:
                last = e
        assert last is not None
        if last.kind == "unreachable":
            raise InputError(f"cannot reach {self.url}: {last} (after {self.spec.max_retries} retries)")
        if last.kind == "malformed":
            raise InputError(f"malformed response from {self.url}: {last}")
        raise InputError(f"{self.url} kept failing after {self.spec.max_retries} retries; last: {last}")

    def _post_once(self, data: bytes) -> dict:
        headers = {"Content-Type": "application/json", "User-Agent": "promptbake"}
        key = os.environ.get(self.spec.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.spec.timeout_s) as response:
                raw = response.read()
        except urllib.error.HTTPError as e:
            message = self._redact(_server_message(e))
            if e.code == 429 or e.code >= 500:
                raise _Transient("status", f"status {e.code}: {message}") from None
            raise self._client_error(e.code, message) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise _Transient("unreachable", self._redact(str(reason) or type(e).__name__)) from None
        try:
            parsed = json.loads(raw)
            choices = parsed["choices"]
            if not choices or not all(isinstance(c.get("message"), dict) for c in choices):
                raise ValueError("no choice with a message")
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            snippet = self._redact(raw[:200].decode("utf-8", "replace"))
            raise _Transient("malformed", f"{type(e).__name__}: {e}; body starts {snippet!r}") from None
        return parsed

    def _client_error(self, status: int, message: str) -> InputError:
        """A 4xx other than 429: the request itself is wrong, so retrying cannot help."""
        env = self.spec.api_key_env
        if status in (401, 403):
            source = f"${env}" if os.environ.get(env) else f"${env}, which is unset,"
            return InputError(f"endpoint {self.url} rejected the API key from {source} (status {status}): "
                              f"{message}")
        if status == 404:
            return InputError(f"{self.url}: not found (status 404): check that base_url ends in the API version "
                              f"(e.g. /v1) and that the server serves model {self.spec.model!r}: {message}")
        return InputError(f"{self.url} refused the request (status {status}): {message}")

    def _redact(self, text: str) -> str:
        """Servers may echo the key back in an error; never let it into a message or a log."""
        key = os.environ.get(self.spec.api_key_env)
        return text.replace(key, "***") if key else text


def _server_message(error: urllib.error.HTTPError) -> str:
    """The `error.message` of an OpenAI-style error body, else the start of the body, else the reason."""
    try:
        raw = error.read()
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        err = json.loads(raw).get("error")
        message = err.get("message") if isinstance(err, dict) else err
        if message:
            return str(message)
    except (ValueError, AttributeError):
        pass
    return raw[:200].decode("utf-8", "replace").strip() or str(error.reason)
