"""Runner set-up shared by ``tools/train.py`` and ``tools/test.py``.

On GPU nodes nothing changes: MMEngine initialises NCCL itself. On machines without
CUDA, MMEngine 0.10 cannot start a multi-process run (its ``init_dist`` calls
``torch.cuda.set_device`` and DDP gets ``device_ids=[LOCAL_RANK]``), and SyncBN does not
run inside a CPU process group. :func:`prepare_runtime` creates the gloo process group
itself, lets DDP wrap CPU modules and swaps SyncBN for BN in the model config.

:func:`shutdown_distributed` ends a distributed job cleanly (see its docstring): without
it, a rank could die at exit with "terminate called without an active exception"
(SIGABRT), so that torchrun reported a finished job as failed.
"""
import gc
import logging
import os
import os.path as osp
import time
from typing import Any, List, Optional

import torch
import torch.distributed as dist

# Names of the threads a gloo process group runs (ProcessGroupGloo workers, the TCP
# transport's event loop).
_GLOO_THREADS = ('pt_gloo_runloop', 'gloo_tcp_loop')


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


def _import_dynamo_first() -> None:
    """Import ``torch._dynamo`` before any process group exists.

    DDP imports it lazily at its first construction; imported while a process group
    exists, it keeps references to it (measured with torch 2.14: the group's refcount
    goes from 10 to 20), so that ``destroy_process_group`` no longer frees the group and
    its worker threads live on until the interpreter exits (see
    :func:`shutdown_distributed`). Imported first, nothing holds the group.
    """
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # pragma: no cover - an optional part of torch
        pass


def _cpu_optim_wrapper(cfg) -> None:
    """MMEngine's ``AmpOptimWrapper`` (the GPU recipes' bf16 / fp16 autocast) refuses
    to run without CUDA: train in float32 with the plain ``OptimWrapper`` (same optimizer,
    clipping and paramwise settings) and say so; ``tools/train.py --amp`` gives bf16 CPU
    autocast instead."""
    wrapper = cfg.get('optim_wrapper', None)
    if not isinstance(wrapper, dict) or wrapper.get('type') != 'AmpOptimWrapper':
        return
    dtype = wrapper.get('dtype', 'float16')
    wrapper['type'] = 'OptimWrapper'
    for key in ('dtype', 'loss_scale', 'use_fsdp'):
        wrapper.pop(key, None)
    from mmengine.logging import print_log
    print_log(f'No CUDA: the config\'s AmpOptimWrapper ({dtype} autocast) is replaced by '
              'the plain OptimWrapper (float32); use tools/train.py --amp for bfloat16 '
              'CPU autocast.', logger='current', level=logging.WARNING)


def prepare_runtime(cfg, launcher: str) -> None:
    """Adapt ``cfg`` in place for the machine this process runs on."""
    if launcher != 'none':
        _import_dynamo_first()
    if torch.cuda.is_available():
        return
    _replace_syncbn(cfg.model)
    _cpu_optim_wrapper(cfg)
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


def _thread_names() -> List[str]:
    """Names of this process's threads (Linux; empty elsewhere)."""
    try:
        tasks = os.listdir('/proc/self/task')
    except OSError:
        return []
    names = []
    for t in tasks:
        try:
            with open(f'/proc/self/task/{t}/comm', encoding='utf-8') as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


def communication_threads() -> List[str]:
    """The gloo threads still running in this process (Linux; empty elsewhere)."""
    return [n for n in _thread_names() if n.startswith(_GLOO_THREADS)]


def shutdown_distributed(timeout: float = 10.0, logger=None) -> bool:
    """End a finished distributed job: barrier, destroy the process group, wait until
    its threads have ended. Call it after the runner is released (no model wrapper may
    still reference the group), on the success path only (a barrier would wait for
    ranks that failed). Returns whether no communication thread is left.

    Why: a gloo process group runs worker threads, and a worker drops its reference to
    a finished collective only after the caller has returned from ``wait()``. If that
    was the last reference to tensors created in Python (``broadcast_object_list``,
    ``all_gather_object``, the last validation's result collection), the worker needs
    the GIL to release them. When the main thread is already finalising the
    interpreter, Python ends that thread with ``pthread_exit``, whose forced unwinding
    through the (noexcept) destructor calls ``std::terminate``: "terminate called
    without an active exception", SIGABRT, and torchrun reports the job as failed
    (measured: 3 of 49 runs of the 2-process CPU job; a 2-process script that ends with
    ``broadcast_object_list``: 4 of 40; core dump: ``ProcessGroupGloo::runLoop`` ->
    ``~AsyncBroadcastWork`` -> ``TensorImpl::decref_pyobject`` -> ``take_gil`` ->
    ``pthread_exit`` -> ``std::terminate``). Destroying the group while Python is fully
    alive joins those threads (``~ProcessGroupGloo``) first.
    """
    log = logger or logging.getLogger(__name__)
    if not (dist.is_available() and dist.is_initialized()):
        return True
    gc.collect()  # model wrappers in reference cycles hold the group
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()
    gc.collect()
    deadline = time.monotonic() + timeout
    left = communication_threads()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
        left = communication_threads()
    if left:
        log.warning(
            'the process group was destroyed but %d communication threads are still '
            'running (%s): something still references it, so the process may abort at '
            'exit', len(left), ', '.join(sorted(set(left))))
        return False
    return True
