# Sourced by the launch scripts (ROOT and PYTHON set).
# - "$PYTHON" must import torch here, unless PYTHON_RUNS_ELSEWHERE=1 (the slurm scripts:
#   the interpreter runs on the compute nodes): otherwise stop with the import error and
#   how to pick the environment.
# - The checkout goes on PYTHONPATH only when "$PYTHON" cannot import
#   mmplugin_shufflemamba (looked up outside the current directory), so that an
#   installed build, with its compiled kernels, is the one used.
# - require_count NAME VALUE: stop unless VALUE is a positive integer.
if [ "${PYTHON_RUNS_ELSEWHERE:-0}" != "1" ] \
    && ! torch_error="$("$PYTHON" -c "import torch" 2>&1)"; then
  echo "$(basename "$0"): '$PYTHON' cannot import torch ($(printf %s "$torch_error" |
       tail -n 1)): activate the project's environment (source .venv/bin/activate;" \
       "bash tools/setup_env.sh creates it) or set PYTHON=/path/to/python" >&2
  exit 2
fi
if ! "$PYTHON" -c "import importlib.util, sys; sys.path[:] = [p for p in sys.path if p]
sys.exit(importlib.util.find_spec('mmplugin_shufflemamba') is None)" 2>/dev/null; then
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi

require_count() {
  case "$2" in
    ''|*[!0-9]*) ;;
    *) [ "$((10#$2))" -gt 0 ] && return 0 ;;
  esac
  echo "$(basename "$0"): $1 must be a positive integer (processes per node: GPUs," \
       "or CPU processes without CUDA), got '$2'" >&2
  exit 2
}
