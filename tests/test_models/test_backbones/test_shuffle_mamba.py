import math

import pytest
import torch
import torch.nn.functional as F

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.models.layers import register_layout, resize_pos_embed


def tiny(**kw):
    cfg = dict(arch=dict(embed_dims=32, num_layers=4), img_size=64, patch_size=16)
    cfg.update(kw)
    m = ShuffleMamba(**cfg)
    m.init_weights()
    return m


@pytest.mark.parametrize('hw', [(64, 64), (50, 70), (33, 17), (16, 16), (96, 48)])
def test_output_shapes_any_size(hw):
    m = tiny(out_indices=(0, 2, 3)).eval()
    outs = m(torch.randn(2, 3, *hw))
    assert len(outs) == 3
    for o in outs:
        assert o.shape == (2, 32, math.ceil(hw[0] / 16), math.ceil(hw[1] / 16))
        assert torch.isfinite(o).all()


def test_arch_and_overrides():
    m = ShuffleMamba(arch='s', num_layers=2)
    assert (m.embed_dims, m.num_layers) == (384, 2)
    m = ShuffleMamba(arch='b', embed_dims=64, num_layers=3)
    assert (m.embed_dims, m.num_layers) == (64, 3)
    with pytest.raises(KeyError, match='Unknown ShuffleMamba arch'):
        ShuffleMamba(arch='xxl')
    with pytest.raises(ValueError, match='missing'):
        ShuffleMamba(arch=dict(embed_dims=64))


@pytest.mark.parametrize('bad,exc,msg', [
    ((0, 4), ValueError, 'out of range'),
    (-5, ValueError, 'out of range'),
    ((1, -3), ValueError, 'duplicates'),
    ((), TypeError, 'non-empty'),
    ((1.5, ), TypeError, 'ints'),
    ('3', TypeError, 'out_indices'),
])
def test_out_indices_validation(bad, exc, msg):
    with pytest.raises(exc, match=msg):
        tiny(out_indices=bad)


def test_negative_out_indices():
    assert tiny(out_indices=(-1, -4)).out_indices == (3, 0)


def test_bad_inputs_are_clear_errors():
    m = tiny()
    with pytest.raises(ValueError, match='in_channels=3'):
        m(torch.randn(1, 4, 32, 32))
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        m(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match='out_type'):
        tiny(out_type='hidden')
    with pytest.raises(ValueError, match='multiple of'):
        tiny(img_size=60)


@pytest.mark.parametrize('param_arch,expected_m', [('m', 74), ('b', 98), ('l1', 284),
                                                   ('l2', 340)])
def test_param_counts_match_paper_table1(param_arch, expected_m):
    m = ShuffleMamba(arch=param_arch)
    D = m.embed_dims
    # + cls token (1, 1, D), its position and the 1000-class head of the paper.
    total = sum(p.numel() for p in m.parameters()) + 2 * D + D * 1000 + 1000
    assert round(total / 1e6) == expected_m


def test_pos_embed_interpolation_matches_direct_bicubic():
    pe = torch.randn(1, 14 * 14, 8)
    out = resize_pos_embed(pe, (14, 14), (32, 20))
    grid = pe.reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    direct = F.interpolate(grid, size=(32, 20), mode='bicubic', align_corners=False)
    torch.testing.assert_close(out, direct.flatten(2).transpose(1, 2))
    assert resize_pos_embed(pe, (14, 14), (14, 14)) is pe
    with pytest.raises(ValueError, match='patch grid'):
        resize_pos_embed(pe, (10, 10), (5, 5))


@pytest.mark.parametrize('dtype', [torch.float64, torch.bfloat16])
def test_pos_embed_interpolation_precision(dtype):
    """float64 is resized in float64 (exact to 1e-12 against the direct interpolation);
    half precision in float32, then cast back."""
    pe = torch.randn(1, 14 * 14, 8, dtype=torch.float64)
    grid = pe.reshape(1, 14, 14, 8).permute(0, 3, 1, 2)
    direct = F.interpolate(grid, size=(9, 23), mode='bicubic', align_corners=False)
    direct = direct.flatten(2).transpose(1, 2)
    out = resize_pos_embed(pe.to(dtype), (14, 14), (9, 23))
    assert out.dtype == dtype
    if dtype == torch.float64:
        torch.testing.assert_close(out, direct, rtol=0, atol=1e-12)
    else:
        via_fp32 = F.interpolate(grid.to(dtype).float(), size=(9, 23), mode='bicubic',
                                 align_corners=False).flatten(2).transpose(1, 2)
        torch.testing.assert_close(out, via_fp32.to(dtype), rtol=0, atol=0)


