"""The compiled CPU kernels as torch.library custom ops: their schemas and fake
(shape-only) implementations agree with the kernels, and ``torch.compile`` takes a whole
ShuffleMamba forward and backward as one graph, with the eager model's numbers."""
import copy
import warnings

import pytest
import torch

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.ops import has_selective_scan_cpu, library

pytestmark = pytest.mark.skipif(not has_selective_scan_cpu(),
                                reason='the compiled CPU kernels are not built')

B, DIM, L, N, K = 2, 5, 7, 4, 4


def _bdl(token_major: bool) -> torch.Tensor:
    return torch.randn(B, L, DIM).transpose(1, 2) if token_major else torch.randn(B, DIM, L)


@pytest.mark.parametrize('token_major', [False, True])
@pytest.mark.parametrize('optional', [True, False])
def test_scan_ops_match_their_fake_implementations(token_major, optional):
    torch.manual_seed(0)
    u, delta, z, dout = (_bdl(token_major) for _ in range(4))
    delta = delta.abs()
    A, Bt, Ct = -torch.rand(DIM, N), torch.randn(B, L, N), torch.randn(B, L, N)
    opt = (torch.randn(DIM), z, torch.randn(DIM)) if optional else (None, None, None)
    for reverse in (False, True):
        torch.library.opcheck(library.selective_scan_fwd,
                              (u, delta, A, Bt, Ct, *opt, True, reverse))
        for return_out in (False, True):
            torch.library.opcheck(library.selective_scan_bwd,
                                  (u, delta, A, Bt, Ct, *opt, True, reverse, dout, return_out))


@pytest.mark.parametrize('token_major', [False, True])
@pytest.mark.parametrize('with_bias', [True, False])
def test_conv_ops_match_their_fake_implementations(token_major, with_bias):
    torch.manual_seed(0)
    x, dout = _bdl(token_major), _bdl(token_major)
    w, b = torch.randn(DIM, K), (torch.randn(DIM) if with_bias else None)
    for reverse in (False, True):
        torch.library.opcheck(library.causal_conv1d_fwd, (x, w, b, True, reverse))
        torch.library.opcheck(library.causal_conv1d_bwd, (x, w, b, True, reverse, dout))


def _tiny(**kwargs) -> ShuffleMamba:
    torch.manual_seed(0)
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32, patch_size=8,
                     out_indices=(0, 1), **kwargs)
    m.init_weights()
    return m


def test_compiled_model_is_one_graph_with_the_eager_numbers():
    model = _tiny().train()
    compiled = torch.compile(copy.deepcopy(model), backend='aot_eager', fullgraph=True)
    x = torch.randn(2, 3, 32, 24)
    results = []
    for m, params in ((model, model), (compiled, compiled._orig_mod)):
        outs = m(x)
        sum(o.square().mean() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in params.named_parameters()}))
    (eager_outs, eager_grads), (comp_outs, comp_grads) = results
    for a, b in zip(eager_outs, comp_outs):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert eager_grads.keys() == comp_grads.keys()
    for name, g in eager_grads.items():
        torch.testing.assert_close(comp_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_slws_drawn_on_the_device_traces_without_a_graph_break():
    model = _tiny(shuffle_rate=0.5, shuffle_draw='device').train()
    explained = torch._dynamo.explain(model)(torch.randn(2, 3, 32, 32))
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiling_a_register_model_warns_nothing():
    """The token layout's cached positions are computed afresh under dynamo instead of
    going through an lru_cache it would warn about."""
    model = _tiny(num_registers=2).eval()
    x = torch.randn(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.filterwarnings('error', message='.*lru_cache')
        outs = torch.compile(model, backend='aot_eager', fullgraph=True)(x)
    for a, b in zip(outs, model(x)):
        torch.testing.assert_close(a, b)
