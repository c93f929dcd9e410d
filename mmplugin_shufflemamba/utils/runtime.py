"""Runner set-up shared by ``tools/train.py`` and ``tools/test.py``.

On GPU nodes MMEngine initialises NCCL itself. Without CUDA, MMEngine 0.10 cannot start a
multi-process run (``init_dist`` calls ``torch.cuda.set_device``, DDP gets
``device_ids=[LOCAL_RANK]``) and SyncBN does not run: :func:`prepare_runtime` creates
the gloo process group, lets DDP wrap CPU modules and swaps SyncBN for BN.
:func:`shutdown_distributed` ends a distributed job without the SIGABRT at exit.
"""
import gc
import glob
import logging
import os
import os.path as osp
import re
import time
from typing import Any, List, Optional

import torch
import torch.distributed as dist
from mmengine.logging import print_log

from ..datasets.data_checks import DataError
from ..engine.hooks.finite_loss_hook import NonFiniteTrainingError
from ..errors import ArgumentError
from .config_checks import ConfigError, _typed_nodes

# the threads a gloo process group runs (ProcessGroupGloo workers, TCP event loop)
_GLOO_THREADS = ('pt_gloo_runloop', 'gloo_tcp_loop')


def _replace_syncbn(node: Any) -> int:
    """Replace ``type='SyncBN'`` by ``'BN'`` in a (nested) config; return the count."""
    found = [d for _, d in _typed_nodes(node, ('SyncBN', 'MMSyncBN', 'TorchSyncBN'))]
    for d in found:
        d['type'] = 'BN'
    return len(found)


def _import_dynamo_first() -> None:
    """Import ``torch._dynamo`` before any process group exists: DDP imports it lazily,
    and imported while a group exists it keeps references to it (measured with torch
    2.14: the group's refcount goes from 10 to 20), so that ``destroy_process_group``
    no longer frees the group and its threads live on until the interpreter exits (see
    :func:`shutdown_distributed`)."""
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
    print_log(f'No CUDA: the config\'s AmpOptimWrapper ({dtype} autocast) is replaced by '
              'the plain OptimWrapper (float32); use tools/train.py --amp for bfloat16 '
              'CPU autocast.', logger='current', level=logging.WARNING)


def prepare_runtime(cfg, launcher: str) -> None:
    """Adapt ``cfg`` in place for the machine this process runs on (and let MMEngine's
    loaders read MMEngine / official checkpoints with the safe ``torch.load``)."""
    from ..checkpoint.safe_load import enable_mmengine_checkpoints
    enable_mmengine_checkpoints()
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
    # what the run uses, in the config the runner dumps (the configs say 'nccl')
    cfg.merge_from_dict({'env_cfg.dist_cfg.backend': 'gloo'})
    cfg.model_wrapper_cfg = dict(cfg.get('model_wrapper_cfg', None) or
                                 dict(type='MMDistributedDataParallel'), device_ids=None)


