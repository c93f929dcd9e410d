"""ShuffleMamba-B beside mmseg's ViT-B, and ShuffleMambaAdapter-B beside ShuffleMamba-B,
measured in one run with interleaved repetitions (machine noise hits both sides alike),
printed as ratios against targets.

    python tools/analysis/benchmark_backbones.py [--sizes 512 1024 2048] [--reps 3]
        [--device cpu|cuda] [--skip-memory] [--skip-adapter | --adapter-only]
        [--json out.json]

Measures, at batch 1: eval forward and a training step (forward + backward) time at each
size; peak memory of a training step (CPU: peak RSS of a fresh subprocess; CUDA:
max_memory_allocated); SLWS overhead (training step with shuffle_rate=0.5 vs 0.0); the
selective scan kernels against the sequential reference (and mamba-ssm's CUDA kernel
against our PyTorch path on a GPU); the adapter's eval forward and training step against
the plain backbone's at ``--adapter-size``.

The GPU protocol (``--protocol gpu``; runs on the CPU too, e.g. with small ``--cases``)
measures, in one process and with interleaved repetitions, the training step (forward +
backward) time and peak memory of ShuffleMamba-B beside timm's ViT-B (fused SDPA
attention: what a user would pick instead) and mmseg's ViT-B, and the UperNet training
step of ``configs/upernet_shufflemamba_b.py`` beside mmseg's ViT-B UperNet, and the
training step of one B-size mixer as the lean fused function (``BiMambaInnerFn``) beside
the composed differentiable ops (``bimamba_inner_ref``), per case
``kind:size:batch:dtype`` (kind backbone, upernet or mixer; a mixer case runs on the
tokens of a size x size image); SLWS costs with the host and the device draw. With
``--compile``, ShuffleMamba-B and the lean mixer are also timed under ``torch.compile``
(``--compile-backend``, inductor by default, and ``--compile-mode``, e.g.
``reduce-overhead`` for CUDA graphs; static shapes, compiled before anything is
measured). It prints ratios against the targets and the kernel each op ran:

    python tools/analysis/benchmark_backbones.py --protocol gpu --device cuda --json out.json
    python tools/analysis/benchmark_backbones.py --protocol gpu \
        --cases backbone:512:8:bfloat16 upernet:512:2:float32
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba import ShuffleMamba, ShuffleMambaAdapter
from mmplugin_shufflemamba.ops.kernels import kernel_report
from mmplugin_shufflemamba.utils.cli import device as device_arg
from mmplugin_shufflemamba.ops import (has_selective_scan_cpu, has_selective_scan_cuda,
                                       selective_scan, selective_scan_cpu,
                                       selective_scan_ref, selective_scan_torch)

# The GPU protocol's cases (kind:size:batch:dtype) and targets (ratios measured in one
# run).
GPU_CASES = ('backbone:512:8:bfloat16', 'backbone:1024:2:bfloat16', 'upernet:512:2:bfloat16',
             'upernet:512:2:float32', 'mixer:512:8:bfloat16', 'mixer:512:2:float32')
CASE_KINDS = ('backbone', 'upernet', 'mixer')
GPU_TARGETS = {
    'step_ratio_vs_timm[backbone:512:8:bfloat16]': 2.5,
    'mem_ratio_vs_timm[backbone:1024:2:bfloat16]': 1.5,
    'step_ratio_vs_mmseg[upernet:512:2:bfloat16]': 1.0,
    'step_ratio_vs_mmseg[upernet:512:2:float32]': 0.9,
    'slws_overhead_pct': 2.0,
}
TARGETS = {
    'eval_fwd_ratio@512': 1.2, 'eval_fwd_ratio@1024': 0.8,
    'train_step_ratio@512': 1.5, 'train_step_ratio@1024': 1.0,
    'train_mem_ratio@1024': 0.7, 'shufflemamba_fwd_1024_over_512': 4.4,
    'slws_overhead_pct': 2.0, 'adapter_eval_fwd_ratio': 1.6,
    'adapter_train_step_ratio': 1.6,
}


def build(name, shuffle_rate=0.0, device='cpu', shuffle_draw='host'):
    if name in ('shufflemamba-b', 'shufflemamba-reg-b'):
        # Reg-B: the plain twin of the adapter below (RMSNorm blocks, as its checkpoint).
        norm = dict(type='RMSNorm') if name == 'shufflemamba-reg-b' else dict(type='LN')
        m = ShuffleMamba(arch='b', img_size=224, out_indices=(5, 11, 17, 23),
                         drop_path_rate=0.2, shuffle_rate=shuffle_rate, norm_cfg=norm,
                         shuffle_draw=shuffle_draw)
    elif name == 'shufflemamba-adapter-b':
        # The backbone of configs/upernet_shufflemamba_reg-adapter-b.py (BN for SyncBN).
        m = ShuffleMambaAdapter(arch='b', img_size=224, norm_cfg=dict(type='RMSNorm'),
                                drop_path_rate=0.2, shuffle_rate=shuffle_rate,
                                deform_num_heads=12, deform_ratio=0.5,
                                adapter_norm_cfg=dict(type='BN', requires_grad=True))
    elif name == 'timm-vit-b':
        # timm's ViT-B/16 with fused (SDPA) attention, features of every token.
        import timm
        vit = timm.create_model('vit_base_patch16_224', pretrained=False, num_classes=0,
                                dynamic_img_size=True, drop_path_rate=0.1)
        m = _Features(vit)
        return m.to(device)
    elif name == 'vit-b':
        # The ViT-B of mmseg's upernet_vit-b16_mln config.
        from mmseg.models.backbones import VisionTransformer
        m = VisionTransformer(img_size=(512, 512), patch_size=16, embed_dims=768,
                              num_layers=12, num_heads=12, mlp_ratio=4,
                              out_indices=(2, 5, 8, 11), qkv_bias=True,
                              drop_path_rate=0.1, with_cls_token=True,
                              norm_cfg=dict(type='LN', eps=1e-6),
                              act_cfg=dict(type='GELU'), interpolate_mode='bicubic')
    else:
        raise ValueError(name)
    m.init_weights()
    return m.to(device)


class _Features(torch.nn.Module):
    """timm model -> (token features, ) like the dense backbones' tuple of outputs."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model.forward_features(x), )


