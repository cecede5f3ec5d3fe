#!/usr/bin/env bash
# The test suite: set up .venv if needed, then run pytest (fast tests on a tiny random model, plus the `slow`
# integration test on the real default model). Extra arguments go to pytest, e.g. `-m "not slow"`.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
