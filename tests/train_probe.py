"""Test harness: run `sft.train` exactly as `accelerate launch -m sft.train` would, while recording what
each rank trains on and optionally slowing steps down (so a test can kill the run between checkpoints).

    accelerate launch ... tests/train_probe.py CONFIG [overrides] [--resume]

Environment: PROBE_DIR (where rank<N>.jsonl records go), PROBE_STEP_SLEEP (seconds added to every step).
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import trl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo, when launched as a plain script

original_step = trl.SFTTrainer.training_step


def recording_step(self, model, inputs, *args, **kwargs):
    rank = int(os.environ.get("RANK", "0"))
    ids = inputs["input_ids"].tolist()
    record = {"step": self.state.global_step, "rows": [hashlib.sha1(str(r).encode()).hexdigest()[:10] for r in ids],
              "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    with open(Path(os.environ["PROBE_DIR"]) / f"rank{rank}.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    time.sleep(float(os.environ.get("PROBE_STEP_SLEEP", "0")))
    return original_step(self, model, inputs, *args, **kwargs)


trl.SFTTrainer.training_step = recording_step

if __name__ == "__main__":
    from promptbake.core.entry import run_command
    from sft.train import make_parser

    run_command(make_parser())
