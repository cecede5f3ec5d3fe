"""W&B for the commands that log to it (every trainer, the eval): its files in the command's output directory, and
a tracking failure never costs a run.

    run = start_wandb_run(output_dir, job_type="eval", name="demo")   # OUTPUT_DIR/wandb/offline-run-...

A run is online when WANDB_API_KEY is set and the server accepts it, offline otherwise (`wandb sync
OUTPUT_DIR/wandb/offline-run-*` uploads it later); WANDB_MODE, when set, decides. A key the server refuses or a
server that cannot be reached is found by one verification before the run starts (W&B's own `wandb.login`, bounded
by WANDB_HTTP_TIMEOUT, 10 s by default) and the process goes on offline after one warning: an online `wandb.init`
that fails instead retries for 90 s and then raises, after an eval has written its metrics. WANDB_DIR, when set,
is where the files go instead of the output directory.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

OFFLINE_MODES = ("offline", "disabled", "dryrun")


def wandb_mode() -> str:
    """online / offline / disabled, decided once per process (the outcome is kept in WANDB_MODE)."""
    mode = os.environ.get("WANDB_MODE", "")
    if not mode:
        os.environ.pop("WANDB_MODE", None)  # set but empty: W&B would refuse its own settings
    if mode in OFFLINE_MODES:
        return mode
    if not os.environ.get("WANDB_API_KEY"):
        os.environ["WANDB_MODE"] = "offline"
        return "offline"
    problem = login_problem(os.environ["WANDB_API_KEY"], os.environ.get("WANDB_BASE_URL"))
    if problem:
        go_offline(problem)
        return "offline"
    return mode or "online"


@functools.cache  # one request per key and server in a process
def login_problem(key: str, base_url: str | None) -> str | None:
    """Why W&B does not accept `key` (refused, or the server unreachable), or None. W&B reads both from the
    environment; they are the arguments so that another key is asked about again."""
    import wandb

    try:
        wandb.login(verify=True, relogin=False)
    except Exception as e:  # AuthenticationError for a refused key or no server; UsageError for a malformed key
        return f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no message'}"
    return None


def go_offline(problem: str) -> None:
    os.environ["WANDB_MODE"] = "offline"
    print(f"[promptbake] warning: W&B could not log in with WANDB_API_KEY ({problem}); logging offline instead "
          "(`wandb sync` uploads the run later)", flush=True)


def wandb_dir(output_dir: str | Path) -> Path:
    """Where W&B writes (it adds `wandb/`): WANDB_DIR when set, else the command's output directory."""
    path = Path(os.environ.get("WANDB_DIR") or output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_wandb_run(output_dir: str | Path, **init_args):
    """`wandb.init(**init_args)` writing under `output_dir`, online only when W&B accepts the key; an online start
    that fails all the same (the network went away since) is retried offline with one warning."""
    import wandb

    mode = wandb_mode()
    directory = str(wandb_dir(output_dir))
    try:
        return wandb.init(dir=directory, mode=mode, **init_args)
    except Exception as e:
        if mode in OFFLINE_MODES:
            raise
        go_offline(f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else 'no message'}")
        return wandb.init(dir=directory, mode="offline", **init_args)
