#!/usr/bin/env bash
# Set up the environment if needed, then run the CPU quickstart (tools/quickstart.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$(bash "$ROOT/tools/setup_env.sh" | sed -n 's/^PYTHON=//p' | tail -n 1)"
cd "$ROOT"
exec "$PY" tools/quickstart.py "$@"
