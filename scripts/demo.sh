#!/usr/bin/env bash
# The main job: set up .venv if needed, then bake the demo spec (data -> validated LoRA SFT -> eval -> export) on the
# embedded SmolLM2-135M-Instruct. ~5 minutes on a 2-core CPU after the one-time install.
#   bash scripts/demo.sh [--out runs/demo]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/promptbake demo "$@"
