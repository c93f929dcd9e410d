"""The fused bidirectional mixer (``BiMambaInnerFn``): the same outputs and gradients as
the composition of differentiable ops on every backend, and what autograd keeps for its
backward (the in_proj output and small projections only)."""
import warnings

import pytest
import torch

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.models.layers import BiMambaMixer
from mmplugin_shufflemamba.ops import (bimamba_inner, has_causal_conv1d_cuda,
                                       has_selective_scan_cpu, has_selective_scan_cuda,
                                       kernels)
from mmplugin_shufflemamba.ops.bimamba_inner import (bimamba_inner_fn, bimamba_inner_ref,
                                                     select_backend)
from mmplugin_shufflemamba.utils.autograd_memory import saved_tensor_bytes

from helpers import fake_cuda_kernels as fake_kernels

BACKENDS = ['torch'] + (['cpu'] if has_selective_scan_cpu() else [])


def _grads(mixer, hidden, fn, dout):
    mixer.zero_grad()
    h = hidden.detach().clone().requires_grad_()
    out = fn(h)
    (out * dout).sum().backward()
    return out.detach(), h.grad, {n: p.grad.clone() for n, p in mixer.named_parameters()}


def _assert_rel_close(a, b, tol, name):
    """``a`` equals ``b`` within ``tol`` of b's largest magnitude (each tensor at its own
    scale, so that small gradients are checked as closely as large ones)."""
    err = (a - b).abs().max() / b.abs().max().clamp_min(1e-30)
    assert err <= tol, f'{name}: max error {err:.2e} of its largest magnitude (> {tol})'


def _assert_same(a, b, tol):
    out_a, dh_a, g_a = a
    out_b, dh_b, g_b = b
    torch.testing.assert_close(out_a, out_b, rtol=tol, atol=tol)
    torch.testing.assert_close(dh_a, dh_b, rtol=tol, atol=tol)
    for name in g_b:
        torch.testing.assert_close(g_a[name], g_b[name], rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize('backend', BACKENDS)
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_matches_the_composed_ops(backend, dtype):
    """Outputs and every gradient equal the differentiable composition (and hence the
    sequential reference, which that composition is tested against)."""
    mixer = BiMambaMixer(24, d_state=8).to(dtype)
    hidden = torch.randn(2, 37, 24, dtype=dtype)
    dout = torch.randn(2, 37, 24, dtype=dtype)
    be = bimamba_inner._TORCH if backend == 'torch' else bimamba_inner._CPU
    fused = _grads(mixer, hidden, lambda h: bimamba_inner_fn(mixer, h, backend=be), dout)
    kernel = 'torch' if backend == 'torch' else 'auto'
    ref = _grads(mixer, hidden, lambda h: bimamba_inner_ref(mixer, h, kernel), dout)
    _assert_same(fused, ref, 1e-10 if dtype == torch.float64 else 2e-5)


def test_cpu_and_torch_backends_agree():
    if not has_selective_scan_cpu():
        pytest.skip('compiled CPU extension not built')
    mixer = BiMambaMixer(32, d_state=16)
    hidden, dout = torch.randn(2, 70, 32), torch.randn(2, 70, 32)
    a = _grads(mixer, hidden, lambda h: bimamba_inner_fn(mixer, h,
                                                         backend=bimamba_inner._CPU), dout)
    b = _grads(mixer, hidden, lambda h: bimamba_inner_fn(mixer, h,
                                                         backend=bimamba_inner._TORCH), dout)
    _assert_same(a, b, 2e-4)


def _bf16_autocast_matches_float32_closely(device, length):
    mixer = BiMambaMixer(32, d_state=16).to(device)
    hidden = torch.randn(2, length, 32, device=device)
    ref = bimamba_inner_fn(mixer, hidden)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = bimamba_inner_fn(mixer, hidden)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0.05, atol=0.05)
    out.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and
               p.grad.isfinite().all() for p in mixer.parameters())


def test_bf16_autocast_on_cpu_matches_float32_closely():
    _bf16_autocast_matches_float32_closely('cpu', 20)


# --------------------------------------------------------------- the CUDA plumbing
@pytest.fixture
def fake_cuda_kernels(monkeypatch):
    """mamba-ssm's and causal-conv1d's kernels as CPU stand-ins (the scan's returned)."""
    return fake_kernels.install(monkeypatch)