def build_upernet(which, device='cpu'):
    """The UperNet segmentor of ``configs/upernet_shufflemamba_b.py`` ('shufflemamba-b')
    or of mmseg's ViT-B UperNet config ('vit-b'), SyncBN as BN off a process group."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if which == 'shufflemamba-b':
        cfg = Config.fromfile(os.path.join(root, 'configs', 'upernet_shufflemamba_b.py'))
    else:
        from mmengine.hub import get_config
        cfg = get_config('mmseg::vit/vit_vit-b16_mln_upernet_8xb2-160k_ade20k-512x512.py')
    init_default_scope('mmseg')
    from mmplugin_shufflemamba.utils.runtime import _replace_syncbn
    _replace_syncbn(cfg.model)
    cfg.model.pop('pretrained', None)
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model.to(device)


def upernet_step(model, batch, size, dtype, device):
    """A training step of a segmentor on random images and labels (150 classes)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    x = torch.randn(batch, 3, size, size, device=device)
    samples = []
    for _ in range(batch):
        s = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                        ori_shape=(size, size)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, size, size), device=device))
        samples.append(s)

    def step():
        model.train()
        with _autocast(device, dtype):
            losses = model.loss(x, samples)
        loss = sum(v.float().sum() for k, v in losses.items() if 'loss' in k)
        loss.backward()
        for p in model.parameters():
            p.grad = None
    return step


def _autocast(device, dtype):
    if dtype == torch.float32:
        return torch.autocast(device_type=device, enabled=False)
    return torch.autocast(device_type=device, dtype=dtype)


