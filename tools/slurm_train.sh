#!/usr/bin/env bash
# Usage: [GPUS=8] [GPUS_PER_NODE=8] tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args]
# srun options of your own: SRUN_ARGS="--time=2-00:00:00 ...".
USAGE="usage: [GPUS=8] [GPUS_PER_NODE=8] [SRUN_ARGS=...] $0"
USAGE+=" PARTITION JOB_NAME CONFIG [train.py args]"
case "${1-}" in -h|--help) echo "$USAGE"; exit 0 ;; esac
if [ $# -lt 3 ]; then
  echo "$USAGE" >&2; exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON_RUNS_ELSEWHERE=1  # srun runs it on the compute nodes
source "$ROOT/tools/pythonpath.sh"
require_name PARTITION "$PARTITION"
require_name JOB_NAME "$JOB_NAME"
slurm_counts
require_file "config file" "$CONFIG"

slurm_run train.py "$CONFIG" --launcher="slurm" "${@:4}"
