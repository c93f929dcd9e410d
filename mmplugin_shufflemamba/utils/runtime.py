"""Runner set-up shared by ``tools/train.py`` and ``tools/test.py``.

On GPU nodes nothing changes: MMEngine initialises NCCL itself. On machines without
CUDA, MMEngine 0.10 cannot start a multi-process run (its ``init_dist`` calls
``torch.cuda.set_device`` and DDP gets ``device_ids=[LOCAL_RANK]``), and SyncBN does not
run inside a CPU process group. :func:`prepare_runtime` creates the gloo process group
itself, lets DDP wrap CPU modules and swaps SyncBN for BN in the model config.
"""
import os
import os.path as osp
from typing import Any, Optional

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


def load_config(config: str,
                launcher: str = 'none',
                work_dir: Optional[str] = None,
                cfg_options: Optional[dict] = None):
    """Read a config for ``tools/train.py`` / ``tools/test.py``: apply overrides, choose
    the work dir (``./work_dirs/<config name>`` by default) and adapt it to this
    machine with :func:`prepare_runtime` (called by the tools after their own edits)."""
    from mmengine.config import Config
    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    cfg.launcher = launcher
    if cfg_options is not None:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(config))[0])
    return cfg