def backbone_step(model, x, dtype, device):
    def step():
        model.train()
        with _autocast(device, dtype):
            outs = model(x)
        loss = sum(o.float().mean() for o in outs)
        loss.backward()
        for p in model.parameters():
            p.grad = None
    return step


class _Mixer(torch.nn.Module):
    """A B-size block's norm and mixer (768 channels, as in ShuffleMamba-B), the mixer
    through the lean fused function or through the composed differentiable ops (the same
    weights for both); (B, L, 768) -> (output, )."""

    def __init__(self, lean, other=None):
        super().__init__()
        from mmplugin_shufflemamba.models.layers import BiMambaMixer
        self.norm = torch.nn.LayerNorm(768) if other is None else other.norm
        self.mixer = BiMambaMixer(768) if other is None else other.mixer
        self.lean = lean

    def forward(self, hidden):
        from mmplugin_shufflemamba.ops.bimamba_inner import (bimamba_inner_fn,
                                                             bimamba_inner_ref)
        fn = bimamba_inner_fn if self.lean else bimamba_inner_ref
        return (fn(self.mixer, self.norm(hidden), self.mixer.kernel), )


def peak_memory(fn, device):
    """Peak memory (MiB) above the current allocation during ``fn()``: CUDA's
    allocator statistics; on the CPU the growth of the process's peak RSS."""
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _rss_kb('VmRSS:')
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
    fn()
    return (_rss_kb('VmHWM:') - base) / 1024


