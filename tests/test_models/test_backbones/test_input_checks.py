"""Inputs the backbones cannot take fail at their entry with what to change; the valid
edge cases (autocast, odd sizes in eval, the smallest sizes) keep working (tiny, CPU)."""
import math

import pytest
import timm
import torch

import mmplugin_shufflemamba  # noqa: F401  (registers the timm models)
from mmplugin_shufflemamba import ShuffleMamba, ShuffleMambaAdapter

BN = dict(type='BN', requires_grad=True)
D = 16


def tiny(**kw):
    cfg = dict(arch=dict(embed_dims=D, num_layers=2), img_size=32, patch_size=16,
               kernel='torch')
    cfg.update(kw)
    m = ShuffleMamba(**cfg)
    m.init_weights()
    return m


def tiny_adapter(**kw):
    cfg = dict(arch=dict(embed_dims=D, num_layers=4), img_size=32, deform_num_heads=2,
               conv_inplane=4, adapter_norm_cfg=BN, kernel='torch')
    cfg.update(kw)
    return ShuffleMambaAdapter(**cfg)


def tiny_classifier(**kw):
    return timm.create_model('shufflemamba_b_patch16_224', embed_dims=D, num_layers=2,
                             img_size=32, num_classes=3, kernel='torch', **kw)


BUILDERS = {'ShuffleMamba': tiny, 'ShuffleMambaAdapter': tiny_adapter,
            'ShuffleMambaClassifier': tiny_classifier}


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_shape_errors_name_the_fix(name):
    m = BUILDERS[name]().eval()
    with pytest.raises(ValueError, match=fr'{name} expects \(B, C, H, W\) input with '
                       r'C = in_channels = 3, got shape \(3, 32, 32\) \(add the batch'):
        m(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match=r'expects \(B, C, H, W\) .* \(1, 1, 3, 32, 32\)'):
        m(torch.randn(1, 1, 3, 32, 32))
    with pytest.raises(ValueError, match=f'{name} was built with in_channels=3 but the '
                       'input has 4 channels'):
        m(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=fr'{name} got an empty batch \(B=0, shape '
                       r'\(0, 3, 32, 32\)\): pass at least one image'):
        m(torch.randn(0, 3, 32, 32))
    with pytest.raises(TypeError, match=f'{name} expects a .* tensor, got list'):
        m([torch.randn(3, 32, 32)])


@pytest.mark.parametrize('name', ['ShuffleMamba', 'ShuffleMambaClassifier'])
@pytest.mark.parametrize('hw', [(8, 8), (15, 64), (64, 1)])
def test_image_smaller_than_patch(name, hw):
    m = BUILDERS[name]().eval()
    H, W = hw
    with pytest.raises(ValueError, match=f'got a {H}x{W} image, smaller than its '
                       'patch_size=16: resize or pad the image to at least 16x16'):
        m(torch.randn(1, 3, H, W))


def test_zero_sized_image_into_adapter():
    with pytest.raises(ValueError, match='got a 0x32 image; H and W must be at least 1'):
        tiny_adapter().eval()(torch.randn(1, 3, 0, 32))


# ------------------------------------------------------------------ dtypes
@pytest.mark.parametrize('name', sorted(BUILDERS))
@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16, torch.float64])
def test_dtype_mismatch_outside_autocast(name, dtype):
    """The fix is a cast, or autocast to the half dtype involved (never to float64,
    which autocast does not take)."""
    m = BUILDERS[name]().eval()
    with pytest.raises(TypeError, match=f'{name} weights are torch.float32 but the input is '
                       f'{dtype}: cast the input to float32') as info:
        m(torch.randn(1, 3, 32, 32, dtype=dtype))
    if dtype == torch.float64:
        assert 'autocast' not in str(info.value)
    else:
        assert f"torch.autocast(device_type='cpu', dtype={dtype})" in str(info.value)
    m = BUILDERS[name]().to(torch.bfloat16).eval()
    with pytest.raises(TypeError, match=r"cast the input to bfloat16 .* torch.autocast\("
                       r"device_type='cpu', dtype=torch.bfloat16\)"):
        m(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_integer_image(name):
    m = BUILDERS[name]().eval()
    with pytest.raises(TypeError, match=f'{name} takes a floating-point image, got '
                       'torch.uint8: convert it'):
        m(torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8))
    with torch.autocast('cpu', dtype=torch.bfloat16):  # autocast does not convert ints
        with pytest.raises(TypeError, match='floating-point image'):
            m(torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8))


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_float64_image_under_autocast(name):
    m = BUILDERS[name]().eval()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        with pytest.raises(TypeError, match=f'{name} got a float64 image under torch.autocast'
                           r'.*cast the image to float32 \(x.float\(\)\)'):
            m(torch.randn(1, 3, 32, 32, dtype=torch.float64))


