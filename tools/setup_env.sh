#!/usr/bin/env bash
# Set up (idempotently) the Python environment for mmplugin_shufflemamba.
#
# - Creates a virtual environment (default: <repo>/.venv, override with VENV=...),
#   unless INSTALL_INTO_CURRENT_ENV=1, which installs into the active interpreter.
# - Installs torch + torchvision builds that run with and without a GPU.
# - Builds mmcv 2.1.0 with its compiled ops from the source archive (patched for the
#   C++20 that recent torch headers require), caches the wheel in
#   ${SHUFFLEMAMBA_CACHE:-~/.cache/mmplugin_shufflemamba}/wheels so that a second
#   install takes seconds; on a machine with nvcc and a GPU the CUDA ops are built too.
# - Installs mmengine, mmsegmentation, mmdet, mmpretrain, timm, test tools and this package
#   (editable); on a GPU node also the optional mamba-ssm / causal-conv1d kernels when
#   WITH_MAMBA_KERNELS=1, built for that GPU only and cached (tools/build_cuda_kernels.py).
# Prints the python to use on its last line as "PYTHON=<path>".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TORCH_VERSION="${TORCH_VERSION:-2.14.1}"
TORCHVISION_VERSION="${TORCHVISION_VERSION:-0.29.1}"
MMCV_VERSION="2.1.0"
CACHE="${SHUFFLEMAMBA_CACHE:-$HOME/.cache/mmplugin_shufflemamba}"
STAMP_VERSION="4"

log() { echo "[setup_env] $*" >&2; }

if [ "${INSTALL_INTO_CURRENT_ENV:-0}" = "1" ]; then
  PY="$(command -v python3 || command -v python)"
else
  VENV="${VENV:-$ROOT/.venv}"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV"
    python3 -m venv "$VENV"
  fi
  PY="$VENV/bin/python"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

stamp_file="$("$PY" -c 'import sys; print(sys.prefix)')/.mmplugin_shufflemamba_env"
# The installed packages, not a source tree in the current directory (python -c puts
# the current directory first on sys.path).
IMPORT_CHECK='import sys; sys.path[:] = [p for p in sys.path if p]
import mmplugin_shufflemamba, mmcv.ops, mmseg, mmdet, mmpretrain'
stamp_want="v$STAMP_VERSION torch=$TORCH_VERSION mmcv=$MMCV_VERSION root=$ROOT"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp_want" ] \
   && "$PY" -c "$IMPORT_CHECK" >/dev/null 2>&1; then
  log "environment already set up ($PY)"
  echo "PYTHON=$PY"
  exit 0
fi

# setuptools 80.9.0: new enough for torch, still has pkg_resources (mmcv build, mmengine).
"${PIP[@]}" install -q --upgrade "pip>=23" "setuptools==80.9.0" wheel ninja packaging

if ! "$PY" -c "import torch, torchvision, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" >/dev/null 2>&1; then
  log "installing torch==$TORCH_VERSION torchvision==$TORCHVISION_VERSION"
  "${PIP[@]}" install -q "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"
fi

# ---- mmcv with compiled ops -------------------------------------------------------
# (building it needs torch in the environment: --no-build-isolation)
HAS_CUDA="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
if [ "$HAS_CUDA" = "1" ] && command -v nvcc >/dev/null 2>&1; then
  MMCV_FLAVOUR="cuda"
else
  MMCV_FLAVOUR="cpu"
fi
PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-torch$TORCH_VERSION-$PYTAG-$MMCV_FLAVOUR"

mmcv_ok() {
  "$PY" - <<'PYEOF' >/dev/null 2>&1
import mmcv, sys
from mmcv.ops import nms, roi_align, MultiScaleDeformableAttention  # noqa: F401
sys.exit(mmcv.__version__ != "2.1.0")
PYEOF
}

if ! mmcv_ok; then
  if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION ($MMCV_FLAVOUR ops); this takes ~8 minutes on 2 cores, once"
    build="$(mktemp -d)"
    "${PIP[@]}" download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build"
    tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    src="$build/mmcv-$MMCV_VERSION"
    # torch >= 2.6 headers need C++20.
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$src/setup.py"
    export MMCV_WITH_OPS=1
    export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    if [ "$MMCV_FLAVOUR" = "cuda" ]; then export FORCE_CUDA=1; fi
    mkdir -p "$WHEEL_DIR"
    (cd "$src" && "${PIP[@]}" wheel -q --no-build-isolation --no-deps . -w "$WHEEL_DIR")
    rm -rf "$build"
  fi
  log "installing cached mmcv wheel from $WHEEL_DIR"
  # mmcv's runtime requirements first (importing mmcv imports mmengine).
  "${PIP[@]}" install -q "mmengine==0.10.7" addict numpy packaging Pillow pyyaml yapf \
    opencv-python
  "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
  if ! mmcv_ok; then
    log "ERROR: mmcv $MMCV_VERSION with compiled ops does not import after install:"
    "$PY" -c 'from mmcv.ops import nms' >&2 || true
    exit 1
  fi
fi

log "installing OpenMMLab frameworks (mmseg, mmdet, mmpretrain), timm and test tools"
"${PIP[@]}" install -q "mmengine==0.10.7" "mmsegmentation==1.2.2" "mmdet==3.3.0" \
  "mmpretrain==1.2.0" "timm==1.0.31" ftfy regex pycocotools scipy shapely terminaltables \
  "pytest>=7" pytest-timeout

log "installing mmplugin_shufflemamba (editable)"
"${PIP[@]}" install -q --no-build-isolation --no-deps -e "$ROOT"

if [ "${WITH_MAMBA_KERNELS:-0}" = "1" ]; then
  # Built for this node's GPU only, offline, from cached wheels or source archives in
  # $CACHE/src (see tools/build_cuda_kernels.py); nothing mamba-ssm declares beyond what
  # the scan needs is installed.
  if [ "$HAS_CUDA" = "1" ] && command -v nvcc >/dev/null 2>&1; then
    log "building the fused CUDA kernels (mamba-ssm, causal-conv1d) for this GPU"
    SHUFFLEMAMBA_CACHE="$CACHE" "$PY" "$ROOT/tools/build_cuda_kernels.py" >&2
  else
    log "WITH_MAMBA_KERNELS=1 but no CUDA GPU with nvcc here: the fused kernels are not"
    log "built (run this on the GPU node); CUDA tensors would take the PyTorch path."
  fi
fi

"$PY" -c "$IMPORT_CHECK"
echo "$stamp_want" > "$stamp_file"
log "done ($PY)"
echo "PYTHON=$PY"