def _cuda_backend_vs_composed_ops(fused_conv, device, length, tol):
    """The CUDA backend's outputs and gradients against the composed PyTorch ops, each
    compared relative to the reference's largest magnitude."""
    torch.manual_seed(0)
    mixer = BiMambaMixer(24, d_state=8).to(device)
    hidden = torch.randn(2, length, 24, device=device)
    dout = torch.randn(2, length, 24, device=device)
    be = bimamba_inner._CUDA[fused_conv]
    fused = _grads(mixer, hidden, lambda h: bimamba_inner_fn(mixer, h, backend=be), dout)
    ref = _grads(mixer, hidden, lambda h: bimamba_inner_ref(mixer, h, 'torch'), dout)
    pairs = [('out', fused[0], ref[0]), ('hidden grad', fused[1], ref[1])]
    pairs += [(n, fused[2][n], ref[2][n]) for n in ref[2]]
    for name, a, b in pairs:
        _assert_rel_close(a, b, tol, name)


@pytest.mark.parametrize('fused_conv', [True, False])
def test_cuda_backend_plumbing(fake_cuda_kernels, fused_conv):
    """Channel-major xz from one matmul, one flip of x and z for the reverse branch and
    one of its output back, the kernels' argument layouts: the same outputs and
    gradients as the composed ops."""
    _cuda_backend_vs_composed_ops(fused_conv, 'cpu', 29, 2e-5)
    # mamba-ssm's backward reads the forward's output: one scan forward per direction in
    # the forward and again in the backward.
    assert fake_cuda_kernels.calls == {'fwd': 4, 'bwd': 2}


# ------------------------------------------- the real fused kernels (GPU machines only)
needs_gpu_kernels = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_selective_scan_cuda()),
    reason='needs a GPU and mamba-ssm (WITH_MAMBA_KERNELS=1 bash tools/setup_env.sh)')


@needs_gpu_kernels
@pytest.mark.parametrize('fused_conv', [True, False])
@pytest.mark.parametrize('length', [197, 2100])  # 2100: past the kernel's 2048-step chunk
def test_gpu_fused_kernels_match_the_composed_ops(fused_conv, length):
    if fused_conv and not has_causal_conv1d_cuda():
        pytest.skip('causal-conv1d is not installed')
    _cuda_backend_vs_composed_ops(fused_conv, 'cuda', length, 1e-4)


@needs_gpu_kernels
def test_gpu_backbone_auto_kernels_match_the_pytorch_path():
    """ShuffleMamba on the GPU: the fused kernels ('auto') and the PyTorch path
    ('torch') give the same features and gradients."""
    torch.manual_seed(0)
    fused = ShuffleMamba(arch=dict(embed_dims=64, num_layers=2), img_size=64,
                         patch_size=16, out_indices=(0, 1), drop_path_rate=0.0).cuda()
    plain = ShuffleMamba(arch=dict(embed_dims=64, num_layers=2), img_size=64,
                         patch_size=16, out_indices=(0, 1), drop_path_rate=0.0,
                         kernel='torch').cuda()
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(2, 3, 64, 64, device='cuda')
    outs = [m(x) for m in (fused, plain)]
    for a, b in zip(*outs):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # A random projection (a sum of squares of the normalised output would make the
    # last block's gradients cancellation noise).
    weights = [torch.randn_like(o) for o in outs[1]]
    for out in outs:
        sum((o * w).sum() for o, w in zip(out, weights)).backward()
    for (name, p), q in zip(fused.named_parameters(), plain.parameters()):
        _assert_rel_close(p.grad, q.grad, 2e-4, name)


@needs_gpu_kernels
def test_gpu_bf16_autocast_matches_float32_closely():
    _bf16_autocast_matches_float32_closely('cuda', 300)


