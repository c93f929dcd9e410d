"""What autograd keeps for the backward of a training forward, in bytes.

:func:`saved_tensor_bytes` counts the distinct storages of the tensors that autograd
saves while ``fn`` runs (``torch.autograd.graph.saved_tensors_hooks``), leaving out the
module's parameters (and views of them): the memory a deep model holds per layer
between its forward and its backward.
"""
from typing import Callable, Optional

import torch
import torch.nn as nn


def saved_tensor_bytes(fn: Callable[[], object], module: Optional[nn.Module] = None) -> int:
    """Bytes of the distinct tensors autograd saves while ``fn()`` runs, parameters and
    buffers of ``module`` excluded. The result of ``fn`` is dropped afterwards."""
    skip = set()
    if module is not None:
        for t in list(module.parameters()) + list(module.buffers()):
            skip.add(t.untyped_storage().data_ptr())
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and t.device.type != 'meta':
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())