def test_backbone_adds_resized_pos_embed():
    m = tiny(img_size=64)  # 4x4 grid
    torch.nn.init.zeros_(m.patch_embed.proj.weight)
    torch.nn.init.zeros_(m.patch_embed.proj.bias)
    tokens, grid, _ = m.embed(torch.randn(1, 3, 96, 128))
    assert grid == (6, 8)
    expected = resize_pos_embed(m.pos_embed, (4, 4), (6, 8))
    torch.testing.assert_close(tokens, expected)
    tokens, grid, _ = m.embed(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(tokens, m.pos_embed.detach())


def test_register_layout_matches_mamba_reg_spacing():
    N, R = 196, 12
    token_idx, patch_pos = register_layout(N, R)
    L = N // (R + 1)
    reg_positions = [i for i, t in enumerate(token_idx.tolist()) if t >= N]
    assert reg_positions == [L + r * (L + 1) for r in range(R)]
    assert sorted(token_idx.tolist()) == list(range(N + R))
    assert token_idx[patch_pos].tolist() == list(range(N))
    # Fewer patches than registers still works (all registers up front).
    ti, pp = register_layout(4, 6)
    assert sorted(ti.tolist()) == list(range(10)) and len(pp) == 4


def test_registers_never_in_outputs_but_change_features():
    m = tiny(num_registers=3, out_indices=(1, 3)).eval()
    x = torch.randn(2, 3, 64, 64)
    outs = m(x)
    assert [o.shape for o in outs] == [(2, 32, 4, 4)] * 2
    with torch.no_grad():
        m.cls_token.add_(1.0)
    assert not torch.allclose(m(x)[1], outs[1])


def test_out_type_residual_vs_mixer_and_final_norm():
    m = tiny(out_indices=(1, 3)).eval()
    mixer = tiny(out_indices=(1, 3), out_type='mixer').eval()
    mixer.load_state_dict(m.state_dict())
    captured = {}
    m.layers[1].register_forward_hook(lambda mod, i, o: captured.__setitem__(1, o))
    m.layers[3].register_forward_hook(lambda mod, i, o: captured.__setitem__(3, o))
    x = torch.randn(1, 3, 64, 64)
    res_out = m(x)
    mix_out = mixer(x)

    def as_map(t):
        return t.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)

    h1, r1 = captured[1]
    torch.testing.assert_close(res_out[0], as_map(r1 + h1))
    torch.testing.assert_close(mix_out[0], as_map(h1))
    h3, r3 = captured[3]
    torch.testing.assert_close(res_out[1], as_map(m.norm_f(r3 + h3)))
    torch.testing.assert_close(mix_out[1], res_out[1])
    no_norm = tiny(out_indices=(3, ), final_norm=False).eval()
    no_norm.load_state_dict({k: v for k, v in m.state_dict().items()
                             if not k.startswith('norm_f')})
    torch.testing.assert_close(no_norm(x)[0], as_map(r3 + h3))


def test_eval_is_deterministic_and_batch_independent():
    m = tiny(shuffle_rate=0.9, drop_path_rate=0.5, drop_rate=0.3, num_registers=2).eval()
    x = torch.randn(3, 3, 48, 64)
    a, b = m(x), m(x)
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    single = m(x[1:2])
    torch.testing.assert_close(single[-1], a[-1][1:2], atol=1e-5, rtol=1e-5)


def test_gradients_reach_all_parameters():
    m = tiny(num_registers=2, shuffle_rate=0.5, out_indices=(0, 3)).train()
    outs = m(torch.randn(2, 3, 64, 64))
    sum(o.pow(2).mean() for o in outs).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_frozen_stages_and_layer_depth():
    m = tiny(frozen_stages=2)
    m.train()
    assert not m.patch_embed.proj.weight.requires_grad
    assert not m.pos_embed.requires_grad
    assert not any(p.requires_grad for p in m.layers[1].parameters())
    assert all(p.requires_grad for p in m.layers[2].parameters())
    assert not m.layers[0].training
    with pytest.raises(ValueError, match='frozen_stages'):
        tiny(frozen_stages=9)
    assert m.get_layer_depth('backbone.pos_embed', 'backbone.') == (0, 6)
    assert m.get_layer_depth('backbone.layers.2.mixer.D', 'backbone.') == (3, 6)
    assert m.get_layer_depth('backbone.norm_f.weight', 'backbone.') == (5, 6)


