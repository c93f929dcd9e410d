"""Models cast to another dtype: a bfloat16 / float16 model returns its maps in that
dtype, a float64 model computes in float64 (gradcheck), the adapter too, on both of its
deformable-attention paths; the residual stream runs in float32 at least."""
import pytest
import torch

from mmplugin_shufflemamba import ShuffleMamba, ShuffleMambaAdapter
from mmplugin_shufflemamba.models.layers.deform_attn import MSDeformAttn

TINY = dict(arch=dict(embed_dims=32, num_layers=2), img_size=64)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
@pytest.mark.parametrize('kw', [dict(), dict(out_indices=(0, 1)), dict(final_norm=False),
                                dict(norm_cfg=dict(type='RMSNorm')),
                                dict(num_registers=2, out_cls=True),
                                dict(out_indices=(0, 1), out_type='mixer')])
def test_half_precision_model_returns_its_dtype(dtype, kw):
    torch.manual_seed(0)
    model = ShuffleMamba(**TINY, **kw).eval()
    x = torch.randn(2, 3, 32, 48)
    ref = model(x)
    outs = model.to(dtype)(x.to(dtype))
    assert [o.dtype for o in outs] == [dtype] * len(ref)
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a.float(), b, rtol=0.1, atol=0.1)


def test_float64_model_computes_in_float64():
    torch.manual_seed(0)
    model = ShuffleMamba(arch=dict(embed_dims=16, num_layers=2), img_size=32,
                         kernel='torch').double().eval()
    x = torch.randn(1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    out = model(x)[0]
    assert out.dtype == torch.float64
    for block in model.layers:  # float32 at least: float64 is already that
        block.residual_in_fp32 = False
    assert torch.equal(model(x)[0], out)
    assert torch.autograd.gradcheck(lambda t: model(t)[0], (x, ), eps=1e-6, atol=1e-5)


def test_residual_stream_is_float32_for_half_weights():
    block = ShuffleMamba(**TINY).to(torch.bfloat16).layers[0]
    hidden = torch.randn(1, 4, 32, dtype=torch.bfloat16)
    _, residual = block(hidden, None)
    assert residual.dtype == torch.float32


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
@pytest.mark.parametrize('sampling', ['auto', 'torch'])
def test_adapter_runs_in_its_dtype(dtype, sampling, monkeypatch):
    """The deformable attention computes in the weights' dtype on the compiled kernel
    and on mmcv's PyTorch sampling (float32 under autocast, as before)."""
    monkeypatch.setattr(MSDeformAttn, 'cpu_kernel', sampling)
    torch.manual_seed(0)
    model = ShuffleMambaAdapter(arch=dict(embed_dims=48, num_layers=4), img_size=64,
                                deform_num_heads=4, conv_inplane=8,
                                adapter_norm_cfg=dict(type='BN')).eval()
    x = torch.randn(1, 3, 64, 64)
    ref = model(x)
    outs = model.to(dtype)(x.to(dtype))
    assert [o.dtype for o in outs] == [dtype] * 4
    tol = 1e-5 if dtype == torch.float64 else 0.15
    for a, b in zip(outs, ref):
        torch.testing.assert_close(a.float(), b, rtol=tol, atol=tol)
