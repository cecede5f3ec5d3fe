"""`accelerate launch` with two CPU processes, as the distributed tests start it. Not a test module: tests import it
(pytest puts tests/ on sys.path).

Each launch gets a free loopback port (a fixed `--main_process_port` joins whatever still listens there: the
workers of an earlier run that was killed, which then wait for a peer forever) and its own process group, so
that a run past its timeout is killed with every worker it started, and the test fails with their output
instead of leaving them behind; whatever is left in the group when the launcher returns (a worker's forked
child: one held 700 MB for an hour after a passing run) is killed too."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from llama_server import free_port

REPO = Path(__file__).resolve().parents[1]


def accelerate_launch(args: list[str], env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `accelerate launch --config_file configs/accelerate/cpu_ddp.yaml --main_process_port PORT *args` in
    the repository; on timeout kill the whole process group and raise AssertionError with the output so far."""
    accelerate = Path(sys.executable).parent / "accelerate"
    argv = [str(accelerate), "launch", "--config_file", str(REPO / "configs/accelerate/cpu_ddp.yaml"),
            "--main_process_port", str(free_port()), *args]
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        raise AssertionError(f"accelerate launch ran past {timeout} s and was killed with its workers:\n"
                             f"{stderr[-3000:]}\n{stdout[-1000:]}") from None
    finally:
        with contextlib.suppress(ProcessLookupError):  # a worker's forked child can outlive a finished run
            os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
