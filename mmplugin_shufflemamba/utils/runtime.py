"""Runner set-up shared by ``tools/train.py`` and ``tools/test.py``.

On GPU nodes nothing changes: MMEngine initialises NCCL itself. On machines without
CUDA, MMEngine 0.10 cannot start a multi-process run (its ``init_dist`` calls
``torch.cuda.set_device`` and DDP gets ``device_ids=[LOCAL_RANK]``), and SyncBN does not
run inside a CPU process group. :func:`prepare_runtime` creates the gloo process group
itself, lets DDP wrap CPU modules and swaps SyncBN for BN in the model config.
"""
import os
from typing import Any

import torch
import torch.distributed as dist


def _replace_syncbn(node: Any) -> int:
    """Replace ``type='SyncBN'`` by ``'BN'`` in a (nested) config; return the count."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in ('SyncBN', 'MMSyncBN', 'TorchSyncBN'):
            node['type'] = 'BN'
            count += 1
        for v in node.values():
            count += _replace_syncbn(v)
    elif isinstance(node, (list, tuple)):
        for v in node:
            count += _replace_syncbn(v)
    return count


def prepare_runtime(cfg, launcher: str) -> None:
    """Adapt ``cfg`` in place for the machine this process runs on."""
    if torch.cuda.is_available():
        return
    _replace_syncbn(cfg.model)
    if launcher == 'none':
        return
    if launcher != 'pytorch':
        raise RuntimeError(
            f"launcher='{launcher}' needs GPUs; on a machine without CUDA use "
            "tools/dist_train.sh (torchrun, launcher='pytorch') or launcher='none'.")
    if not dist.is_initialized():
        for var in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
            if var not in os.environ:
                raise RuntimeError(f"launcher='pytorch' needs ${var}: start the script "
                                   'with torchrun (tools/dist_train.sh does).')
        dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg', None) or
                   dict(type='MMDistributedDataParallel'))
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
