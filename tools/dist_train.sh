#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG GPUS [train.py args]
# Multi-node: on every node, NNODES=2 NODE_RANK=0|1 MASTER_ADDR=<node 0's address>
# PORT=29500 tools/dist_train.sh ... (the same CONFIG, GPUS and --work-dir on a shared
# file system; node 0 writes the checkpoints).
# On a machine without CUDA, GPUS is the number of CPU processes (gloo backend).
set -e
USAGE="usage: $0 CONFIG GPUS [train.py args]"
case "${1-}" in -h|--help) echo "$USAGE"; exit 0 ;; esac
if [ $# -lt 2 ]; then
  echo "$USAGE" >&2; exit 2
fi
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/pythonpath.sh"
require_count GPUS "$GPUS"
require_file "config file" "$CONFIG"

"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$ROOT/tools/train.py" \
    "$CONFIG" \
    --launcher pytorch "${@:3}"
