"""mamba-ssm's CUDA scan as torch.library custom ops: the schemas and fake (shape-only)
implementations agree with the kernel (``torch.library.opcheck``), and ``torch.compile``
takes the mixer's forward and backward on the CUDA backend (and on the PyTorch one, for
GPUs without the kernels) as one graph with the eager numbers. On the CPU with stand-ins
that have the real kernels' checks and output layouts; on a GPU with the real kernels."""
import pytest
import torch

from mmplugin_shufflemamba.models.layers import BiMambaMixer
from mmplugin_shufflemamba.ops import bimamba_inner, has_selective_scan_cuda, library
from mmplugin_shufflemamba.ops.bimamba_inner import bimamba_inner_fn, select_backend

from helpers import fake_cuda_kernels

needs_gpu_kernels = pytest.mark.skipif(
    not (torch.cuda.is_available() and has_selective_scan_cuda()),
    reason='needs a GPU and mamba-ssm (WITH_MAMBA_KERNELS=1 bash tools/setup_env.sh)')


@pytest.fixture
def fake_kernels(monkeypatch):
    return fake_cuda_kernels.install(monkeypatch)


def _scan_args(length, optional, device='cpu', dtype=torch.float32, dim=6, n=4, rank=3):
    """The arguments as the mixer passes them: u, delta and z (B, D, L) with unit stride
    along L (delta a slice of a wider buffer), B and C (B, 1, N, L) slices of x_dbl; A, D
    and the delta bias float32."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).to(device)  # noqa: E731
    u, z = r(2, dim, length).to(dtype), r(2, dim, length).to(dtype)
    delta = (r(2, 2 * dim, length) * 0.5).to(dtype)[:, :dim]
    x_dbl = r(2, rank + 2 * n, length).to(dtype)
    B, C = x_dbl[:, rank:rank + n, None].transpose(1, 2), x_dbl[:, None, rank + n:]
    A = -torch.rand(dim, n, generator=g).to(device) - 0.1
    D, bias = (r(dim), r(dim)) if optional else (None, None)
    return u, delta, A, B, C, D, z if optional else None, bias


def _opcheck_scan_ops(length, optional, device='cpu', dtype=torch.float32):
    args = _scan_args(length, optional, device, dtype)
    torch.library.opcheck(library.selective_scan_cuda_fwd, (*args, True))
    out, states, *_ = library.selective_scan_cuda_fwd(*args, True)
    assert states.shape[2] == (length + 2047) // 2048
    dout = torch.randn_like(out)
    pre_gate = out if optional else None
    for recompute in (False, True):
        torch.library.opcheck(library.selective_scan_cuda_bwd,
                              (*args, dout, states, pre_gate, True, recompute))


@pytest.mark.parametrize('length', [13, 2100])  # 2100: two chunk states
@pytest.mark.parametrize('optional', [True, False])
def test_scan_ops_match_their_fake_implementations(fake_kernels, length, optional):
    _opcheck_scan_ops(length, optional)


@needs_gpu_kernels
@pytest.mark.parametrize('length', [13, 2100])
@pytest.mark.parametrize('optional', [True, False])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_gpu_scan_ops_match_their_fake_implementations(length, optional, dtype):
    _opcheck_scan_ops(length, optional, 'cuda', dtype)


def test_absent_gradients_are_empty_tensors(fake_kernels):
    args = _scan_args(9, optional=False)
    out, states = library.selective_scan_cuda_fwd(*args, True)
    grads = library.selective_scan_cuda_bwd(*args, torch.randn_like(out), states, None, True,
                                            True)
    assert len(grads) == 8 and [g.numel() for g in grads[5:]] == [0, 0, 0]


def _compiled_mixer_vs_eager(backend, device='cpu'):
    torch.manual_seed(0)
    mixer = BiMambaMixer(16, d_state=4).to(device)

    def step(h):
        out = bimamba_inner_fn(mixer, h, backend=backend)
        out.square().mean().backward()
        return out

    x = torch.randn(2, 11, 16, device=device)
    explained = torch._dynamo.explain(lambda h: bimamba_inner_fn(mixer, h,
                                                                 backend=backend))(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    results = []
    for fn in (step, torch.compile(step, backend='aot_eager')):
        mixer.zero_grad()
        h = x.clone().requires_grad_()
        out = fn(h)
        results.append((out.detach(), h.grad, [p.grad.clone() for p in mixer.parameters()]))
    (out_e, dh_e, grads_e), (out_c, dh_c, grads_c) = results
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(dh_c, dh_e, rtol=1e-5, atol=1e-6)
    for (name, _), a, b in zip(mixer.named_parameters(), grads_c, grads_e):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize('backend', ['cuda', 'cuda without causal-conv1d', 'torch'])
def test_compiled_mixer_is_one_graph_with_the_eager_numbers(fake_kernels, backend):
    _compiled_mixer_vs_eager(bimamba_inner._TORCH if backend == 'torch' else
                             bimamba_inner._CUDA[backend == 'cuda'])


@needs_gpu_kernels
@pytest.mark.parametrize('backend', ['auto', 'torch'])
def test_gpu_compiled_mixer_is_one_graph_with_the_eager_numbers(backend):
    """With the real kernels (causal-conv1d's too where it is installed) or the PyTorch
    path on the GPU."""
    _compiled_mixer_vs_eager(select_backend(backend, torch.device('cuda'), torch.float32),
                             'cuda')