def run_protocol(cases, reps, device, slws_case=None, compile_kw=None):
    """The GPU protocol (see the module docstring): {figure: value}. With
    ``compile_kw`` (torch.compile's keywords), compiled ShuffleMamba-B / lean mixer beside
    the eager ones."""
    dtypes = dict(float32=torch.float32, bfloat16=torch.bfloat16, float16=torch.float16)
    results = {}
    models = {}

    def get(name, builder):
        if name not in models:
            models[name] = builder()
        return models[name]

    for case in cases:
        kind, size, batch, dtype_name = case.split(':')
        size, batch, dtype = int(size), int(batch), dtypes[dtype_name]
        if kind == 'backbone':
            x = torch.randn(batch, 3, size, size, device=device)
            names = ['shufflemamba-b', 'timm-vit-b', 'vit-b']
            steps = {n: backbone_step(get(n, lambda n=n: build(n, device=device)), x, dtype,
                                      device) for n in names}
            if compile_kw is not None:
                names.append('shufflemamba-b-compiled')
                steps[names[-1]] = backbone_step(get(names[-1], lambda: torch.compile(
                    build('shufflemamba-b', device=device), **compile_kw)), x, dtype, device)
        elif kind == 'upernet':
            names = ['shufflemamba-b', 'vit-b']
            steps = {n: upernet_step(get(f'upernet-{n}', lambda n=n: build_upernet(
                n, device)), batch, size, dtype, device) for n in names}
        elif kind == 'mixer':
            names = ['lean-mixer', 'composed-mixer']
            lean = get('lean-mixer', lambda: _Mixer(True).to(device))
            composed = get('composed-mixer', lambda: _Mixer(False, lean))
            x = torch.randn(batch, (size // 16)**2, 768, device=device)
            steps = {n: backbone_step(m, x, dtype, device)
                     for n, m in zip(names, (lean, composed))}
            if compile_kw is not None:
                names.append('lean-mixer-compiled')
                steps[names[-1]] = backbone_step(get(names[-1], lambda: torch.compile(
                    _Mixer(True, lean), **compile_kw)), x, dtype, device)
        else:
            raise ValueError(f'case kind must be one of {CASE_KINDS}, got {kind!r}')
        for n in names:  # compile (and capture) before measuring
            if n.endswith('-compiled'):
                steps[n]()
        mem = {n: peak_memory(fn, device) for n, fn in steps.items()}
        t = interleaved(steps, reps, device)
        for n in names:
            results[f'step_s[{n}][{case}]'] = t[n]
            results[f'mem_mib[{n}][{case}]'] = mem[n]
        # (figure name, numerator, denominator), where both were measured
        for tag, num, den in (('vs_timm', 'shufflemamba-b', 'timm-vit-b'),
                              ('vs_mmseg', 'shufflemamba-b', 'vit-b'),
                              ('compiled_vs_eager', 'shufflemamba-b-compiled',
                               'shufflemamba-b'),
                              ('compiled_vs_eager', 'lean-mixer-compiled', 'lean-mixer'),
                              ('lean_vs_composed', 'lean-mixer', 'composed-mixer')):
            if num in t and den in t:
                results[f'step_ratio_{tag}[{case}]'] = t[num] / t[den]
                results[f'mem_ratio_{tag}[{case}]'] = mem[num] / max(mem[den], 1e-9)
        print(f'[{case}] ' + ', '.join(f'{n} {t[n] * 1e3:.1f} ms / {mem[n]:.0f} MiB'
                                       for n in names), flush=True)
        if device == 'cuda':
            models.clear()
            torch.cuda.empty_cache()
    if slws_case:
        kind, size, batch, dtype_name = slws_case.split(':')
        x = torch.randn(int(batch), 3, int(size), int(size), device=device)
        slws = {'p0.0': build('shufflemamba-b', device=device)}
        for draw in ('host', 'device'):
            slws[f'p0.5-{draw}'] = build('shufflemamba-b', shuffle_rate=0.5, device=device,
                                         shuffle_draw=draw)
            slws[f'p0.5-{draw}'].load_state_dict(slws['p0.0'].state_dict())
        t = interleaved({k: backbone_step(m, x, dtypes[dtype_name], device)
                         for k, m in slws.items()}, reps, device)
        results['slws_overhead_pct'] = (t['p0.5-host'] / t['p0.0'] - 1) * 100
        results['slws_device_draw_overhead_pct'] = (t['p0.5-device'] / t['p0.0'] - 1) * 100
        print(f'[SLWS {slws_case}] ' + ', '.join(f'{k} {v * 1e3:.1f} ms'
                                                 for k, v in t.items()), flush=True)
    return results


def sync(device):
    if device == 'cuda':
        torch.cuda.synchronize()


def eval_forward(model, x):
    model.eval()
    with torch.no_grad():
        model(x)


def train_step(model, x):
    model.train()
    outs = model(x)
    loss = sum(o.float().mean() for o in outs)
    loss.backward()
    for p in model.parameters():
        p.grad = None


def timed(fn, device):
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def interleaved(cases, reps, device):
    """cases: {name: callable}. One warm-up each, then reps rounds in turn."""
    for fn in cases.values():
        fn()
    times = {k: [] for k in cases}
    for _ in range(reps):
        for k, fn in cases.items():
            times[k].append(timed(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def _available_mib(device):
    if device == 'cuda':
        free, _ = torch.cuda.mem_get_info()
        return free / 2**20
    with open('/proc/meminfo') as f:
        for line in f:
            if line.startswith('MemAvailable:'):
                return int(line.split()[1]) / 1024
    return float('inf')


def _rss_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    return 0


def memory_child(name, size, device):
    """Peak memory (MiB) of one training step, run in a fresh process."""
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', torch.get_num_threads())))
    model = build(name, device=device)
    x = torch.randn(1, 3, size, size, device=device)
    if device == 'cuda':
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step(model, x)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    base = _rss_kb('VmRSS:')
    with open('/proc/self/clear_refs', 'w') as f:  # reset the peak (VmHWM)
        f.write('5')
    train_step(model, x)
    return (_rss_kb('VmHWM:') - base) / 1024


def measure_memory(name, size, device):
    code = ('from benchmark_backbones import memory_child; '
            f'print("PEAK", memory_child({name!r}, {size}, {device!r}))')
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.abspath(__file__)) + ':' +
               os.environ.get('PYTHONPATH', ''))
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         env=env)
    for line in run.stdout.splitlines():
        if line.startswith('PEAK'):
            return float(line.split()[1])
    tail = (run.stderr or run.stdout)[-400:]
    why = 'killed (out of memory?)' if run.returncode < 0 else f'exit {run.returncode}'
    print(f'  memory run {name}@{size} failed ({why}): {tail}', file=sys.stderr)
    return float('nan')


def scan_case(device, L=1024, d_inner=1536, N=16):
    g = torch.Generator(device='cpu').manual_seed(0)
    args = [torch.randn(1, d_inner, L, generator=g), torch.randn(1, d_inner, L, generator=g),
            -torch.rand(d_inner, N, generator=g), torch.randn(1, N, L, generator=g),
            torch.randn(1, N, L, generator=g), torch.randn(d_inner, generator=g),
            torch.randn(1, d_inner, L, generator=g), torch.randn(d_inner, generator=g)]
    return [a.to(device) for a in args]


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--sizes', type=int, nargs='+', default=[512, 1024, 2048])
    p.add_argument('--reps', type=int, default=3)
    p.add_argument('--slws-reps', type=int, default=7)
    p.add_argument('--slws-size', type=int, default=512,
                   help='image size of the SLWS overhead measurement')
    p.add_argument('--device', type=device_arg,
                   default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--skip-memory', action='store_true')
    p.add_argument('--max-vit-tokens', type=int, default=4096,
                   help='skip ViT-B above this many tokens (quadratic attention memory)')
    p.add_argument('--adapter-size', type=int, default=512,
                   help='image size of the adapter vs plain backbone comparison')
    group = p.add_mutually_exclusive_group()
    group.add_argument('--skip-adapter', action='store_true')
    group.add_argument('--adapter-only', action='store_true',
                       help='only the adapter vs plain backbone comparison')
    p.add_argument('--json', help='write the figures to this file')
    p.add_argument('--protocol', choices=['gpu'], default=None,
                   help='run the GPU protocol (training steps against timm and mmseg '
                   'ViT-B, UperNet steps) instead of the default measurements')
    p.add_argument('--cases', nargs='+', default=list(GPU_CASES),
                   help='the protocol\'s cases, kind:size:batch:dtype with kind backbone, '
                   'upernet or mixer, dtype float32, bfloat16 or float16')
    p.add_argument('--compile', action='store_true',
                   help='the protocol also times ShuffleMamba-B and the lean mixer under '
                   'torch.compile')
    p.add_argument('--compile-backend', default='inductor',
                   help='the torch.compile backend of --compile (default inductor)')
    p.add_argument('--compile-mode', default=None,
                   help='the torch.compile mode of --compile (e.g. reduce-overhead: CUDA '
                   'graphs)')
    p.add_argument('--slws-case', default='backbone:512:8:bfloat16',
                   help='the protocol\'s SLWS overhead case ("none" to skip)')
    args = p.parse_args()
    for flag, value, low in (('--reps', [args.reps], 1), ('--slws-reps', [args.slws_reps], 1),
                             ('--sizes', args.sizes, 16), ('--slws-size', [args.slws_size], 16),
                             ('--adapter-size', [args.adapter_size], 32),
                             ('--max-vit-tokens', [args.max_vit_tokens], 1)):
        if any(v < low for v in value):
            p.error(f'{flag} must be >= {low}, got {" ".join(map(str, value))}')
    for case in args.cases + ([] if args.slws_case == 'none' else [args.slws_case]):
        parts = case.split(':')
        if (len(parts) != 4 or parts[0] not in CASE_KINDS
                or not parts[1].isdigit() or not parts[2].isdigit() or int(parts[2]) < 1
                or int(parts[1]) < 16
                or parts[3] not in ('float32', 'bfloat16', 'float16')):
            p.error(f'bad case {case!r}: expected kind:size:batch:dtype, e.g. '
                    'backbone:512:8:bfloat16 (size >= 16, batch >= 1)')
        if case == args.slws_case and parts[0] != 'backbone':
            p.error(f'bad --slws-case {case!r}: SLWS is measured on a backbone case, e.g. '
                    'backbone:512:8:bfloat16')
        if parts[0] == 'upernet' and int(parts[2]) < 2:
            p.error(f'bad case {case!r}: the UperNet step needs batch >= 2 (its BN layers '
                    'train on a batch statistic)')
    if args.compile_mode is not None and args.compile_backend != 'inductor':
        p.error(f'--compile-mode is a mode of the inductor backend, not of '
                f'{args.compile_backend!r}')
    dev = args.device
    torch.manual_seed(0)
    info = dict(device=torch.cuda.get_device_name() if dev == 'cuda' else
                f'cpu ({torch.get_num_threads()} threads)', torch=torch.__version__)
    print(f"device: {info['device']}, torch {info['torch']}, "
          f'compiled CPU scan: {has_selective_scan_cpu()}, mamba-ssm: '
          f'{has_selective_scan_cuda()}')
    info['kernels'] = kernel_report(dev)
    for op, impl in info['kernels'].items():
        print(f'kernel: {op}: {impl}')
    if args.protocol == 'gpu':
        results = run_protocol(args.cases, args.reps, dev,
                               None if args.slws_case == 'none' else args.slws_case,
                               dict(backend=args.compile_backend, mode=args.compile_mode,
                                    dynamic=False) if args.compile else None)
        report(results, info, args.json, GPU_TARGETS)
        return
    results = {}
    if not args.skip_adapter:
        results.update(adapter_vs_plain(args.adapter_size, args.reps, dev))
    if args.adapter_only:
        report(results, info, args.json)
        return
    # Memory first, each in a fresh process, while this process is still small.
    if not args.skip_memory:
        for size in args.sizes:
            with_vit = (size // 16)**2 <= args.max_vit_tokens
            mem_sm = measure_memory('shufflemamba-b', size, dev)
            if mem_sm != mem_sm:  # nan: the measurement itself ran out of memory
                mem_sm = float('inf')
            results[f'sm_train_mem_mib@{size}'] = mem_sm
            line = f'[{size}x{size}] train-step peak memory: ShuffleMamba-B {mem_sm:.0f} MiB'
            if with_vit:
                mem_vit = measure_memory('vit-b', size, dev)
                results[f'vit_train_mem_mib@{size}'] = mem_vit
                results[f'train_mem_ratio@{size}'] = mem_sm / mem_vit
                line += f', ViT-B {mem_vit:.0f} MiB'
            print(line, flush=True)
    sm, vit = build('shufflemamba-b', device=dev), build('vit-b', device=dev)
    for size in args.sizes:
        x = torch.randn(1, 3, size, size, device=dev)
        tokens = (size // 16)**2
        with_vit = tokens <= args.max_vit_tokens
        # A training step is only timed where its measured peak memory fits (a CPU
        # process that runs out of memory is killed, not given an exception).
        fits = args.skip_memory or results.get(f'sm_train_mem_mib@{size}', 0) < 0.8 * (
            _available_mib(dev))
        cases = {'sm_eval': lambda: eval_forward(sm, x)}
        if fits:
            cases['sm_train'] = lambda: train_step(sm, x)
        else:
            print(f'[{size}x{size}] ShuffleMamba-B training step skipped: does not fit '
                  'in memory here', flush=True)
        if with_vit:
            cases.update(vit_eval=lambda: eval_forward(vit, x),
                         vit_train=lambda: train_step(vit, x))
        t = interleaved(cases, args.reps if size <= 1024 else 1, dev)
        for k, v in t.items():
            results[f'{k}_s@{size}'] = v
        if with_vit:
            results[f'eval_fwd_ratio@{size}'] = t['sm_eval'] / t['vit_eval']
            if 'sm_train' in t:
                results[f'train_step_ratio@{size}'] = t['sm_train'] / t['vit_train']
        print(f'[{size}x{size}] ' + ', '.join(f'{k} {v:.3f}s' for k, v in t.items()),
              flush=True)
    if 'sm_eval_s@512' in results and 'sm_eval_s@1024' in results:
        results['shufflemamba_fwd_1024_over_512'] = (results['sm_eval_s@1024'] /
                                                     results['sm_eval_s@512'])
    # SLWS overhead: the same weights with and without shuffling, training step.
    shuf = build('shufflemamba-b', shuffle_rate=0.5, device=dev)
    shuf.load_state_dict(sm.state_dict())
    x = torch.randn(1, 3, args.slws_size, args.slws_size, device=dev)
    t = interleaved({'p0.0': lambda: train_step(sm, x), 'p0.5': lambda: train_step(shuf, x)},
                    args.slws_reps, dev)
    results['slws_overhead_pct'] = (t['p0.5'] / t['p0.0'] - 1) * 100
    print(f"[SLWS] train step {args.slws_size}: P=0.0 {t['p0.0']:.3f}s, "
          f"P=0.5 {t['p0.5']:.3f}s")
    # Selective scan kernels (1 direction, d_inner 1536, 1024 tokens, d_state 16).
    a = scan_case(dev)
    cases = {'torch': lambda: selective_scan_torch(*a, True)}
    if dev == 'cpu' and has_selective_scan_cpu():
        cases['compiled_cpu'] = lambda: selective_scan_cpu(*a, True)
    if dev == 'cuda' and has_selective_scan_cuda():
        cases['mamba_ssm_cuda'] = lambda: selective_scan(*a, True, kernel='cuda')
    with torch.no_grad():
        t = interleaved(cases, args.reps, dev)
        t['sequential_ref'] = timed(lambda: selective_scan_ref(*a, True), dev)
    for k, v in t.items():
        results[f'scan_fwd_s[{k}]'] = v
    fast = 'compiled_cpu' if 'compiled_cpu' in t else ('mamba_ssm_cuda' if 'mamba_ssm_cuda'
                                                       in t else 'torch')
    results['scan_speedup_vs_sequential_ref'] = t['sequential_ref'] / t[fast]
    results['scan_speedup_vs_torch_path'] = t['torch'] / t[fast]
    print('[scan] ' + ', '.join(f'{k} {v * 1e3:.1f}ms' for k, v in t.items()))
    report(results, info, args.json)


def adapter_vs_plain(size, reps, dev):
    """ShuffleMambaAdapter-Reg-B vs plain ShuffleMamba-Reg-B (4 out indices, the same
    RMSNorm blocks): eval forward and training step at ``size``, interleaved."""
    sm = build('shufflemamba-reg-b', device=dev)
    ad = build('shufflemamba-adapter-b', device=dev)
    x = torch.randn(1, 3, size, size, device=dev)
    t = interleaved({'plain_eval': lambda: eval_forward(sm, x),
                     'adapter_eval': lambda: eval_forward(ad, x),
                     'plain_train': lambda: train_step(sm, x),
                     'adapter_train': lambda: train_step(ad, x)}, reps, dev)
    print(f'[adapter {size}x{size}] ' + ', '.join(f'{k} {v:.3f}s' for k, v in t.items()),
          flush=True)
    out = {f'{k}_s@{size}': v for k, v in t.items()}
    out['adapter_eval_fwd_ratio'] = t['adapter_eval'] / t['plain_eval']
    out['adapter_train_step_ratio'] = t['adapter_train'] / t['plain_train']
    return out


def report(results, info, json_path, targets=TARGETS):
    print('\n| figure | value | target | ok |\n|---|---|---|---|')
    for k, v in results.items():
        if k in targets or 'ratio' in k or 'speedup' in k or 'overhead' in k:
            target = targets.get(k)
            ok = '' if target is None else ('yes' if v <= target else 'NO')
            tgt = '' if target is None else f'<= {target}'
            print(f'| {k} | {v:.3f} | {tgt} | {ok} |')
    if json_path:
        with open(json_path, 'w') as f:
            json.dump(dict(info=info, results=results), f, indent=1)


if __name__ == '__main__':
    main()
