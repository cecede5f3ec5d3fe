"""The endpoints behind the HTTP backend: replicas of one model served round-robin, each with its own limit on
requests in flight and its own backoff, reached over keep-alive connections.

An endpoint that fails (unreachable, timed out, 429, 5xx, a garbled body) is paused: for the `Retry-After`
a 429 or 503 carries (delay-seconds or an HTTP-date), and for an exponential backoff over its consecutive
failures (`backoff_s` doubling up to `max_backoff_s`, jittered), whichever ends later; until it answers
again it takes one request at a time (a probe), so a dead replica costs one request per pause, not
`concurrency` of them (only its first `concurrency`, sent before anything was known, fail together, and
they double its backoff once). A request goes to the next endpoint in turn that is neither paused nor full
(each retry to one it has not failed on, when one is answering): a dead replica's share goes to the others,
and it rejoins as soon as a probe is answered.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import logging
import math
import random
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from data_tools.spec import EndpointSpec

log = logging.getLogger(__name__)

WARN_AFTER = 3
"""Consecutive failures after which an endpoint of several is reported as failing (once, until it answers)."""


class Transient(Exception):
    """A failure worth retrying, on this endpoint or another. `kind` (unreachable, status, malformed) picks the
    final message if retries run out; `label` counts it in the endpoint summary."""

    def __init__(self, kind: str, detail: str, label: str | None = None, retry_after: float | None = None):
        super().__init__(detail)
        self.kind = kind
        self.label = label or kind
        self.retry_after = retry_after


def retry_after_s(value: str | None) -> float | None:
    """Seconds a `Retry-After` header asks for: delay-seconds (decimals accepted: some servers send them) or an
    HTTP-date; None when absent or unreadable. A date in the past means now."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; parsedate gives naive for "-0000"
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - datetime.now(timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


@dataclass(eq=False)
class Endpoint:
    """One server and what happened there; mutated only under the pool's lock."""

    spec: EndpointSpec
    in_flight: int = 0
    failures: int = 0
    """Consecutive failures since its last answer."""
    paused_at: float = 0.0
    """When its current backoff began (time.monotonic): a failure of a request sent before it is the same
    outage seen again, and does not double the backoff."""
    backoff_until: float = 0.0
    retry_after_until: float = 0.0
    requests: int = 0
    answered: int = 0
    failed: Counter = field(default_factory=Counter)
    last_error: str = ""
    reported: bool = False

    @property
    def url(self) -> str:
        return self.spec.base_url.rstrip("/") + "/chat/completions"

    def ready(self, now: float) -> bool:
        limit = 1 if self.failures else self.spec.concurrency
        return self.in_flight < limit and now >= max(self.backoff_until, self.retry_after_until)

    def summary(self) -> dict:
        return {"base_url": self.spec.base_url, "model": self.spec.model, "requests": self.requests,
                "answered": self.answered, "failures": dict(self.failed), "last_error": self.last_error}


class EndpointPool:
    """Round-robin over endpoints, per-endpoint limits and backoff; thread-safe."""

    def __init__(self, specs: list[EndpointSpec]):
        self.endpoints = [Endpoint(s) for s in specs]
        self._cond = threading.Condition()
        self._next = 0

    @property
    def capacity(self) -> int:
        return sum(e.spec.concurrency for e in self.endpoints)

    def acquire(self, stop: threading.Event, avoid: set[Endpoint] = frozenset()) -> tuple[Endpoint, float] | None:
        """The next endpoint in turn that can take a request now, and the time it was taken; waits while none
        can; None once `stop` is set. `avoid` holds the endpoints this request already failed on: among those
        that can take it, one that is answering and untried comes first, then one that is answering, then a
        failing one's probe this request has not tried; a failing one it already failed on only when no
        endpoint is answering (else a request waiting for a busy replica would take a dead one's probe each
        time its pause ends)."""
        with self._cond:
            while not stop.is_set():
                now = time.monotonic()
                n = len(self.endpoints)
                answering = any(e.failures == 0 for e in self.endpoints)
                best, best_rank = None, 4
                for k in range(n):
                    endpoint = self.endpoints[(self._next + k) % n]
                    rank = 2 * (endpoint.failures > 0) + (endpoint in avoid)
                    if rank < best_rank and endpoint.ready(now) and not (rank == 3 and answering):
                        best, best_rank = k, rank
                if best is not None:
                    endpoint = self.endpoints[(self._next + best) % n]
                    self._next = (self._next + best + 1) % n
                    endpoint.in_flight += 1
                    endpoint.requests += 1
                    return endpoint, now
                ends = [max(e.backoff_until, e.retry_after_until) for e in self.endpoints]
                wake = min((t for t in ends if t > now), default=None)
                self._cond.wait(None if wake is None else wake - now)  # a release wakes it earlier
        return None

    def wake(self) -> None:
        """Let every waiting `acquire` see that it was stopped."""
        with self._cond:
            self._cond.notify_all()

    def release(self, endpoint: Endpoint, answered: bool = False) -> None:
        """A request ended without a failure worth a retry: answered, refused (4xx), or stopped."""
        with self._cond:
            endpoint.in_flight -= 1
            if answered:
                endpoint.answered += 1
                if endpoint.reported:
                    log.warning("endpoint %s answers again after %d failures", endpoint.spec.base_url,
                                endpoint.failures)
                endpoint.failures, endpoint.backoff_until, endpoint.reported = 0, 0.0, False
            self._cond.notify_all()

    def fail(self, endpoint: Endpoint, error: Transient, sent_at: float) -> None:
        """A request failed there: count it and pause the endpoint (see the module docstring)."""
        with self._cond:
            endpoint.in_flight -= 1
            endpoint.failed[error.label] += 1
            endpoint.last_error = str(error)
            now = time.monotonic()
            spec = endpoint.spec
            if sent_at >= endpoint.paused_at:
                endpoint.failures += 1
                # the exponent capped: a replica dead for hours must not overflow a float
                backoff = min(spec.max_backoff_s, spec.backoff_s * 2 ** min(endpoint.failures - 1, 40))
                endpoint.backoff_until = now + backoff * random.uniform(0.5, 1.5)  # replicas not in lockstep
                endpoint.paused_at = now
            if error.retry_after is not None:
                endpoint.retry_after_until = max(endpoint.retry_after_until, now + error.retry_after)
                log.debug("endpoint %s asked for %.1f s (Retry-After)", spec.base_url, error.retry_after)
            if endpoint.failures >= WARN_AFTER and not endpoint.reported and len(self.endpoints) > 1:
                endpoint.reported = True
                log.warning("endpoint %s failed %d times in a row (last: %s): its requests go to the other "
                            "endpoints; it is tried again every %.0f s at most", spec.base_url, endpoint.failures,
                            error, spec.max_backoff_s * 1.5)
            self._cond.notify_all()

    def summary(self) -> list[dict]:
        with self._cond:
            return [e.summary() for e in self.endpoints]


class Connections:
    """One keep-alive connection per endpoint, for one worker thread (an `http.client` connection is not
    thread-safe). HTTP(S)_PROXY and NO_PROXY are honoured as urllib honours them."""

    def __init__(self):
        self._open: dict[Endpoint, tuple[http.client.HTTPConnection, str, dict]] = {}

    def post(self, endpoint: Endpoint, body: bytes, headers: dict) -> tuple[int, http.client.HTTPMessage, bytes]:
        """(status, headers, body) of one POST to the endpoint's chat completions URL."""
        reused = endpoint in self._open
        if not reused:
            self._open[endpoint] = _connect(endpoint.url, endpoint.spec.timeout_s)
        conn, target, extra = self._open[endpoint]
        try:
            conn.request("POST", target, body=body, headers={**headers, **extra})
            response = conn.getresponse()
            return response.status, response.headers, response.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.drop(endpoint)
            if reused:  # the server closed an idle keep-alive connection: ask once more on a fresh one
                return self.post(endpoint, body, headers)
            raise
        except BaseException:
            self.drop(endpoint)  # a half-read response leaves the connection unusable
            raise

    def drop(self, endpoint: Endpoint) -> None:
        conn = self._open.pop(endpoint, None)
        if conn is not None:
            conn[0].close()

    def close(self) -> None:
        for endpoint in list(self._open):
            self.drop(endpoint)


def _connect(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str, dict]:
    """A connection for `url`, the request target to send, and headers for a proxy (direct when no
    proxy applies)."""
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    secure = parts.scheme == "https"
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        cls = http.client.HTTPSConnection if secure else http.client.HTTPConnection
        return cls(parts.hostname, parts.port, timeout=timeout), target, {}
    via = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth = {}
    if via.username:
        pair = f"{urllib.parse.unquote(via.username)}:{urllib.parse.unquote(via.password or '')}"
        auth = {"Proxy-Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    if secure:  # a CONNECT tunnel through the proxy, TLS end to end
        conn = http.client.HTTPSConnection(via.hostname, via.port or 80, timeout=timeout)
        conn.set_tunnel(parts.hostname, parts.port or 443, headers=auth)
        return conn, target, {}
    return http.client.HTTPConnection(via.hostname, via.port or 80, timeout=timeout), url, auth
