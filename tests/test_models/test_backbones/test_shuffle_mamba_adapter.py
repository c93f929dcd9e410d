"""ShuffleMambaAdapter: shapes, gradients, determinism, SLWS, the official formulas,
pretrained loading and argument errors (tiny sizes, CPU)."""
import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from mmplugin_shufflemamba import ShuffleMamba, ShuffleMambaAdapter
from mmplugin_shufflemamba.models.layers import DeformInputs, MSDeformAttn
from mmplugin_shufflemamba.checkpoint import CheckpointError

from helpers.official_reference import make_official_state_dict

BN = dict(type='BN', requires_grad=True)


def tiny(**kw):
    cfg = dict(arch=dict(embed_dims=48, num_layers=4), img_size=64, deform_num_heads=4,
               conv_inplane=8, adapter_norm_cfg=BN)
    cfg.update(kw)
    return ShuffleMambaAdapter(**cfg)


def randomize_adapter(model, seed=0):
    """Non-trivial adapter weights (the official init zeroes gammas and offsets)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split('.')[0] in ShuffleMambaAdapter.NOT_PRETRAINED:
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.mark.parametrize('hw', [(64, 64), (72, 100), (33, 47), (96, 64)])
def test_output_shapes_any_size(hw):
    model = tiny().eval()
    H, W = hw
    with torch.no_grad():
        outs = model(torch.randn(2, 3, H, W))
    assert len(outs) == 4
    for out, s in zip(outs, (4, 8, 16, 32)):
        assert out.shape == (2, 48, math.ceil(H / s), math.ceil(W / s)), (out.shape, s)
        assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient():
    model = randomize_adapter(tiny(shuffle_rate=0.5, drop_path_rate=0.1)).train()
    outs = model(torch.randn(2, 3, 64, 96))
    sum((o * torch.randn_like(o)).sum() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_eval_is_deterministic_and_batch_independent():
    model = randomize_adapter(tiny(shuffle_rate=0.9, drop_path_rate=0.3)).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a = model(x)
        b = model(x)
        c = model(x[1:2])
    for u, v, w in zip(a, b, c):
        assert torch.equal(u, v)
        torch.testing.assert_close(u[1:2], w, rtol=1e-4, atol=1e-5)


def _bn_eval(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    return model


def test_slws_applies_to_the_blocks_in_training_only():
    x = torch.randn(2, 3, 64, 64)
    model = randomize_adapter(tiny(shuffle_rate=1.0))
    with torch.no_grad():
        ref = model.eval()(x)
        # Training mode without shuffling (BN kept in eval) is exactly eval.
        model.layer_shuffle.probs = [0.0] * 4
        same = _bn_eval(model.train())(x)
        model.layer_shuffle.probs = [0.0, 1.0, 1.0, 1.0]
        shuffled = _bn_eval(model.train())(x)
    for a, b, c in zip(ref, same, shuffled):
        torch.testing.assert_close(a, b)
        assert not torch.allclose(a, c, atol=1e-4)


def test_slws_draw_covers_the_whole_depth_over_groups():
    model = tiny(shuffle_rate=0.5)
    seen = []
    orig = model.forward_blocks

    def spy(hidden, residual, perms, start=0, end=None):
        seen.append((start, end, len(perms)))
        return orig(hidden, residual, perms, start, end)

    model.forward_blocks = spy
    model.train()(torch.randn(1, 3, 64, 64))
    assert seen == [(0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 4, 4)]
    assert model.layer_shuffle.probs == pytest.approx([0, 0.5 / 3, 1 / 3, 0.5])


def test_gradient_checkpointing_changes_nothing():
    x = torch.randn(2, 3, 64, 64)
    results = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        model = randomize_adapter(tiny(shuffle_rate=0.7, drop_path_rate=0.2,
                                       with_cp=with_cp))
        model.load_state_dict(results[0][2]) if results else None
        model.train()
        torch.manual_seed(1)
        outs = model(x)
        sum((o * o).sum() for o in outs).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        results.append((outs, grads, model.state_dict()))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    for n, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][n], msg=n)


# ----------------------------------------------------------------- official formulas
def official_msda(attn, query, value, ref, shapes):
    """The adapter's MSDeformAttn, written out (mmcv's PyTorch sampling as reference)."""
    B, Lq, _ = query.shape
    heads, levels, points = attn.num_heads, attn.num_levels, attn.num_points
    v = F.linear(value, attn.value_proj.weight, attn.value_proj.bias)
    v = v.view(B, value.shape[1], heads, -1)
    off = F.linear(query, attn.sampling_offsets.weight, attn.sampling_offsets.bias)
    off = off.view(B, Lq, heads, levels, points, 2)
    w = F.linear(query, attn.attention_weights.weight, attn.attention_weights.bias)
    w = w.view(B, Lq, heads, levels * points).softmax(-1).view(B, Lq, heads, levels, points)
    normalizer = torch.stack([shapes[:, 1], shapes[:, 0]], -1)
    loc = ref[:, :, None, :, None, :] + off / normalizer[None, None, None, :, None, :]
    out = multi_scale_deformable_attn_pytorch(v, shapes, loc, w)
    return F.linear(out, attn.output_proj.weight, attn.output_proj.bias)


def official_reference_points(shapes):
    pts = []
    for h, w in shapes:
        ry, rx = torch.meshgrid(torch.linspace(0.5, h - 0.5, h), torch.linspace(0.5, w - 0.5, w),
                                indexing='ij')
        pts.append(torch.stack((rx.reshape(-1)[None] / w, ry.reshape(-1)[None] / h), -1))
    return torch.cat(pts, 1)[:, :, None]


def test_reference_points_and_value_shapes():
    shapes = [(8, 6), (4, 3), (2, 2)]
    ref, spatial, start = DeformInputs([(4, 3)], shapes)
    torch.testing.assert_close(ref, official_reference_points([(4, 3)]))
    assert spatial.tolist() == [[8, 6], [4, 3], [2, 2]]
    assert start.tolist() == [0, 48, 60]
    ref2, _, _ = DeformInputs(shapes, [(4, 3)])
    torch.testing.assert_close(ref2, official_reference_points(shapes))


def test_msdeformattn_is_the_official_formula_without_residual_or_dropout():
    torch.manual_seed(0)
    attn = MSDeformAttn(32, num_heads=4, num_levels=3, num_points=4, ratio=0.5)
    assert attn.value_proj.out_features == 16 and attn.output_proj.in_features == 16
    # official init: zero offsets with the grid bias, zero attention weights
    assert attn.sampling_offsets.weight.abs().sum() == 0
    assert attn.attention_weights.weight.abs().sum() == 0
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    attn.train()  # dropout must not exist even in training
    shapes = [(8, 8), (4, 4), (2, 2)]
    q = torch.randn(2, 16, 32)
    v = torch.randn(2, 84, 32)
    inputs = DeformInputs([(4, 4)], shapes)
    out = attn(q, v, inputs)
    torch.testing.assert_close(out, official_msda(attn, q, v, inputs[0], inputs[1]))
    torch.testing.assert_close(attn(q, v, inputs, identity=q), out + q)


def test_injector_and_extractor_follow_the_official_formula():
    model = randomize_adapter(tiny()).eval()
    block = model.interactions[3]
    c_shapes = [(8, 8), (4, 4), (2, 2)]
    x = torch.randn(2, 16, 48)
    c = torch.randn(2, 84, 48)
    inj = DeformInputs([(4, 4)], c_shapes)
    ext = DeformInputs(c_shapes, [(4, 4)])
    shapes = torch.tensor(c_shapes)
    with torch.no_grad():
        i = block.injector
        expect = x + i.gamma * official_msda(i.attn, i.query_norm(x), i.feat_norm(c),
                                             inj[0], shapes)
        torch.testing.assert_close(i(x, c, inj), expect)
        e = block.extractor
        y = c + official_msda(e.attn, e.query_norm(c), e.feat_norm(x), ext[0],
                              torch.tensor([(4, 4)]))
        # official ConvFFN: one depthwise conv on each of the three scales
        h = e.ffn.fc1(e.ffn_norm(y))
        n = h.shape[1] // 21
        parts = [h[:, :16 * n], h[:, 16 * n:20 * n], h[:, 20 * n:]]
        conv = e.ffn.dwconv.dwconv
        h = torch.cat([
            conv(p.transpose(1, 2).reshape(2, -1, s[0], s[1])).flatten(2).transpose(1, 2)
            for p, s in zip(parts, c_shapes)], 1)
        expect = y + e.ffn.fc2(F.gelu(h))
        torch.testing.assert_close(e(c, x, ext, c_shapes), expect)


def official_adapter_forward(model, x):
    """The official Mamba_Adapter forward (H, W multiples of 32), from its description."""
    bs, _, H, W = x.shape
    h, w = H // 16, W // 16
    shapes3 = [(H // 8, W // 8), (h, w), (H // 32, W // 32)]
    inj = DeformInputs([(h, w)], shapes3)
    ext = DeformInputs(shapes3, [(h, w)])
    c1, c2, c3, c4 = model.spm(x)
    c2, c3, c4 = [t.flatten(2).transpose(1, 2) + model.level_embed[i]
                  for i, t in enumerate((c2, c3, c4))]
    n2, n3 = c2.shape[1], c3.shape[1]
    c = torch.cat([c2, c3, c4], 1)
    tokens = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    pe = model.pos_embed.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    pe = F.interpolate(pe, size=(h, w), mode='bicubic', align_corners=False)
    xt = tokens + pe.flatten(2).transpose(1, 2)
    r, outs = None, []
    for blk, (a, b) in zip(model.interactions, model.interaction_indexes):
        xt = blk.injector(xt, c, inj)
        for i in range(a, b + 1):
            xt, r = model.layers[i](xt, r)
        c = blk.extractor(c, xt, ext, shapes3)
        for e in blk.extra_extractors or ():
            c = e(c, xt, ext, shapes3)
        outs.append(xt.transpose(1, 2).reshape(bs, -1, h, w))
    c2 = c[:, :n2].transpose(1, 2).reshape(bs, -1, 2 * h, 2 * w)
    c3 = c[:, n2:n2 + n3].transpose(1, 2).reshape(bs, -1, h, w)
    c4 = c[:, n2 + n3:].transpose(1, 2).reshape(bs, -1, h // 2, w // 2)
    c1 = model.up(c2) + c1
    x1 = F.interpolate(outs[0], scale_factor=4, mode='bilinear', align_corners=False)
    x2 = F.interpolate(outs[1], scale_factor=2, mode='bilinear', align_corners=False)
    x4 = F.interpolate(outs[3], scale_factor=0.5, mode='bilinear', align_corners=False)
    return [model.norm1(c1 + x1), model.norm2(c2 + x2), model.norm3(c3 + outs[2]),
            model.norm4(c4 + x4)]


@pytest.mark.parametrize('hw', [(64, 64), (64, 96)])
def test_whole_adapter_equals_the_official_composition(hw):
    model = randomize_adapter(tiny(arch=dict(embed_dims=48, num_layers=6),
                                   interaction_indexes=[[0, 1], [2, 2], [3, 4], [5, 5]]))
    model.eval()
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ours = model(x)
        ref = official_adapter_forward(model, x)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_official_initialisation():
    model = tiny(init_values=0.0)
    model.init_weights()
    for blk in model.interactions:
        assert blk.injector.gamma.abs().sum() == 0
        assert blk.injector.attn.attention_weights.weight.abs().sum() == 0
    assert model.level_embed.std() > 0.5  # normal(0, 1)
    assert model.interactions[-1].extra_extractors is not None
    assert all(b.extra_extractors is None for b in model.interactions[:-1])
    assert tiny(init_values=0.5).interactions[0].injector.gamma.eq(0.5).all()


# ----------------------------------------------------------------- arguments
@pytest.mark.parametrize('name,value', [('out_indices', (1, 2)), ('out_type', 'mixer'),
                                        ('final_norm', True), ('num_registers', 12)])
def test_meaningless_arguments_are_rejected(name, value):
    with pytest.raises(TypeError, match=f"does not take '{name}'"):
        tiny(**{name: value})


@pytest.mark.parametrize('indexes,msg', [
    ([[0, 1], [3, 3]], 'consecutive'),
    ([[0, 1], [2, 2]], 'end at block 2'),
    ([[0, 0], [1, 1], [2, 3]], 'exactly 4 interaction'),
    ([[0, 1, 2]], 'pairs'),
])
def test_interaction_indexes_validation(indexes, msg):
    with pytest.raises(ValueError, match=msg):
        tiny(interaction_indexes=indexes)


def test_default_groups_heads_and_other_errors():
    assert tiny(arch=dict(embed_dims=48, num_layers=6)).interaction_indexes == (
        (0, 0), (1, 2), (3, 3), (4, 5))
    assert ShuffleMambaAdapter(arch='b', adapter_norm_cfg=BN).interaction_indexes == (
        (0, 5), (6, 11), (12, 17), (18, 23))
    with pytest.raises(ValueError, match='patch_size=16'):
        tiny(patch_size=8)
    with pytest.raises(ValueError, match='deform_num_heads=5 must divide'):
        tiny(deform_num_heads=5)
    with pytest.raises(ValueError, match=r'deform_num_heads=12 must divide .* = 20'):
        tiny(arch=dict(embed_dims=40, num_layers=4), deform_num_heads=None)
    assert tiny(deform_num_heads=None).deform_num_heads == 12  # official M / B value
    assert ShuffleMambaAdapter(arch=dict(embed_dims=1024, num_layers=4),
                               adapter_norm_cfg=BN).deform_num_heads == 16  # L2
    assert tiny(add_backbone_feature=False,
                interaction_indexes=[[0, 1], [2, 3]]).interaction_indexes == ((0, 1), (2, 3))


def test_builds_from_mmseg_and_mmdet_registries():
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    cfg = dict(type='ShuffleMambaAdapter', arch=dict(embed_dims=48, num_layers=4),
               img_size=64, deform_num_heads=4, conv_inplane=8, adapter_norm_cfg=BN)
    for registry in (SEG, DET):
        assert isinstance(registry.build(dict(cfg)), ShuffleMambaAdapter)


def test_layer_depth_matches_blocks_and_adapter_is_top():
    model = tiny()
    assert model.get_layer_depth('backbone.layers.2.mixer.in_proj.weight', 'backbone.') == (3, 6)
    assert model.get_layer_depth('backbone.pos_embed', 'backbone.') == (0, 6)
    for name in ('backbone.spm.stem.0.weight', 'backbone.level_embed',
                 'backbone.interactions.0.injector.gamma', 'backbone.norm4.weight'):
        assert model.get_layer_depth(name, 'backbone.') == (5, 6)


# ----------------------------------------------------------------- pretrained loading
def save_official(path, fmt='shufflemamba', **kw):
    sd = make_official_state_dict(depth=4, dim=48, grid=4, fmt=fmt, seed=3, **kw)
    # official training checkpoints name their model in args (cls token in front)
    args = argparse.Namespace(model='mambar_base_patch16_224')
    torch.save(dict(model=sd, model_ema=None, epoch=1, args=args), path)
    return sd


def test_pretrained_loading_fills_the_backbone_part_only(tmp_path):
    sd = save_official(tmp_path / 'ckpt.pth')
    plain = ShuffleMamba(arch=dict(embed_dims=48, num_layers=4), img_size=64,
                         init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ckpt.pth')))
    plain.init_weights()
    model = tiny(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ckpt.pth')))
    fresh = tiny().state_dict()
    model.init_weights()
    state = model.state_dict()
    for k, v in plain.state_dict().items():
        if k.startswith('norm_f.'):
            assert k not in state  # the adapter has no final norm
            continue
        torch.testing.assert_close(state[k], v, msg=k)
    assert torch.equal(state['layers.1.mixer.A_b_log'], sd['layers.1.mixer.A_b_log'])
    # adapter modules keep their own (official) initialisation
    assert state['interactions.0.injector.gamma'].abs().sum() == 0
    assert state['spm.stem.1.weight'].eq(1).all()
    assert set(state) - set(model.pretrained_state_dict()) == {
        k for k in fresh if k.split('.')[0] in ShuffleMambaAdapter.NOT_PRETRAINED}


def test_pretrained_registers_dropped_and_rmsnorm(tmp_path):
    path = tmp_path / 'reg.pth'
    sd = save_official(path, fmt='reg', registers=3, rms_norm=True)
    model = tiny(norm_cfg=dict(type='RMSNorm'),
                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    assert torch.equal(model.pos_embed.detach(), sd['pos_embed'])
    assert not hasattr(model, 'cls_token')
    with pytest.raises(CheckpointError, match="RMSNorm"):
        tiny(init_cfg=dict(type='Pretrained', checkpoint=str(path))).init_weights()


def test_pretrained_errors_are_as_loud_as_the_plain_backbone(tmp_path):
    path = tmp_path / 'deep.pth'
    save_official(path)
    model = tiny(arch=dict(embed_dims=48, num_layers=5),
                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match='missing in checkpoint') as e:
        model.init_weights()
    assert 'ShuffleMambaAdapter' in str(e.value) and 'layers.4.' in str(e.value)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # nothing loaded partially
    with pytest.raises(FileNotFoundError):
        tiny(init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'no.pth'))
             ).init_weights()


def test_autocast_bf16_runs_deformable_attention_in_fp32():
    model = randomize_adapter(tiny()).eval()
    x = torch.randn(1, 3, 64, 64)
    seen = []
    hook = lambda m, args, out: seen.append((args[0].dtype, out.dtype))  # noqa: E731
    # the projections inside the attention: fp32 in and out (autocast off there)
    handles = [getattr(m, n).register_forward_hook(hook) for m in model.modules()
               if isinstance(m, MSDeformAttn)
               for n in ('value_proj', 'sampling_offsets', 'attention_weights',
                         'output_proj')]
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            low = model(x)
    for h in handles:
        h.remove()
    assert seen and all(d == (torch.float32, torch.float32) for d in seen), seen
    for a, b in zip(ref, low):
        assert torch.isfinite(b).all()
        assert (a - b.float()).abs().mean() < 0.1 * a.abs().mean()


def test_layer_decay_groups_of_the_adapter():
    from mmengine.optim import build_optim_wrapper
    model = torch.nn.Module()
    model.backbone = tiny()
    wrapper = build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1.0, weight_decay=0.05),
        constructor='ShuffleMambaLayerDecayOptimWrapperConstructor',
        paramwise_cfg=dict(layer_decay_rate=0.5)))
    lr, wd = {}, {}
    for group in wrapper.optimizer.param_groups:
        for name in group['param_names']:
            lr[name], wd[name] = group['lr'], group['weight_decay']
    assert set(lr) == {n for n, p in model.named_parameters() if p.requires_grad}
    for i in range(4):  # 4 blocks: layer ids 1..4 of 6, scale 0.5 ** (5 - (i + 1))
        assert lr[f'backbone.layers.{i}.mixer.in_proj.weight'] == 0.5**(4 - i)
    assert lr['backbone.patch_embed.proj.weight'] == 0.5**5
    for name in ('backbone.level_embed', 'backbone.spm.stem.0.weight', 'backbone.up.weight',
                 'backbone.interactions.0.injector.gamma', 'backbone.norm1.weight',
                 'backbone.interactions.3.extra_extractors.1.attn.value_proj.weight'):
        assert lr[name] == 1.0, name
    for name in ('backbone.level_embed', 'backbone.interactions.2.injector.gamma',
                 'backbone.norm3.bias', 'backbone.spm.stem.1.weight',
                 'backbone.interactions.1.extractor.query_norm.weight',
                 'backbone.layers.0.mixer.A_log', 'backbone.layers.0.mixer.D_b',
                 'backbone.pos_embed'):
        assert wd[name] == 0.0, name
    for name in ('backbone.spm.stem.0.weight', 'backbone.interactions.0.injector.attn.'
                 'sampling_offsets.weight', 'backbone.layers.1.mixer.x_proj.weight'):
        assert wd[name] == 0.05, name


def test_bad_inputs_are_clear_errors():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r'expects \(B, C, H, W\)'):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match='in_channels=3 but the input has 1'):
        model(torch.randn(1, 1, 64, 64))
    with torch.no_grad():  # tiny inputs are padded, every level has at least one pixel
        assert [o.shape[-2:] for o in model(torch.randn(1, 3, 5, 7))] == [(2, 2), (1, 1),
                                                                          (1, 1), (1, 1)]


def test_token_upsample_equals_conv_transpose():
    from mmplugin_shufflemamba.models.layers.adapter_modules import TokenUpsample2x
    up = TokenUpsample2x(6)
    x = torch.randn(2, 6, 3, 5)
    tokens = x.flatten(2).transpose(1, 2)
    torch.testing.assert_close(up.forward_tokens(tokens, (3, 5)), up(x))
    assert set(up.state_dict()) == {'weight', 'bias'}
    assert up.weight.shape == (6, 6, 2, 2)


def test_placeholder_checkpoint_fails_when_built():
    for cls in (ShuffleMamba, ShuffleMambaAdapter):
        kw = dict(arch=dict(embed_dims=48, num_layers=4), img_size=64)
        if cls is ShuffleMambaAdapter:
            kw.update(deform_num_heads=4, adapter_norm_cfg=BN)
        with pytest.raises(CheckpointError, match='placeholder'):
            cls(init_cfg=dict(type='Pretrained', checkpoint='path/to/shufflemamba_b.pth'),
                **kw)


@pytest.mark.parametrize('norm,msg', [
    (dict(type='FooNorm'), "'FooNorm' is not a registered norm layer"),
    (dict(type='LN'), "'LN' \\(LayerNorm\\) does not normalise the channels of a \\(B, C, H, W\\)"),
    (dict(type='GN'), "'GN' needs num_groups"),
    ('BN', "must be a dict with a 'type'"),
])
def test_adapter_norm_cfg_is_checked_when_built(norm, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        tiny(adapter_norm_cfg=norm)


@pytest.mark.parametrize('norm', [dict(type='GN', num_groups=4), dict(type='IN'),
                                  dict(type='SyncBN', requires_grad=True)])
def test_adapter_norms_for_feature_maps(norm):
    m = tiny(adapter_norm_cfg=norm)
    if norm['type'] != 'SyncBN':  # SyncBN needs a process group to run
        outs = m.eval()(torch.randn(1, 3, 64, 64))
        assert [o.shape[-1] for o in outs] == [16, 8, 4, 2]


def test_adapter_init_cfg_applies_on_top_of_the_adapter_init():
    m = tiny(init_cfg=dict(type='Constant', val=0.5, layer='Conv2d'))
    m.init_weights()
    convs = [(n, mod) for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)]
    assert any(n.startswith('spm.') for n, _ in convs)
    assert all(torch.all(mod.weight == 0.5) for _, mod in convs)
    assert m.level_embed.std() > 0  # the adapter's own default init ran


@pytest.mark.parametrize('norm,msg', [
    (dict(type=torch.nn.LayerNorm), 'LayerNorm\\) does not normalise'),
    (dict(type=torch.nn.GroupNorm), 'needs num_groups')])
def test_adapter_norm_cfg_given_as_a_class(norm, msg):
    with pytest.raises(ValueError, match=msg):
        tiny(adapter_norm_cfg=norm)


def test_adapter_norm_cfg_from_the_default_scope():
    """Types are looked up as mmcv's build_norm_layer does: in the default scope."""
    from mmengine.registry import DefaultScope
    import mmpretrain.models  # noqa: F401  (registers LN2d)
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        m = tiny(adapter_norm_cfg=dict(type='LN2d', eps=1e-6))
    assert type(m.norm1).__name__ == 'LayerNorm2d'