def test_low_precision_model_with_fp32_input():
    m = tiny().to(torch.bfloat16).eval()
    with pytest.raises(TypeError, match='weights are torch.bfloat16 but the input is '
                       'torch.float32: cast the input to bfloat16'):
        m(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize('name', sorted(BUILDERS))
@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float32])
def test_autocast_keeps_working(name, dtype):
    m = BUILDERS[name]().eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        ref = m(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = m(x.to(dtype))
    ref = ref if isinstance(ref, tuple) else (ref, )
    out = out if isinstance(out, tuple) else (out, )
    for a, b in zip(ref, out):
        assert a.shape == b.shape
        assert torch.isfinite(b).all()
        rel = (b.float() - a).norm() / a.norm().clamp_min(1e-6)
        assert rel < 0.1, rel


def test_autocast_bf16_input_trains():
    m = tiny().train()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(torch.randn(2, 3, 32, 32, dtype=torch.bfloat16))[0]
    out.float().sum().backward()
    assert m.patch_embed.proj.weight.grad is not None


# ------------------------------------------------------------------ sizes
@pytest.mark.parametrize('hw', [(16, 16), (33, 17), (17, 50)])
def test_odd_sizes_in_eval(hw):
    m = tiny().eval()
    with torch.no_grad():
        out = m(torch.randn(1, 3, *hw))[0]
    assert out.shape == (1, D, math.ceil(hw[0] / 16), math.ceil(hw[1] / 16))


@pytest.mark.parametrize('hw', [(1, 1), (5, 7), (33, 17)])
def test_adapter_odd_and_tiny_sizes_in_eval(hw):
    m = tiny_adapter().eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, *hw))
    for o, s in zip(outs, (4, 8, 16, 32)):
        assert o.shape == (1, D, math.ceil(hw[0] / s), math.ceil(hw[1] / s))
        assert torch.isfinite(o).all()


@pytest.mark.parametrize('B,hw', [(1, (1, 1)), (1, (32, 32)), (1, (20, 31))])
def test_adapter_batch_norm_needs_two_values(B, hw):
    m = tiny_adapter().train()
    H, W = hw
    with pytest.raises(ValueError, match=(
            r'ShuffleMambaAdapter in training mode normalises its stride-32 level with '
            rf'BatchNorm \(BatchNorm2d\), .* a batch of 1 image\(s\) of {H}x{W} gives a '
            r'1x1 stride-32 level, 1 value per channel\. Use a batch of at least 2, or '
            r'images larger than 32 pixels .* model\.eval\(\)')):
        m(torch.randn(B, 3, H, W))


@pytest.mark.parametrize('B,hw', [(2, (1, 1)), (1, (33, 16)), (1, (16, 40))])
def test_adapter_batch_norm_smallest_valid_training_inputs(B, hw):
    m = tiny_adapter().train()
    outs = m(torch.randn(B, 3, *hw))
    sum(o.sum() for o in outs).backward()
    assert all(torch.isfinite(o).all() for o in outs)


def test_adapter_frozen_or_group_norm_takes_one_image():
    m = tiny_adapter().train()
    for mod in (m.spm.conv4[1], m.norm4):  # only the stride-32 norms see 1 value
        mod.eval()
    outs = m(torch.randn(1, 3, 32, 32))
    assert outs[-1].shape == (1, D, 1, 1)
    m = tiny_adapter(adapter_norm_cfg=dict(type='GN', num_groups=2)).train()
    assert m(torch.randn(1, 3, 1, 1))[-1].shape == (1, D, 1, 1)
