"""`promptbake ARGS...` exactly as the command runs it, for tests that watch a whole process: after the command
ends (an exit code included), the last line on stderr is `PROBE {"heavy": [...]}`, the heavy libraries the
command imported. A refusal of a bad input must come before any of them load.

    python tests/cli_probe.py data build nope.yaml
"""

import json
import sys

from promptbake.cli import main

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "bitsandbytes", "accelerate", "wandb")

try:
    main(sys.argv[1:])
finally:
    print("PROBE " + json.dumps({"heavy": [name for name in HEAVY if name in sys.modules]}), file=sys.stderr)
