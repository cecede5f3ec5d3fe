"""Load test of the HTTP teacher backend: many short requests against a real loopback server that injects
faults, every input answered exactly once, with the client's requests/s and peak memory.

    .venv/bin/python scripts/bench_http.py [--requests 20000] [--endpoints 1] [--dead 0] [--concurrency 16]

The server (tests/openai_fault_server.py, a separate process on 127.0.0.1) answers instantly, so the figures
measure the client: its worker threads, keep-alive connections, retries and routing. It injects 500s,
dropped connections, slow replies and one-second overloads answered with 429 + Retry-After (seconds and
HTTP-date forms). `--endpoints N` serves N replicas; `--dead K` adds K endpoints where nothing listens (their
requests must go to the others). Conversations are generated lazily and nothing is kept per answer except
one byte per input (how many times it was answered), so peak RSS should not grow with `--requests`; each
group of answers is appended to a journal file and fsynced, as a data build does. Every answer must be the
one the server gives for that input ("answer: <input>"): `lost` counts inputs not answered exactly once
with their own answer. The last line is `requests=... rps=... peak_rss_mb=... lost=...`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from data_tools.http_backend import OpenAIBackend  # noqa: E402  (after the path set-up, for a run from anywhere)
from data_tools.spec import EndpointSpec, Sampling  # noqa: E402


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, list[int]]:
    command = [sys.executable, str(REPO / "tests" / "openai_fault_server.py"), "--ports", str(args.endpoints),
               "--seed", str(args.seed), "--p500", str(args.p500), "--pdrop", str(args.pdrop), "--pslow",
               str(args.pslow), "--overload-every", str(args.overload_every)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    ports = json.loads(server.stdout.readline())["ports"]
    return server, ports


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def conversations(n: int) -> Iterator[list[dict]]:
    for i in range(n):
        yield [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"question {i}"}]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--endpoints", type=int, default=1, help="replicas served by the fault server")
    parser.add_argument("--dead", type=int, default=0, help="extra endpoints where nothing listens")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight per endpoint")
    parser.add_argument("--journal-every", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--p500", type=float, default=0.01)
    parser.add_argument("--pdrop", type=float, default=0.005)
    parser.add_argument("--pslow", type=float, default=0.005)
    parser.add_argument("--overload-every", type=int, default=5000)
    args = parser.parse_args(argv)

    server, ports = start_server(args)
    urls = [f"http://127.0.0.1:{p}/v1" for p in ports] + [f"http://127.0.0.1:{dead_port()}/v1"
                                                          for _ in range(args.dead)]
    specs = [EndpointSpec(base_url=u, model="stub", concurrency=args.concurrency, timeout_s=10, backoff_s=0.05,
                          max_backoff_s=5) for u in urls]
    backend = OpenAIBackend(specs, journal_every=args.journal_every, journal_interval_s=1.0)
    answered = bytearray(args.requests)  # times each input was answered with its own answer
    wrong = groups = 0
    try:
        with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "samples.jsonl", "a", encoding="utf-8") as journal:
            start = time.perf_counter()
            for group in backend.stream(conversations(args.requests), Sampling(max_new_tokens=4)):
                for index, completion in group:
                    if completion.texts == [f"answer: question {index}"]:
                        answered[index] = min(answered[index] + 1, 255)
                    else:
                        wrong += 1
                journal.write("".join(json.dumps({"i": i, "samples": c.texts}) + "\n" for i, c in group))
                journal.flush()
                os.fsync(journal.fileno())
                groups += 1
            elapsed = time.perf_counter() - start
    finally:
        server.terminate()
        stats = server.communicate(timeout=10)[0].strip()
    lost = sum(1 for count in answered if count != 1) + wrong
    print(f"server: {stats}")
    for e in backend.endpoint_summary():
        print(f"endpoint {e['base_url']}: {e['answered']} of {e['requests']} requests answered; "
              f"failures {e['failures'] or 'none'}")
    print(f"journal groups (fsyncs): {groups}; wall time {elapsed:.1f} s; endpoints {len(urls)} "
          f"({args.dead} dead); concurrency {args.concurrency} each")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(f"requests={args.requests} rps={args.requests / elapsed:.0f} peak_rss_mb={peak_mb:.0f} lost={lost}")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