def test_rms_norm_option():
    m = tiny(norm_cfg=dict(type='RMSNorm', eps=1e-5))
    assert 'layers.0.norm.bias' not in m.state_dict()
    assert m(torch.randn(1, 3, 32, 32))[0].shape == (1, 32, 2, 2)
    with pytest.raises(ValueError, match='norm_cfg'):
        tiny(norm_cfg=dict(type='GN'))


def test_registry_builds_from_mmseg_and_mmdet():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    cfg = dict(type='ShuffleMamba', arch=dict(embed_dims=16, num_layers=2), img_size=32)
    assert isinstance(SEG.build(cfg), ShuffleMamba)
    assert isinstance(DET.build(cfg), ShuffleMamba)


@pytest.mark.slow
def test_full_size_b_forward_at_512():
    m = ShuffleMamba(arch='b', out_indices=(5, 11, 17, 23)).eval()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 512, 512))
    assert [o.shape for o in outs] == [(1, 768, 32, 32)] * 4


def test_autocast_bf16_close_to_fp32_and_scan_in_fp32():
    m = tiny(out_indices=(3, )).eval()
    x = torch.randn(1, 3, 64, 64)
    ref = m(x)[0]
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = m(x)[0]
    assert torch.isfinite(out).all()
    rel = (out.float() - ref).norm() / ref.norm()
    assert rel < 0.05, rel
    # The scan itself always computes in float32 (bf16 inputs, fp32 math).
    from mmplugin_shufflemamba.ops import selective_scan, selective_scan_ref
    g = torch.Generator().manual_seed(0)
    u = torch.randn(1, 4, 9, generator=g)
    args = (u, torch.rand(1, 4, 9, generator=g), -torch.rand(4, 3, generator=g),
            torch.randn(1, 3, 9, generator=g), torch.randn(1, 3, 9, generator=g))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        o = selective_scan(*args, delta_softplus=True)
    torch.testing.assert_close(o, selective_scan_ref(*args, delta_softplus=True),
                               atol=1e-5, rtol=1e-5)


def test_compiled_and_pytorch_paths_agree_on_the_whole_backbone():
    from mmplugin_shufflemamba.ops import has_selective_scan_cpu
    if not has_selective_scan_cpu():
        pytest.skip('compiled CPU extension not built')
    fast = tiny(out_indices=(1, 3), num_registers=2, kernel='auto')
    ref = tiny(out_indices=(1, 3), num_registers=2, kernel='torch')
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 48, 80)
    outs = []
    for m in (fast, ref):
        m.train()
        xi = x.clone().requires_grad_()
        o = m(xi)
        sum((t * torch.linspace(-1, 1, t.numel()).view_as(t)).sum() for t in o).backward()
        outs.append((o, xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (o1, gx1, g1), (o2, gx2, g2) = outs
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gx1, gx2, atol=1e-4, rtol=1e-3)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-4, rtol=1e-3, msg=n)


def test_kernel_cuda_on_cpu_is_a_clear_error():
    m = tiny(kernel='cuda')
    with pytest.raises(RuntimeError, match="kernel='cuda'"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='kernel must be one of'):
        tiny(kernel='triton')


def test_out_indices_come_in_the_order_given():
    m = tiny(out_indices=(3, 0)).eval()
    ref = tiny(out_indices=(0, 3)).eval()
    ref.load_state_dict(m.state_dict())
    x = torch.randn(2, 3, 64, 64)
    late, early = m(x)
    first, last = ref(x)
    assert torch.equal(late, last) and torch.equal(early, first)
    assert not torch.equal(late, early)


def test_frozen_blocks_run_as_in_eval():
    """Frozen blocks are in eval mode: SLWS does not shuffle them, and a wholly frozen
    backbone (its final drop path too) gives its eval output in train mode."""
    m = tiny(frozen_stages=2, shuffle_rate=1.0, out_indices=(1, 3))
    m.train()
    for _ in range(20):
        perms = m.draw_permutations(16)
        assert perms[0] is None and perms[1] is None
    assert perms[3] is not None  # p = 1 for the last block
    x = torch.randn(2, 3, 64, 64)
    frozen_out = m(x)[0]
    assert torch.equal(frozen_out, m.eval()(x)[0])

    m = tiny(frozen_stages=4, shuffle_rate=1.0, drop_path_rate=0.5).train()
    assert not any(p.requires_grad for p in m.parameters())
    outs = [m(x)[0] for _ in range(3)]
    assert all(torch.equal(o, m.eval()(x)[0]) for o in outs)


