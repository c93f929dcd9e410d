# Sourced by the launch scripts (ROOT and PYTHON set).
# - "$PYTHON" must import torch here, unless PYTHON_RUNS_ELSEWHERE=1 (the slurm scripts:
#   the interpreter runs on the compute nodes): otherwise stop with the import error and
#   how to pick the environment.
# - The checkout goes on PYTHONPATH only when "$PYTHON" cannot import
#   mmplugin_shufflemamba (looked up outside the current directory), so that an
#   installed build, with its compiled kernels, is the one used.
# - is_count VALUE: whether VALUE is a positive integer (a process count).
# - require_count NAME VALUE [WHAT]: stop unless VALUE is a positive integer (WHAT it
#   counts; default: processes per node).
# - require_name NAME VALUE: stop if VALUE is empty or looks like an option (-x): a
#   positional argument (the slurm partition, the job name) left out or misplaced.
# - slurm_counts: stop unless GPUS, GPUS_PER_NODE and CPUS_PER_TASK are positive
#   integers and a job past one node fills its nodes (GPUS a multiple of GPUS_PER_NODE);
#   a job smaller than a node asks for its GPUS alone (GPUS_PER_NODE=GPUS).
# - slurm_run TOOL [ARGS...]: tools/TOOL with ARGS on $GPUS tasks of $PARTITION (the
#   Slurm scripts' srun call; $SRUN_ARGS split into words).
# - require_file WHAT PATH: stop unless PATH is an existing file, so that a mistyped
#   path stops here, not in every rank after torchrun or srun has started them.
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

is_count() {
  case "$1" in
    ''|*[!0-9]*) return 1 ;;
  esac
  [ "$((10#$1))" -gt 0 ]
}

require_count() {
  is_count "$2" && return 0
  local what="${3:-processes per node: GPUs, or CPU processes without CUDA}"
  echo "$(basename "$0"): $1 must be a positive integer ($what), got '$2'" >&2
  exit 2
}

require_name() {
  case "$2" in
    '') echo "$(basename "$0"): $1 is empty" >&2 ;;
    -*) echo "$(basename "$0"): $1 '$2' looks like an option: the positional arguments" \
             "come first (see $(basename "$0") --help); srun options go in SRUN_ARGS" >&2 ;;
    *) return 0 ;;
  esac
  exit 2
}

require_file() {
  local path="${2/#\~\//$HOME/}" where=""  # a quoted ~/..., as the Python tools read it
  [ -f "$path" ] && return 0
  case "$path" in /*) ;; *) where=" (relative to $PWD)" ;; esac
  if [ -d "$path" ]; then
    echo "$(basename "$0"): $1 '$2' is a directory, not a file" >&2
  else
    echo "$(basename "$0"): $1 '$2' does not exist$where" >&2
  fi
  exit 2
}

slurm_counts() {
  require_count GPUS "$GPUS" "the total number of tasks, one per GPU"
  require_count GPUS_PER_NODE "$GPUS_PER_NODE" "tasks, one per GPU, on each node"
  require_count CPUS_PER_TASK "$CPUS_PER_TASK" "CPU cores per task, for its data workers"
  GPUS=$((10#$GPUS)) GPUS_PER_NODE=$((10#$GPUS_PER_NODE))
  if [ "$GPUS" -lt "$GPUS_PER_NODE" ]; then
    echo "$(basename "$0"): GPUS=$GPUS: one node with $GPUS GPUs" \
         "(not GPUS_PER_NODE=$GPUS_PER_NODE)" >&2
    GPUS_PER_NODE=$GPUS
  elif [ $((GPUS % GPUS_PER_NODE)) -ne 0 ]; then
    echo "$(basename "$0"): GPUS=$GPUS is not a multiple of GPUS_PER_NODE=$GPUS_PER_NODE:" \
         "each node holds $GPUS_PER_NODE GPUs (--gres) and the last would use" \
         "$((GPUS % GPUS_PER_NODE)) of them; use GPUS=$((GPUS / GPUS_PER_NODE *" \
         "GPUS_PER_NODE + GPUS_PER_NODE)) or a GPUS_PER_NODE that divides $GPUS" >&2
    exit 2
  fi
}

slurm_run() {
  set -x
  srun -p "$PARTITION" \
      --job-name="$JOB_NAME" \
      --gres=gpu:"$GPUS_PER_NODE" \
      --ntasks="$GPUS" \
      --ntasks-per-node="$GPUS_PER_NODE" \
      --cpus-per-task="$CPUS_PER_TASK" \
      --kill-on-bad-exit=1 \
      ${SRUN_ARGS} \
      "$PYTHON" -u "$ROOT/tools/$1" "${@:2}"
}