@pytest.mark.parametrize('with_z', [True, False])
def test_cuda_scan_backward_returns_the_forward_output(fake_cuda_kernels, with_z):
    """scan_cuda_bwd(return_out=True): mamba-ssm's out_z (recompute_out_z) with z, the
    forward's output itself without; the same gradients as without it."""
    from mmplugin_shufflemamba.ops.selective_scan_cuda import scan_cuda_bwd, scan_cuda_fwd
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u, delta, z, dout = r(2, 6, 13), r(2, 6, 13) * 0.5, r(2, 6, 13), r(2, 6, 13)
    A, B, C, D, bias = -torch.rand(6, 4, generator=g), r(2, 4, 13), r(2, 4, 13), r(6), r(6)
    z = z if with_z else None
    y, aux = scan_cuda_fwd(u, delta, A, B, C, D, z, bias, True)
    *grads, out = scan_cuda_bwd(u, delta, A, B, C, D, z, bias, True, dout, aux,
                                return_out=True)
    torch.testing.assert_close(out, y)
    plain = scan_cuda_bwd(u, delta, A, B, C, D, z, bias, True, dout, aux)
    assert len(plain) == 8 and len(grads) == 8
    for a, b in zip(grads, plain):
        assert (a is None and b is None) or torch.equal(a, b)
    backend_out = bimamba_inner._CUDA[True].scan_bwd(u, delta, A, B, C, D, z, bias, False,
                                                     dout, return_out=True)
    assert len(backend_out) == 9
    torch.testing.assert_close(backend_out[-1], y)


class _CountingBackend:
    """A backend whose scan calls are counted: ``calls`` of scan_fwd and of scan_bwd
    (with its return_out)."""

    def __init__(self, backend):
        self.backend = backend
        self.calls = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def scan_fwd(self, *args):
        self.calls.append('scan_fwd')
        return self.backend.scan_fwd(*args)

    def scan_bwd(self, *args, return_out=False):
        self.calls.append(f'scan_bwd(return_out={return_out})')
        return self.backend.scan_bwd(*args, return_out=return_out)


@pytest.mark.parametrize('backend', BACKENDS)
def test_backward_runs_no_scan_forward(backend):
    """The backward gets the scan outputs that out_proj's weight gradient needs from the
    scan backwards (return_out) instead of running the scan forward again."""
    mixer = BiMambaMixer(16, d_state=4)
    hidden = torch.randn(1, 9, 16, requires_grad=True)
    be = _CountingBackend(bimamba_inner._TORCH if backend == 'torch' else bimamba_inner._CPU)
    out = bimamba_inner_fn(mixer, hidden, backend=be)
    assert be.calls == ['scan_fwd', 'scan_fwd']
    out.sum().backward()
    assert be.calls[2:] == ['scan_bwd(return_out=True)'] * 2


# --------------------------------------------------------------- memory
def _saved_bytes(kernel, depth, batch, size, dims, device):
    model = ShuffleMamba(arch=dict(embed_dims=dims, num_layers=depth), img_size=size,
                         patch_size=16, out_indices=(depth - 1, ), kernel=kernel).to(device)
    model.train()
    x = torch.randn(batch, 3, size, size, device=device)
    return saved_tensor_bytes(lambda: model(x), model)


