"""What autograd keeps for the backward of a training forward, in bytes."""
from typing import Callable, Optional

import torch
import torch.nn as nn


def saved_tensor_bytes(fn: Callable[[], object], module: Optional[nn.Module] = None) -> int:
    """Bytes of the distinct storages of the tensors autograd saves while ``fn()`` runs
    (``torch.autograd.graph.saved_tensors_hooks``), parameters and buffers of ``module``
    (and views of them) excluded: the memory a deep model holds per layer between its
    forward and its backward. The result of ``fn`` is dropped."""
    skip = set() if module is None else {
        t.untyped_storage().data_ptr() for t in (*module.parameters(), *module.buffers())}
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in skip and t.device.type != 'meta':
            seen[ptr] = max(seen.get(ptr, 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
