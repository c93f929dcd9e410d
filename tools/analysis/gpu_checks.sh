#!/usr/bin/env bash
# The checks a GPU machine can run and a CPU machine cannot, in one command:
#
#   bash tools/analysis/gpu_checks.sh [OUT_DIR] [-- BENCHMARK_ARGS...]
#
# 1. the kernel each op runs for CUDA tensors (the fused kernels, or the fallback and why);
# 2. the GPU tests: mamba-ssm's (and causal-conv1d's) kernels against the PyTorch path
#    for the scan, the mixer (short and past the 2048-step chunk), the backbone and bf16,
#    what the fused mixer keeps for its backward, the scan's custom ops against their
#    fake implementations, the mixer compiled as one graph (needs pytest);
# 3. the GPU benchmark protocol (tools/analysis/benchmark_backbones.py --protocol gpu):
#    ratios against timm's and mmseg's ViT-B, the lean mixer against the composed ops,
#    SLWS with the host and the device draw; figures in OUT_DIR/gpu_protocol.json.
#
# OUT_DIR defaults to $OUT, else ./work_dirs/gpu_checks; the log of each step is saved
# there. A GPU without an importable mamba-ssm scan fails the first step. BENCHMARK_ARGS replace nothing but add to the protocol's options (e.g. --cases
# backbone:512:8:bfloat16 --reps 5). Every step runs; the exit status is non-zero if any
# failed. PYTHON picks the interpreter (default python3).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-$ROOT/work_dirs/gpu_checks}"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then OUT_DIR="$1"; shift; fi
if [ $# -gt 0 ]; then
  [ "$1" = "--" ] || { echo "gpu_checks.sh: unexpected argument $1 (benchmark options go after --)" >&2; exit 2; }
  shift
fi
mkdir -p "$OUT_DIR"
cd "$ROOT"
FAILED=()
step() {  # name log command...
  local name="$1" log="$OUT_DIR/$2"; shift 2
  echo "== $name"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s (log: $log)"
  [ "$rc" = 0 ] || FAILED+=("$name")
}

echo "== kernel report"
"$PY" - <<'EOF' 2>&1 | tee "$OUT_DIR/kernels.txt"
import sys
import torch
import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba.ops import has_selective_scan_cuda
from mmplugin_shufflemamba.ops.kernels import kernel_report
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, GPU: {gpu or "none"}')
for op, impl in kernel_report('cuda').items():
    print(f'kernel for cuda tensors: {op}: {impl}')
if gpu is None:
    print('No GPU is visible: the GPU tests will skip and the benchmark runs on the CPU.')
elif not has_selective_scan_cuda():  # the GPU tests would all skip
    sys.exit('A GPU but no importable mamba-ssm scan (see above): the GPU tests cannot '
             'run. Install it with WITH_MAMBA_KERNELS=1 bash tools/setup_env.sh.')
EOF
[ "${PIPESTATUS[0]}" = 0 ] || FAILED+=("kernel report")

if "$PY" -c 'import pytest' 2>/dev/null; then
  step "GPU tests" tests.log "$PY" -m pytest -p no:cacheprovider -q -rs \
    tests/test_ops/test_bimamba_inner.py tests/test_ops/test_selective_scan.py \
    tests/test_ops/test_cuda_custom_ops.py -k "gpu or cuda"
else
  echo "== GPU tests: not run, pytest is not installed (pip install pytest)"
  FAILED+=("GPU tests (no pytest)")
fi

step "GPU benchmark protocol" benchmark.log "$PY" tools/analysis/benchmark_backbones.py \
  --protocol gpu --json "$OUT_DIR/gpu_protocol.json" "$@"

if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_checks: FAILED: ${FAILED[*]}"
  exit 1
fi
echo "gpu_checks: all steps passed; figures in $OUT_DIR/gpu_protocol.json"
