#!/usr/bin/env bash
# Set up the environment if needed, then run the whole test suite (slow tests included).
# Extra arguments go to pytest, e.g. `bash tools/run_tests.sh -m "not slow"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/tools/setup_env.sh" | sed -n 's/^PYTHON=//p' | tail -n 1)"
cd "$ROOT"
exec "$PY" -m pytest tests -p no:cacheprovider "$@"