def test_an_init_cfg_other_than_pretrained_keeps_the_default_init():
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=64,
                     with_cls_token=True, init_cfg=dict(type='Kaiming', layer='Conv2d'))
    conv_before = m.patch_embed.proj.weight.detach().clone()
    m.init_weights()
    assert m.pos_embed.std() > 0 and m.cls_token.std() > 0
    # the given init ran on top (Kaiming redraws the patch embedding, bias 0)
    assert not torch.equal(m.patch_embed.proj.weight, conv_before)
    assert torch.all(m.patch_embed.proj.bias == 0)


def test_shuffle_cls_needs_extra_tokens():
    with pytest.raises(ValueError, match='shuffle_cls=False .* has none'):
        tiny(shuffle_cls=False)
    assert tiny(shuffle_cls=False, with_cls_token=True).shuffle_cls is False


def test_a_second_init_weights_changes_nothing():
    for init_cfg in (None, dict(type='Kaiming', layer='Conv2d')):
        m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=64,
                         init_cfg=init_cfg)
        m.init_weights()
        with torch.no_grad():
            m.pos_embed.fill_(1.0)
        m.init_weights()
        assert torch.all(m.pos_embed == 1.0), init_cfg


def test_norm_cfg_eps_and_keys_are_checked():
    for eps in (-1, 0, 'small', None, True):
        with pytest.raises(ValueError, match=r"norm_cfg eps must be a number > 0, got"):
            tiny(norm_cfg=dict(type='LN', eps=eps))
    with pytest.raises(ValueError, match=r"unsupported norm_cfg keys \['requires_grad'\].*"
                       r"'type' and 'eps' only"):
        tiny(norm_cfg=dict(type='LN', requires_grad=True))
    assert tiny(norm_cfg=dict(type='RMSNorm', eps=1e-6)).norm_f.eps == 1e-6


def test_builds_on_the_meta_device_with_the_cpu_schedules():
    """A deferred-initialisation build (parameters on 'meta'): the SLWS and drop-path
    schedules are the CPU-built ones, and the model materialises and runs."""
    from mmplugin_shufflemamba import ShuffleMambaAdapter
    cfg = dict(arch=dict(embed_dims=32, num_layers=4), img_size=64, patch_size=16,
               drop_path_rate=0.2, shuffle_rate=0.5)
    ref = ShuffleMamba(**cfg)
    with torch.device('meta'):
        m = ShuffleMamba(**cfg)
        ShuffleMambaAdapter(arch=dict(embed_dims=48, num_layers=4), img_size=64,
                            interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
                            deform_num_heads=4, drop_path_rate=0.1, shuffle_rate=0.5)
    assert m.pos_embed.is_meta
    assert m.layer_shuffle.probs == ref.layer_shuffle.probs
    assert [repr(b.drop_path) for b in m.layers] == [repr(b.drop_path) for b in ref.layers]
    # shape inference on 'meta' (no autocast there), in train mode too (SLWS draws)
    assert m(torch.empty(2, 3, 64, 96, device='meta'))[0].shape == (2, 32, 4, 6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert m.train()(torch.empty(1, 3, 64, 64, device='meta'))[0].is_meta
    m.to_empty(device='cpu')
    m.init_weights()
    assert m.eval()(torch.randn(1, 3, 64, 64))[0].shape == (1, 32, 4, 4)


def test_blocks_after_the_deepest_out_index_are_not_run():
    m = tiny(out_indices=(1, 0)).eval()
    ran = []
    for i, block in enumerate(m.layers):
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
    x = torch.randn(1, 3, 64, 64)
    outs = m(x)
    assert ran == [0, 1]
    full = tiny(out_indices=(1, 0, 3)).eval()
    full.load_state_dict(m.state_dict())
    ref = full(x)
    torch.testing.assert_close(outs, ref[:2], rtol=0, atol=0)  # the same features
    ran.clear()
    cls = tiny(out_indices=(0, ), with_cls_token=True, out_cls=True).eval()
    for i, block in enumerate(cls.layers):
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
    cls(x)
    assert ran == [0, 1, 2, 3]  # the classification feature needs every block
