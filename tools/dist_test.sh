#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py args]
# Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT as for dist_train.sh.
set -e
USAGE="usage: $0 CONFIG CHECKPOINT GPUS [test.py args]"
case "${1-}" in -h|--help) echo "$USAGE"; exit 0 ;; esac
if [ $# -lt 2 ]; then
  echo "$USAGE" >&2; exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=${3-}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
source "$ROOT/tools/pythonpath.sh"
# "CONFIG 8 CKPT": the GPU count and the checkpoint swapped.
if is_count "$CHECKPOINT" && [ ! -e "$CHECKPOINT" ] && [ -f "$GPUS" ]; then
  echo "$(basename "$0"): the checkpoint comes before the GPU count ('$CHECKPOINT' is the" \
       "GPU count, '$GPUS' the checkpoint): $0 $CONFIG $GPUS $CHECKPOINT ..." >&2
  exit 2
fi
# "CONFIG 8 [--tta]": the checkpoint was left out and the GPU count took its place.
if is_count "$CHECKPOINT" && [ ! -e "$CHECKPOINT" ] && ! is_count "$GPUS"; then
  echo "$(basename "$0"): CHECKPOINT is missing ('$CHECKPOINT' is the GPU count);" \
       "$USAGE" >&2
  exit 2
fi
if [ $# -lt 3 ]; then
  echo "$USAGE" >&2; exit 2
fi
require_count GPUS "$GPUS"
require_file "config file" "$CONFIG"
require_file checkpoint "$CHECKPOINT"

"$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$ROOT/tools/test.py" \
    "$CONFIG" \
    "$CHECKPOINT" \
    --launcher pytorch "${@:4}"