def _units_per_block(kernel, batch=2, size=128, dims=192, device='cpu'):
    """Bytes autograd saves per block in a training forward of the backbone
    (parameters excluded; the difference of a 4- and a 2-block model, so that the
    patch embedding and the final norm do not count), in units of the in_proj output
    (2 B L d_inner float32)."""
    per_block = (_saved_bytes(kernel, 4, batch, size, dims, device)
                 - _saved_bytes(kernel, 2, batch, size, dims, device)) / 2
    tokens = (size // 16)**2
    unit = 2 * batch * tokens * 2 * dims * 4
    return per_block / unit


@pytest.mark.parametrize('kernel', ['auto', 'torch'])
def test_saved_memory_per_block_at_most_two_in_proj_outputs(kernel):
    if kernel == 'auto' and not has_selective_scan_cpu():
        pytest.skip('compiled CPU extension not built')
    units = _units_per_block(kernel)
    # in_proj output 1.0, block input and norm output 0.25 each, x_dbl 2 x 0.06.
    assert units <= 2.0, f'{units:.2f} in_proj-output units kept per block'


@needs_gpu_kernels
def test_gpu_saved_memory_per_block_at_most_two_in_proj_outputs():
    """The same count with mamba-ssm's kernels: they recompute what the CPU paths
    recompute, so the fused path keeps no more."""
    units = _units_per_block('auto', device='cuda')
    assert units <= 2.0, f'{units:.2f} in_proj-output units kept per block on CUDA'


# --------------------------------------------------------------- loud fallbacks
@pytest.fixture
def no_cuda_kernels(monkeypatch):
    monkeypatch.setitem(kernels._cache, 'selective_scan_cuda',
                        (None, "ModuleNotFoundError: No module named 'selective_scan_cuda'"))
    monkeypatch.setitem(kernels._cache, 'causal_conv1d',
                        (None, "ModuleNotFoundError: No module named 'causal_conv1d'"))
    monkeypatch.setattr(kernels, '_warned', set())
    monkeypatch.delenv(kernels.STRICT_ENV, raising=False)


def test_missing_fused_kernel_warns_once_with_cause_fix_and_cost(no_cuda_kernels):
    with pytest.warns(kernels.KernelFallbackWarning) as rec:
        assert kernels.get_cuda_kernel('selective_scan_cuda', 'auto', True) is None
    msg = str(rec[0].message)
    assert "No module named 'selective_scan_cuda'" in msg
    assert 'WITH_MAMBA_KERNELS=1 bash tools/setup_env.sh' in msg
    assert '27x' in msg and kernels.STRICT_ENV in msg
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert kernels.get_cuda_kernel('selective_scan_cuda', 'auto', True) is None
        # 'torch' is an explicit choice: never a warning.
        assert kernels.get_cuda_kernel('selective_scan_cuda', 'torch', True) is None


def test_strict_switch_makes_the_fallback_an_error(no_cuda_kernels, monkeypatch):
    monkeypatch.setenv(kernels.STRICT_ENV, '1')
    with pytest.raises(RuntimeError, match='SHUFFLEMAMBA_STRICT_KERNELS=1: .*selective_scan'):
        select_backend('auto', torch.device('cuda'), torch.float32)


def test_float64_runs_the_pytorch_path_on_cuda(fake_cuda_kernels):
    """The fused kernels take float32 / half only: float64 CUDA tensors run the PyTorch
    path under 'auto' (no fallback warning: nothing is missing) and are an error under
    'cuda'; float32 still gets the kernels."""
    cuda = torch.device('cuda')
    assert select_backend('auto', cuda, torch.float32) is bimamba_inner._CUDA[True]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert select_backend('auto', cuda, torch.float64) is bimamba_inner._TORCH
    with pytest.raises(RuntimeError, match="kernel='cuda' was requested for float64 tensors"
                       ".*takes float32, float16 and bfloat16 only"):
        select_backend('cuda', cuda, torch.float64)


def test_kernel_cuda_asked_explicitly_names_the_import_error(no_cuda_kernels):
    with pytest.raises(RuntimeError, match="kernel='cuda'.*No module named"):
        kernels.get_cuda_kernel('selective_scan_cuda', 'cuda', True)
    # On the CPU, and the kernel missing as well: both are said, with the install.
    with pytest.raises(RuntimeError, match='tensors are on the CPU .*cannot be imported here '
                       'either: .*No module named.*install it on the GPU machine with'):
        kernels.get_cuda_kernel('selective_scan_cuda', 'cuda', False)


def test_missing_cpu_extension_warns_once(monkeypatch):
    monkeypatch.setattr(kernels, 'cpu_extension', lambda: None)
    monkeypatch.setattr(kernels, '_warned', set())
    monkeypatch.delenv(kernels.STRICT_ENV, raising=False)
    with pytest.warns(kernels.KernelFallbackWarning, match='compiled CPU kernels'):
        assert select_backend('auto', torch.device('cpu'), torch.float32).name == 'torch'
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        select_backend('auto', torch.device('cpu'), torch.float32)


def test_the_fallback_warning_points_at_the_users_call(monkeypatch):
    """Past the package's and torch's frames (a model's forward goes through
    nn.Module.__call__): the line of this file that ran the model or the op."""
    from mmplugin_shufflemamba.models.layers.bimamba import BiMambaMixer
    from mmplugin_shufflemamba.ops import selective_scan
    monkeypatch.setattr(kernels, 'cpu_extension', lambda: None)
    monkeypatch.delenv(kernels.STRICT_ENV, raising=False)
    mixer = BiMambaMixer(8)
    for call in (lambda: mixer(torch.randn(1, 5, 8)),
                 lambda: selective_scan(torch.randn(1, 2, 3), torch.randn(1, 2, 3),
                                        -torch.rand(2, 4), torch.randn(1, 4, 3),
                                        torch.randn(1, 4, 3))):
        monkeypatch.setattr(kernels, '_warned', set())
        with pytest.warns(kernels.KernelFallbackWarning) as rec:
            call()
        assert rec[0].filename == __file__, rec[0].filename


def test_kernel_report_names_each_op(no_cuda_kernels):
    cuda = kernels.kernel_report('cuda')
    assert set(cuda) == {'selective_scan', 'causal_conv1d', 'ms_deform_attn'}
    assert cuda['selective_scan'].startswith('PyTorch fallback')
    cpu = kernels.kernel_report('cpu')
    if has_selective_scan_cpu():
        assert cpu['selective_scan'].startswith('compiled CPU kernels, code path')


def test_log_kernels_writes_the_report_to_the_log(no_cuda_kernels):
    from mmengine.logging import MMLogger
    from mmplugin_shufflemamba.utils import log_kernels
    logger = MMLogger.get_instance('test_log_kernels', log_level='INFO')
    records = []

    class Keep(__import__('logging').Handler):

        def emit(self, record):
            records.append(record.getMessage())

    handler = Keep()
    logger.addHandler(handler)
    try:
        report = log_kernels('cuda', logger='test_log_kernels')
    finally:
        logger.removeHandler(handler)
    assert report['selective_scan'].startswith('PyTorch fallback')
    text = '\n'.join(records)
    assert 'Kernels for cuda tensors' in text
    assert "selective_scan: PyTorch fallback (ModuleNotFoundError: No module named" in text


# --------------------------------------------------------------- the adapter's MSDA
def _msda_module():
    from mmplugin_shufflemamba.models.layers.deform_attn import MSDeformAttn
    torch.manual_seed(0)
    return MSDeformAttn(32, num_heads=4, num_levels=2, num_points=2, ratio=0.5)


def test_msda_on_cuda_without_mmcv_cuda_ops_warns_once_and_uses_pytorch(monkeypatch):
    """mmcv built without CUDA ops: one KernelFallbackWarning naming the probe's error
    and mmcv's PyTorch sampling, not "implementation for device cuda:0 not found"."""
    from types import SimpleNamespace
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    from mmplugin_shufflemamba.models.layers import deform_attn
    err = 'RuntimeError: ms_deform_attn_impl_forward: implementation for device cuda:0 not found'
    monkeypatch.setattr(deform_attn, 'has_ms_deform_attn_mmcv_cuda',
                        lambda device=None: (False, err))
    monkeypatch.setattr(kernels, '_warned', set())
    monkeypatch.delenv(kernels.STRICT_ENV, raising=False)
    attn = _msda_module()
    on_cuda = SimpleNamespace(device=torch.device('cuda', 0))
    with pytest.warns(kernels.KernelFallbackWarning) as rec:
        assert attn._own_sampling(on_cuda) is multi_scale_deformable_attn_pytorch
    msg = str(rec[0].message)
    assert 'not found' in msg and 'FORCE_CUDA' in msg and kernels.STRICT_ENV in msg
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        attn._own_sampling(on_cuda)
    monkeypatch.setenv(kernels.STRICT_ENV, '1')
    with pytest.raises(RuntimeError, match='deformable attention'):
        attn._own_sampling(on_cuda)


def test_msda_own_forward_with_pytorch_sampling_matches_mmcv(monkeypatch):
    """The module's own forward with mmcv's PyTorch sampling (the CUDA fallback) equals
    mmcv's forward (the CPU path of MultiScaleDeformableAttention)."""
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    attn = _msda_module()
    shapes = torch.tensor([[4, 4], [2, 2]])
    start = torch.tensor([0, 16])
    value = torch.randn(2, 20, 32)
    query = torch.randn(2, 6, 32)
    ref_points = torch.rand(2, 6, 2, 2)
    own = attn._forward_sampled(query, value, ref_points, shapes,
                                multi_scale_deformable_attn_pytorch)
    monkeypatch.setattr(attn, 'cpu_kernel', 'torch')
    mmcv = attn(query, value, (ref_points, shapes, start))
    torch.testing.assert_close(own, mmcv, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------- mixer arguments
@pytest.mark.parametrize('kw, exc, words', [
    (dict(d_state=0), ValueError, 'd_state must be >= 1, got 0'),
    (dict(d_conv=2.0), TypeError, 'd_conv must be an int'),
    (dict(expand=0), ValueError, 'expand must be > 0'),
    (dict(dt_rank=0), ValueError, 'dt_rank must be >= 1, got 0'),
    (dict(dt_rank='full'), TypeError, "dt_rank must be an int.*'auto'"),
    (dict(dt_min=0.0), ValueError, 'dt_min must be > 0'),
    (dict(dt_min=0.1, dt_max=0.01), ValueError, 'dt_max must be >= 0.1'),
    (dict(dt_init_floor=-1e-4), ValueError, 'dt_init_floor must be > 0'),
    (dict(kernel='triton'), ValueError, 'kernel must be one of'),
])
def test_mixer_arguments_are_checked(kw, exc, words):
    with pytest.raises(exc, match=words):
        BiMambaMixer(16, **kw)


@pytest.mark.parametrize('kw, exc, words', [
    (dict(drop_path=1.0), ValueError, r'drop_path must be in \[0, 1\)'),
    (dict(drop_path=-0.1), ValueError, 'drop_path must be in'),
    (dict(residual_in_fp32='yes'), TypeError, 'residual_in_fp32 must be True or False'),
])
def test_block_arguments_are_checked(kw, exc, words):
    from mmplugin_shufflemamba.models.layers import MambaBlock
    with pytest.raises(exc, match=words):
        MambaBlock(16, **kw)


@pytest.mark.parametrize('missing', ['extension', 'kernel'])
def test_msda_on_cpu_without_its_compiled_kernel_warns_once(monkeypatch, missing):
    """The compiled CPU extension missing (or an older build without the deformable
    attention kernel): one KernelFallbackWarning, mmcv's PyTorch sampling, an error
    under SHUFFLEMAMBA_STRICT_KERNELS=1, nothing with kernel='torch'."""
    import importlib
    from types import SimpleNamespace
    msda = importlib.import_module('mmplugin_shufflemamba.ops.ms_deform_attn')
    ext = None if missing == 'extension' else SimpleNamespace()  # no ms_deform_attn_fwd
    monkeypatch.setattr(kernels, 'cpu_extension', lambda: ext)
    monkeypatch.setattr(msda, 'cpu_extension', lambda: ext)
    monkeypatch.setattr(kernels, '_warned', set())
    monkeypatch.delenv(kernels.STRICT_ENV, raising=False)
    torch.manual_seed(0)
    shapes = torch.tensor([[4, 4], [2, 2]])
    args = (torch.randn(2, 20, 4, 8), shapes, torch.rand(2, 6, 4, 2, 3, 2),
            torch.rand(2, 6, 4, 2, 3))
    why = r'\(not built\)' if missing == 'extension' else 'built without it: an older build'
    with pytest.warns(kernels.KernelFallbackWarning, match=why) as rec:
        out = msda.ms_deform_attn(*args)
    assert len(rec) == 1, [str(r.message) for r in rec]
    assert str(rec[0].message).startswith(
        'the compiled CPU deformable attention kernel (in mmplugin_shufflemamba._ext) is not '
        'available'), str(rec[0].message)
    assert 'or set SHUFFLEMAMBA_MSDA_CPU=torch' in str(rec[0].message)
    torch.testing.assert_close(out, msda.ms_deform_attn_ref(*args))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _msda_module()._own_sampling(args[0]) is None  # (said once per process)
        msda.ms_deform_attn(*args, kernel='torch')
    monkeypatch.setenv(kernels.STRICT_ENV, '1')
    with pytest.raises(RuntimeError, match=f'{kernels.STRICT_ENV}=1: .*{why}'):
        msda.ms_deform_attn(*args)
    with pytest.raises(RuntimeError, match=f'{kernels.STRICT_ENV}=1: .*{why}'):
        _msda_module()._own_sampling(args[0])  # the adapter's module: the same choice
    msda.ms_deform_attn(*args, kernel='torch')  # chosen explicitly: no error
    with pytest.raises(ValueError, match="kernel must be 'auto' or 'torch', got 'cuda' "
                       r"\(CUDA tensors sample with mmcv's CUDA kernel"):
        msda.ms_deform_attn(*args, kernel='cuda')
