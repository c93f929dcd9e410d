"""Shared test helpers, imported as ``from helpers.<module> import ...``.

pytest puts ``tests/`` on the module search path when it imports ``tests/conftest.py``
(its default ``prepend`` import mode; ``tests/`` is not a package), so this package
imports with no path edits in the test files.

- :mod:`helpers.official_reference`: an independent forward of the official model on an
  official-layout state dict, and random state dicts in that layout.
- :mod:`helpers.layouts`: one tensor in the memory layouts the CPU kernels accept.
- :mod:`helpers.fake_cuda_kernels`: mamba-ssm's and causal-conv1d's kernels as CPU
  stand-ins (their checks and output layouts).
- :mod:`helpers.tools`: load a ``tools/`` script as a module (:func:`load_tool`).
- :mod:`helpers.tools_convert`: ``tools/convert_checkpoint.py``'s ``main``.
- :mod:`helpers.configs`: shrinking the dense configs and building them in their scope.
- :mod:`helpers.dist`: running the training / test tools in subprocesses.
- :mod:`helpers.logs`: the messages the current MMEngine logger emits in a block.
"""
