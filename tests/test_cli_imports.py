"""The command line is checked before the heavy libraries load: building `promptbake`'s parser and loading every
shipped config with its stage's config class (spec, recipes of every trainer, eval, lint, bake) import neither
torch nor transformers, TRL, PEFT, datasets or bitsandbytes, so `promptbake --help` and every refusal of a bad
input take a fraction of a second instead of the 10-19 s those imports cost on 2 cores. Each runs in a fresh
process; the times are printed (`pytest -s`) and held to a generous bound, the machine being shared.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ["torch", "transformers", "trl", "peft", "datasets", "bitsandbytes"]
BOUND_S = 5.0
"""What the test allows a fresh process; measured ~0.4 s for `promptbake --help` on a 2-core Xeon (8.8 s before)."""

VALIDATE_EVERY_SHIPPED_CONFIG = """
import json, sys, time
from pathlib import Path
start = time.perf_counter()
from promptbake.cli import make_parser
make_parser()
from data_tools.lint import config_from_args
from data_tools.spec import load_spec
from evals.run import EvalConfig
from promptbake.bake import load_bake
from promptbake.core.config import load_config
from sft.distill import DistillRecipe
from sft.dpo import DPORecipe
from sft.reward import RewardRecipe
from sft.rl import RLRecipe
from sft.train import SFTRecipe
configs = Path(sys.argv[1])
loaded = 0
for path in sorted((configs / "specs").glob("*.yaml")):
    load_spec(path)
    load_bake(str(path))
    loaded += 2
for kind, cls in {"sft": SFTRecipe, "dpo": DPORecipe, "reward": RewardRecipe, "rl": RLRecipe,
                  "distill": DistillRecipe, "evals": EvalConfig}.items():
    for path in sorted((configs / kind).glob("*.yaml")):
        load_config(cls, path)
        loaded += 1
config_from_args("runs/demo/data", [f"spec={configs / 'specs' / 'demo_style.yaml'}"])
print(json.dumps({"loaded": loaded + 1, "seconds": time.perf_counter() - start,
                  "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


def fresh_process(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    return done, time.perf_counter() - start


def test_every_shipped_config_validates_without_the_heavy_libraries(as_after_the_demo, tmp_path,
                                                                   warm_trainer_fields):
    for path in (REPO / "configs").glob("*/*.yaml"):
        as_after_the_demo(path)  # the eval and RL configs name the demo's adapter (runs/demo/sft/adapter)
    script = f"HEAVY = {HEAVY!r}\n" + VALIDATE_EVERY_SHIPPED_CONFIG
    done, seconds = fresh_process(["-c", script, str(REPO / "configs")], tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"parser + {result['loaded']} shipped configs validated in {result['seconds']:.2f} s "
          f"({seconds:.2f} s with the interpreter's start)")
    assert result["loaded"] >= 20
    assert result["heavy"] == [], f"validating a config imported {result['heavy']}"
    assert seconds < BOUND_S


def test_help_is_quick_and_imports_no_heavy_library(tmp_path):
    probe = str(REPO / "tests" / "cli_probe.py")
    for argv in (["--help"], ["bake", "--help"], ["train", "sft", "--help"]):
        done, seconds = fresh_process([probe, *argv], tmp_path)
        heavy = json.loads(done.stderr.strip().splitlines()[-1].removeprefix("PROBE "))["heavy"]
        print(f"promptbake {' '.join(argv)}: {seconds:.2f} s, imported {heavy or 'no heavy library'}")
        assert done.returncode == 0 and "usage: promptbake" in done.stdout, done.stderr
        assert not set(heavy) & set(HEAVY)
        assert seconds < BOUND_S