def build_runner(cfg):
    """MMEngine's ``Runner.from_cfg``, with :class:`EvalImageSizeHook`. A setting that
    this package refuses (``--cfg-options model.backbone.shuffle_rate=2``: an
    :class:`ArgumentError`) is a :class:`ConfigError` with its message, for the tools to
    stop with, not a traceback; other build errors keep theirs."""
    from mmengine.runner import Runner

    from ..engine.hooks import EvalImageSizeHook
    try:
        runner = Runner.from_cfg(cfg)
    except ArgumentError as e:
        raise ConfigError(f'the config does not build: {e}') from e
    runner.register_hook(EvalImageSizeHook())  # (a segmentation test batch: one size)
    return runner


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint ``tools/train.py --resume`` (no path) continues from: the file that
    MMEngine's ``last_checkpoint`` record names, in ``work_dir`` itself first (the
    record's absolute path still points to the old place of a moved or copied work
    dir), then where the record says; None without a record."""
    record = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(record):
        return None
    with open(record) as f:
        saved = f.read().strip()
    here = osp.join(work_dir, osp.basename(saved))
    if osp.isfile(here):
        return here
    # Saved elsewhere on purpose (CheckpointHook's out_dir), or a remote file backend.
    if osp.isfile(saved) or '://' in saved:
        return saved
    raise ConfigError(
        f'--resume: {record} names {saved}, which does not exist, and '
        f'{osp.basename(saved)} is not in {work_dir}: name the checkpoint to continue '
        'from, --resume PATH.')


def apply_resume(cfg, resume: Optional[str]) -> None:
    """Set ``cfg.resume`` / ``cfg.load_from`` for ``tools/train.py --resume [CKPT]``
    (``resume``: None without the option, 'auto' without CKPT): CKPT resumes from that
    file; 'auto' (or ``resume = True`` in the config without ``load_from``) from
    :func:`latest_checkpoint` of the work dir, and without one the run starts afresh,
    from the config's ``load_from`` if it has one (a resumable job's first start), which
    the log says (a mistyped work dir would otherwise restart a run unnoticed)."""
    if resume not in (None, 'auto'):
        cfg.resume, cfg.load_from = True, resume
    elif resume == 'auto' or (cfg.get('resume') and cfg.get('load_from') is None):
        latest = latest_checkpoint(cfg.work_dir)
        cfg.resume = latest is not None
        cfg.load_from = latest if latest is not None else cfg.get('load_from')
        if latest is None:
            start = f" from load_from={cfg.load_from}" if cfg.load_from else ''
            print_log(f'Nothing to resume in {cfg.work_dir} (no last_checkpoint, iter_*.pth '
                      f'or epoch_*.pth): the run starts at iteration 0{start}.',
                      logger='current', level=logging.WARNING)


def resume_seed(cfg) -> Optional[int]:
    """For a resume from a local file where the config fixes no seed: set
    ``cfg.randomness.seed`` to the seed the run was trained with (its ``meta['seed']``)
    and return it. MMEngine restores that seed only after it built the data loaders,
    whose sampler order and workers' seeds it decides: the resumed run would see
    another data order than the uninterrupted one."""
    randomness = cfg.get('randomness') or {}
    path = cfg.get('load_from')
    if not cfg.get('resume') or randomness.get('seed') is not None or not path \
            or not osp.isfile(str(path)):
        return None
    from ..checkpoint.safe_load import safe_torch_load
    meta = safe_torch_load(str(path), 'cpu', mmap=True).get('meta')
    seed = meta.get('seed') if isinstance(meta, dict) else None
    if isinstance(seed, int):
        cfg.randomness = dict(randomness, seed=seed)
        print_log(f"Resuming with the seed the run was trained with ({seed}, meta['seed'] "
                  f'of {path}; the config sets none), so the data order is its own.',
                  logger='current')
        return seed
    return None


def warn_random_backbone(cfg) -> bool:
    """Log a warning (and return True) when a dense-prediction config trains its
    ShuffleMamba backbone from random weights: no ``init_cfg`` on the backbone and no
    ``load_from`` / resume (the zoo configs leave the checkpoint to the user, and the
    paper's results fine-tune from ImageNet weights). ImageNet pretraining starts from
    random weights by design and is not warned about."""
    model = cfg.get('model') or {}
    backbone = model.get('backbone') if isinstance(model, dict) else None
    if not isinstance(backbone, dict) or cfg.get('load_from') or cfg.get('resume') or \
            str(model.get('type', '')).split('.')[-1] == 'ImageClassifier':
        return False
    kind = str(backbone.get('type', '')).split('.')[-1]
    if kind not in ('ShuffleMamba', 'ShuffleMambaAdapter') or backbone.get('init_cfg'):
        return False
    print_log(f'model.backbone ({kind}) has no init_cfg: it trains from random weights. '
              "The paper's results fine-tune from an ImageNet checkpoint: set "
              "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH) "
              '(docs/loading.md), or ignore this for a run from scratch.',
              logger='current', level=logging.WARNING)
    return True


def communication_threads() -> List[str]:
    """The gloo threads still running in this process (Linux; empty elsewhere)."""
    names = []
    for comm in glob.glob('/proc/self/task/*/comm'):
        try:
            with open(comm, encoding='utf-8') as f:
                names.append(f.read().strip())
        except OSError:  # the thread ended meanwhile
            pass
    return [n for n in names if n.startswith(_GLOO_THREADS)]


def shutdown_distributed(timeout: float = 10.0, logger=None) -> bool:
    """End a finished distributed job: barrier, destroy the process group, wait until
    its threads have ended. Call it after the runner is released (no model wrapper may
    still reference the group), on the success path only (a barrier would wait for
    ranks that failed). Returns whether no communication thread is left.

    Why: a gloo worker thread drops its reference to a finished collective only after
    the caller has returned from ``wait()``; if that was the last reference to tensors
    made in Python (``broadcast_object_list``, ``all_gather_object``, the last
    validation's results), the worker needs the GIL to free them. While the interpreter
    finalises, Python ends that thread with ``pthread_exit``, whose unwinding through the
    noexcept destructor calls ``std::terminate``: SIGABRT, a failed torchrun job
    (measured: 3 of 49 runs of the 2-process CPU job; core dump:
    ``ProcessGroupGloo::runLoop`` -> ``~AsyncBroadcastWork`` -> ``take_gil`` ->
    ``pthread_exit``). Destroying the group while Python is fully alive joins those
    threads (``~ProcessGroupGloo``) first.
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
    while (left := communication_threads()) and time.monotonic() < deadline:
        time.sleep(0.05)
        gc.collect()
    if left:
        log.warning(
            'the process group was destroyed but %d communication threads are still '
            'running (%s): something still references it, so the process may abort at '
            'exit', len(left), ', '.join(sorted(set(left))))
        return False
    return True


def _hook_name(hook: Any) -> str:
    kind = hook.get('type') if isinstance(hook, dict) else type(hook).__name__
    return (kind if isinstance(kind, str) else getattr(kind, '__name__', str(kind))) \
        .split('.')[-1]


def add_training_hooks(cfg, finite_check: bool = True) -> List[str]:
    """Add the hooks of ``tools/train.py`` to ``cfg.custom_hooks`` unless listed there;
    return the names added: ``RNGStateHook`` (exact resumes) and ``FiniteLossHook`` (stop
    at the first NaN / inf loss or gradient norm), the latter unless ``finite_check`` is
    False (``--no-finite-check``) or the config says ``finite_check = False``, which also
    removes the config's own (and logs it)."""
    hooks = list(cfg.get('custom_hooks', None) or [])
    names = [_hook_name(h) for h in hooks]
    wanted = ['RNGStateHook']
    if finite_check and cfg.get('finite_check', True) is not False:
        wanted.append('FiniteLossHook')
    else:
        hooks = [h for h in hooks if _hook_name(h) != 'FiniteLossHook']
        print_log('The non-finite loss check (FiniteLossHook) is off '
                  f'({"--no-finite-check" if not finite_check else "finite_check=False"}): '
                  'a diverged run goes on and saves NaN weights.', logger='current',
                  level=logging.WARNING)
    added = [n for n in wanted if n not in names]
    cfg.custom_hooks = hooks + [dict(type=n) for n in added]
    return added


def _reason(error: BaseException) -> str:
    """The error's message; of one re-raised from a DataLoader worker ("Caught DataError
    in DataLoader worker process 0. Original Traceback ..."), the worker's message
    without its traceback."""
    text = str(error)
    if text.startswith('Caught ') and 'Original Traceback' in text:
        ends = [m.end() for m in re.finditer(
            rf'^(?:[\w.]+\.)?{type(error).__name__}: ', text, re.M)]
        if ends:
            return text[ends[-1]:].strip()
    return text


def stop_message(error: BaseException, tool: str = '') -> str:
    """What a tool prints when a check stopped it (:class:`CheckpointFitError`,
    ``NonFiniteTrainingError``, a data or config error): the report on rank 0 (or a
    single process), one line on the other ranks of a distributed job (every rank
    reached the same verdict); a data error, which one rank meets in its share of the
    data, in full on every rank."""
    prefix = f'{tool}: ' if tool else ''
    rank = int(os.environ.get('RANK', '0') or 0)
    if isinstance(error, NonFiniteTrainingError):  # the hook logged the details
        first = str(error).split('. ')[0]
        return f'{prefix}{first}.' if rank == 0 else f'[rank {rank}] {prefix}stopped.'
    reason = _reason(error)
    if isinstance(error, DataError):
        return (f'[rank {rank}] ' if os.environ.get('WORLD_SIZE', '1') != '1' else '') + \
            f'{prefix}{reason}'
    if rank != 0:
        return f'[rank {rank}] {prefix}stopped: {reason.splitlines()[0]}'
    return f'{prefix}{reason}'


def log_kernels(device: Optional[str] = None, logger: str = 'current') -> dict:
    """Log which implementation each op runs (:func:`~..ops.kernels.kernel_report`)
    for ``device`` (default: 'cuda' when a GPU is visible, else 'cpu'); returns the
    report. The tools call it at start, so a run's log says whether it trains on the
    fused kernels or on a fallback."""
    from ..ops.kernels import kernel_report
    if device is None:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    report = kernel_report(device)
    lines = ''.join(f'\n    {op}: {desc}' for op, desc in report.items())
    print_log(f'Kernels for {device} tensors (kernel=auto):{lines}', logger=logger)
    return report
