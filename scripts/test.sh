#!/usr/bin/env bash
# The test suite: set up .venv if needed, then run pytest (fast tests on a tiny random model, plus the `slow`
# integration test on the real default model). Extra arguments go to pytest, e.g. `-m "not slow"`.
#   bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# the eval report's browser test renders report.html in headless Chromium; install it when we can (root + apt)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    echo "test.sh: installing chromium for the report's browser test (apt-get, quiet)"
    { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
        && apt-get update -qq >/dev/null 2>&1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1; } \
        || echo "test.sh: could not install chromium; the browser test will skip (or fail under CI=true)"
fi
# the tests that exercise faults and bad inputs log what they did; the reliability report's last line sums it
# (scripts/reliability_report.py; its pass/fail bar applies to a whole run: run that script for it)
log=$(mktemp "${TMPDIR:-/tmp}/promptbake-reliability.XXXXXX")
trap 'rm -f "$log"' EXIT
status=0
PROMPTBAKE_RELIABILITY_LOG="$log" .venv/bin/python -m pytest "$@" || status=$?
echo "reliability: $(.venv/bin/python scripts/reliability_report.py --log "$log" | tail -n 1)"
exit "$status"
