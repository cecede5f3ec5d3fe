"""A small OpenAI-compatible chat completions server that answers instantly and injects faults: what
`scripts/bench_http.py` loads to measure the HTTP backend itself (a real model would measure the model).

    python tests/openai_fault_server.py --ports 2 --seed 0     # prints {"ports": [...]} once listening

Every answer is "answer: <the last user message>", so a client can check that each input got its own
answer. Faults, drawn per request from a seeded generator: a 500, a dropped connection (the request is read,
the connection closed with no reply), a slow reply (`--slow-s`), and every `--overload-every` requests an
overload episode of one second in which every request gets a 429 with `Retry-After: 1` (seconds form and
HTTP-date form in turn). On SIGTERM it prints its counts as one JSON line; it exits when its parent does.
Listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import email.utils
import json
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FaultPlan:
    """Which fault the next request gets; thread-safe, deterministic for a seed and an arrival order."""

    def __init__(self, seed: int, p500: float, pdrop: float, pslow: float, overload_every: int):
        self.rng = random.Random(seed)
        self.p500, self.pdrop, self.pslow, self.overload_every = p500, pdrop, pslow, overload_every
        self.lock = threading.Lock()
        self.requests = 0
        self.overload_until = 0.0
        self.episodes = 0
        self.counts: Counter[str] = Counter()

    def next(self) -> str:
        with self.lock:
            self.requests += 1
            now = time.monotonic()
            if self.overload_every and self.requests % self.overload_every == 0:
                self.overload_until, self.episodes = now + 1.0, self.episodes + 1
            if now < self.overload_until:
                fault = "429_date" if self.episodes % 2 == 0 else "429_seconds"
            else:
                draw = self.rng.random()
                fault = ("500" if draw < self.p500 else "drop" if draw < self.p500 + self.pdrop
                         else "slow" if draw < self.p500 + self.pdrop + self.pslow else "ok")
            self.counts[fault] += 1
            return fault


def send_json(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict | None = None) -> None:
    """One JSON response, with extra headers (e.g. Retry-After)."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(data)


def make_handler(plan: FaultPlan, slow_s: float):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as real servers
        disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            fault = plan.next()
            if fault == "drop":
                self.close_connection = True
                return
            if fault.startswith("429"):
                retry = "1" if fault == "429_seconds" else email.utils.formatdate(time.time() + 1, usegmt=True)
                return self.reply(429, {"error": {"message": "overloaded"}}, {"Retry-After": retry})
            if fault == "500":
                return self.reply(500, {"error": {"message": "internal error"}})
            if fault == "slow":
                time.sleep(slow_s)
            question = body["messages"][-1]["content"]
            answer = {"role": "assistant", "content": f"answer: {question}"}
            self.reply(200, {"object": "chat.completion", "model": body.get("model", ""),
                             "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": len(question.split()), "completion_tokens": 2}})

        def reply(self, status: int, payload: dict, headers: dict | None = None) -> None:
            send_json(self, status, json.dumps(payload).encode(), headers)

        def log_message(self, *args):
            pass

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, default=1, help="how many endpoints (one port each) to serve")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--p500", type=float, default=0.01, help="share of requests answered 500")
    parser.add_argument("--pdrop", type=float, default=0.005, help="share of connections dropped unanswered")
    parser.add_argument("--pslow", type=float, default=0.005, help="share of replies delayed by --slow-s")
    parser.add_argument("--slow-s", type=float, default=0.5)
    parser.add_argument("--overload-every", type=int, default=5000,
                        help="start a one-second 429 episode every this many requests (0: never)")
    args = parser.parse_args(argv)
    plan = FaultPlan(args.seed, args.p500, args.pdrop, args.pslow, args.overload_every)
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), make_handler(plan, args.slow_s)) for _ in range(args.ports)]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def finish(*_):
        print(json.dumps({"requests": plan.requests, "faults": dict(plan.counts), "overloads": plan.episodes}),
              flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, finish)
    parent = os.getppid()
    print(json.dumps({"ports": [s.server_address[1] for s in servers]}), flush=True)
    while os.getppid() == parent:  # a killed client must not leave the server behind
        time.sleep(0.5)


if __name__ == "__main__":
    main()
