# Sourced by the launch scripts (ROOT and PYTHON set): the checkout goes on PYTHONPATH
# only when "$PYTHON" cannot import mmplugin_shufflemamba (looked up outside the current
# directory), so that an installed build, with its compiled kernels, is the one used.
if ! "$PYTHON" -c "import importlib.util, sys; del sys.path[0]
sys.exit(importlib.util.find_spec('mmplugin_shufflemamba') is None)" 2>/dev/null; then
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
fi
