"""ShuffleMamba's classification tokens: the official plain layout (one cls token in
front) and Mamba-Reg's registers (with or without the cls_reduce neck), ``out_cls``,
SLWS with ``shuffle_cls`` and the argument errors (tiny sizes, CPU, kernel='torch')."""
import math

import pytest
import torch
import torch.nn.functional as F

from mmplugin_shufflemamba import ShuffleMamba, ShuffleMambaAdapter

D = 32


def tiny(**kw):
    cfg = dict(arch=dict(embed_dims=D, num_layers=3), img_size=64, patch_size=16,
               kernel='torch')
    cfg.update(kw)
    m = ShuffleMamba(**cfg)
    m.init_weights()
    return m


def randomize(m, seed=0):
    """Non-trivial values everywhere (norm weights, biases, neck, tokens)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m


# The three classification layouts, as ShuffleMamba arguments.
LAYOUTS = {
    'cls': dict(with_cls_token=True),
    'reg': dict(num_registers=3),
    'reg_reduce': dict(num_registers=4, cls_reduce=4, norm_cfg=dict(type='RMSNorm', eps=1e-5)),
}


def official_cls_positions(num_patches, num_registers):
    """Mamba-Reg: ``S = N // (R + 1)`` patches before every register."""
    S = num_patches // (num_registers + 1)
    return torch.arange(S, S * (num_registers + 1) + num_registers, S + 1)


def official_token_idx(num_patches, num_registers):
    """``seq = cat([patches, registers])[:, token_idx]`` with the registers at
    :func:`official_cls_positions` and the patches in order around them."""
    L = num_patches + num_registers
    cls_pos = official_cls_positions(num_patches, num_registers)
    is_reg = torch.zeros(L, dtype=torch.bool)
    is_reg[cls_pos] = True
    token_idx = torch.empty(L, dtype=torch.long)
    token_idx[cls_pos] = num_patches + torch.arange(num_registers)
    token_idx[~is_reg] = torch.arange(num_patches)
    return token_idx, cls_pos


def reference(m, x, perms=None, out_type='residual'):
    """The official classifier forward, written out on the backbone's weights.

    Embedding as ``models_shuffle.py`` (cls first, ``pos_embed`` over the whole
    sequence) or ``models_reg.py`` (``pos_embed`` on the patches, registers with
    ``pos_embed_cls`` inserted at the official positions); the blocks'
    ``residual += hidden; hidden = mixer(norm(residual))`` loop, with the given SLWS
    permutations applied to both streams and inverted after each block; ``norm_f``;
    the cls token or the registers through ``neck`` / ``norm_neck``.

    Returns:
        tuple: (dense maps per block, (B, D, h, w); classification feature).
    """
    B = x.shape[0]
    p = m.patch_size
    H, W = x.shape[-2:]
    x = F.pad(x, (0, (-W) % p, 0, (-H) % p))
    feat = F.conv2d(x, m.patch_embed.proj.weight, m.patch_embed.proj.bias, stride=p)
    h, w = feat.shape[-2:]
    N = h * w
    tokens = feat.flatten(2).transpose(1, 2)

    def resize(pos):
        gh, gw = m.patch_resolution
        if (gh, gw) == (h, w):
            return pos
        grid = pos.reshape(1, gh, gw, -1).permute(0, 3, 1, 2)
        return F.interpolate(grid, size=(h, w), mode='bicubic',
                             align_corners=False).flatten(2).transpose(1, 2)

    R = m.num_registers
    if m.with_cls_token:
        pos = torch.cat([m.pos_embed[:, :1], resize(m.pos_embed[:, 1:])], dim=1)
        seq = torch.cat([m.cls_token.expand(B, -1, -1), tokens], dim=1) + pos
        cls_pos = torch.tensor([0])
    elif R > 0:
        tokens = tokens + resize(m.pos_embed)
        regs = (m.cls_token + m.pos_embed_cls).expand(B, -1, -1)
        token_idx, cls_pos = official_token_idx(N, R)
        seq = torch.cat([tokens, regs], dim=1)[:, token_idx]
    else:
        seq = tokens + resize(m.pos_embed)
        cls_pos = torch.zeros(0, dtype=torch.long)
    is_patch = torch.ones(seq.shape[1], dtype=torch.bool)
    is_patch[cls_pos] = False

    def to_map(t):
        return t[:, is_patch].reshape(B, h, w, -1).permute(0, 3, 1, 2)

    hidden, residual, maps = seq, None, []
    for i, layer in enumerate(m.layers):
        perm = None if perms is None else perms[i]
        if perm is not None:
            hidden = hidden[:, perm]
            residual = None if residual is None else residual[:, perm]
        residual = hidden if residual is None else residual + hidden
        hidden = layer.mixer(layer.norm(residual))
        if perm is not None:
            inv = torch.argsort(perm)
            hidden, residual = hidden[:, inv], residual[:, inv]
        if i == len(m.layers) - 1:
            final = m.norm_f(residual + hidden)
            maps.append(to_map(final))
        else:
            maps.append(to_map(hidden if out_type == 'mixer' else residual + hidden))
    if m.with_cls_token:
        cls = final[:, 0]
    elif R > 0:
        regs = final[:, cls_pos]
        if m.cls_reduce > 1:
            cls = m.norm_neck(m.neck(regs).view(B, -1))
        else:
            cls = regs.reshape(B, -1)
    else:
        cls = None
    return maps, cls


# ------------------------------------------------------------------------- shapes
@pytest.mark.parametrize('layout,dims', [('cls', D), ('reg', 3 * D), ('reg_reduce', 4 * D // 4)])
@pytest.mark.parametrize('hw', [(64, 64), (50, 70), (33, 17), (16, 16), (96, 48)])
def test_out_cls_shapes_any_size(layout, dims, hw):
    m = tiny(out_cls=True, out_indices=(0, -1), **LAYOUTS[layout]).eval()
    assert m.cls_feature_dims == dims
    with torch.no_grad():
        outs = m(torch.randn(2, 3, *hw))
    assert len(outs) == 3
    grid = (math.ceil(hw[0] / 16), math.ceil(hw[1] / 16))
    for o in outs[:2]:  # dense maps: patches only
        assert o.shape == (2, D, *grid)
    assert outs[-1].shape == (2, dims)
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_out_cls_alone(layout):
    m = tiny(out_cls=True, out_indices=(), **LAYOUTS[layout]).eval()
    assert m.out_indices == ()
    with torch.no_grad():
        outs = m(torch.randn(1, 3, 48, 80))
    assert len(outs) == 1 and outs[0].shape == (1, m.cls_feature_dims)


def test_parameter_shapes_official_layout():
    m = tiny(**LAYOUTS['cls'])
    assert m.cls_token.shape == (1, 1, D) and m.pos_embed.shape == (1, 16 + 1, D)
    assert not hasattr(m, 'pos_embed_cls') and not hasattr(m, 'neck')
    m = tiny(**LAYOUTS['reg_reduce'])
    assert m.cls_token.shape == (1, 4, D) and m.pos_embed_cls.shape == (1, 4, D)
    assert m.pos_embed.shape == (1, 16, D)
    assert m.neck.weight.shape == (D // 4, D) and m.neck.bias is None
    assert isinstance(m.norm_neck, torch.nn.RMSNorm)
    assert m.norm_neck.weight.shape == (4 * D // 4, )
    m = tiny(num_registers=2, cls_reduce=2)  # LayerNorm blocks -> LayerNorm neck norm
    assert isinstance(m.norm_neck, torch.nn.LayerNorm)
    assert m.norm_neck.normalized_shape == (2 * D // 2, )
    assert 'neck.weight' not in tiny(num_registers=3).state_dict()


@pytest.mark.parametrize('num_patches,num_registers',
                         [(16, 3), (16, 4), (196, 12), (196, 16), (12, 4), (5, 4), (1, 4),
                          (20, 1)])
def test_token_layout_is_the_official_one(num_patches, num_registers):
    m = tiny(num_registers=num_registers)
    patch_pos, cls_pos = m.tokens.positions(num_patches)
    token_idx, official = official_token_idx(num_patches, num_registers)
    assert torch.equal(cls_pos, official)
    # the patches keep their row-major order around the registers
    assert torch.equal(patch_pos, torch.argsort(token_idx)[:num_patches])
    assert sorted(patch_pos.tolist() + cls_pos.tolist()) == list(
        range(num_patches + num_registers))
    m = tiny(with_cls_token=True)
    patch_pos, cls_pos = m.tokens.positions(num_patches)
    assert cls_pos.tolist() == [0] and patch_pos.tolist() == list(range(1, num_patches + 1))
    patch_pos, cls_pos = tiny().tokens.positions(num_patches)
    assert cls_pos.numel() == 0 and patch_pos.tolist() == list(range(num_patches))


# --------------------------------------------------------------- official parity
@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('out_type', ['residual', 'mixer'])
def test_parity_with_official_forward(layout, out_type):
    m = randomize(tiny(out_cls=True, out_indices=(0, 1, 2), out_type=out_type,
                       **LAYOUTS[layout])).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = m(x)
        maps, cls = reference(m, x, out_type=out_type)
    assert len(outs) == 4
    for ours, ref in zip(outs[:3], maps):
        assert torch.equal(ours, ref)
    assert torch.equal(outs[3], cls)
    # the final tokens: cls_feature of final_tokens is the same feature
    with torch.no_grad():
        hidden, grid, patch_pos = m.embed(x)
        hidden, residual = m.forward_blocks(hidden, None, m.draw_permutations(hidden.shape[1]))
        assert torch.equal(m.cls_feature(m.final_tokens(hidden, residual)), cls)


@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('hw', [(40, 56), (80, 112)])
def test_parity_with_resized_pos_embed(layout, hw):
    m = randomize(tiny(out_cls=True, out_indices=(1, 2), **LAYOUTS[layout]), seed=1).eval()
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        outs = m(x)
        maps, cls = reference(m, x)
    torch.testing.assert_close(outs[0], maps[1], rtol=0, atol=0)
    torch.testing.assert_close(outs[1], maps[2], rtol=0, atol=0)
    torch.testing.assert_close(outs[2], cls, rtol=0, atol=0)


def test_dense_maps_never_include_the_tokens():
    """Same blocks and patch weights, with and without a cls token: the dense maps
    differ (the token is in the sequence) but hold exactly the patch tokens."""
    with_cls = randomize(tiny(with_cls_token=True, out_indices=(0, 2))).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        outs = with_cls(x)
        maps, _ = reference(with_cls, x)
    assert [o.shape for o in outs] == [(2, D, 4, 3)] * 2
    assert torch.equal(outs[0], maps[0]) and torch.equal(outs[1], maps[2])
    plain = tiny(out_indices=(0, 2)).eval()
    sd = dict(with_cls.state_dict())
    del sd['cls_token']
    sd['pos_embed'] = sd['pos_embed'][:, 1:]
    plain.load_state_dict(sd)
    with torch.no_grad():
        plain_outs = plain(x)
        plain_maps, _ = reference(plain, x)
    assert torch.equal(plain_outs[1], plain_maps[2])
    assert not torch.allclose(plain_outs[1], outs[1])  # the cls token takes part


# ------------------------------------------------------------------------- SLWS
@pytest.mark.parametrize('draw', ['host', 'device'])
@pytest.mark.parametrize('layout', ['cls', 'reg'])
def test_permutations_with_fixed_tokens(layout, draw):
    m = tiny(arch=dict(embed_dims=D, num_layers=4), shuffle_rate=1.0, shuffle_cls=False,
             shuffle_draw=draw, **LAYOUTS[layout]).train()
    N = 16
    L = N + m.num_extra_tokens
    patch_pos, cls_pos = m.tokens.positions(N)
    patches_moved = 0
    for _ in range(10):
        perms = m.draw_permutations(L)
        assert len(perms) == 4
        assert perms[0] is None and perms[-1] is not None  # linspace(0, 1, 4)
        for perm in perms:
            if perm is None:
                continue
            assert perm.dtype == torch.long and sorted(perm.tolist()) == list(range(L))
            assert torch.equal(perm[cls_pos], cls_pos)  # tokens are fixed points
            assert set(perm[patch_pos].tolist()) == set(patch_pos.tolist())
            patches_moved += int(not torch.equal(perm[patch_pos], patch_pos))
    assert patches_moved > 0


@pytest.mark.parametrize('layout', ['cls', 'reg'])
def test_permutations_move_the_tokens_by_default(layout):
    m = tiny(arch=dict(embed_dims=D, num_layers=4), shuffle_rate=1.0,
             **LAYOUTS[layout]).train()
    assert m.shuffle_cls
    N = 16
    L = N + m.num_extra_tokens
    _, cls_pos = m.tokens.positions(N)
    tokens_moved = 0
    for _ in range(10):
        for perm in m.draw_permutations(L):
            if perm is not None:
                assert sorted(perm.tolist()) == list(range(L))
                tokens_moved += int(not torch.equal(perm[cls_pos], cls_pos))
    assert tokens_moved > 0


@pytest.mark.parametrize('layout', list(LAYOUTS))
@pytest.mark.parametrize('shuffle_cls, draw', [(True, 'host'), (False, 'host'),
                                               (False, 'device')])
def test_train_forward_is_the_official_slws(monkeypatch, layout, shuffle_cls, draw):
    """Train mode (no drop path, no dropout): the output is the official forward with
    the drawn permutations applied to both streams and inverted after every block."""
    m = randomize(tiny(arch=dict(embed_dims=D, num_layers=4), shuffle_rate=1.0,
                       shuffle_cls=shuffle_cls, shuffle_draw=draw, out_cls=True,
                       out_indices=(1, 3), **LAYOUTS[layout]))
    drawn = []
    draw = m.draw_permutations

    def record(*args, **kwargs):
        perms = draw(*args, **kwargs)
        drawn.append(perms)
        return perms

    monkeypatch.setattr(m, 'draw_permutations', record)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        m.train()
        outs = m(x)
        assert len(drawn) == 1 and drawn[0][-1] is not None
        maps, cls = reference(m, x, perms=drawn[0])
        torch.testing.assert_close(outs[0], maps[1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(outs[1], maps[3], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(outs[2], cls, rtol=1e-6, atol=1e-6)
        m.eval()
        eval_outs = m(x)
        assert all(p is None for p in drawn[-1])
        eval_maps, eval_cls = reference(m, x)
    assert torch.equal(eval_outs[2], eval_cls) and torch.equal(eval_outs[1], eval_maps[3])
    # the shuffled last block changes the result (Mamba is order-dependent)
    assert not torch.allclose(outs[2], eval_outs[2], atol=1e-4)


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_eval_never_shuffles_and_is_deterministic(layout):
    m = randomize(tiny(shuffle_rate=1.0, drop_path_rate=0.3, out_cls=True,
                       **LAYOUTS[layout])).eval()
    assert all(p is None for p in m.draw_permutations(16 + m.num_extra_tokens))
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        a, b = m(x), m(x)
        _, cls = reference(m, x)
        single = m(x[1:2])
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert torch.equal(a[-1], cls)
    torch.testing.assert_close(a[-1][1:2], single[-1], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('layout', list(LAYOUTS))
def test_gradients_reach_the_tokens_and_the_neck(layout):
    m = randomize(tiny(shuffle_rate=0.5, drop_path_rate=0.1, out_cls=True, out_indices=(),
                       **LAYOUTS[layout])).train()
    (feat, ) = m(torch.randn(2, 3, 64, 64))
    (feat * torch.randn_like(feat)).sum().backward()

    def nonzero(t):
        return t is not None and torch.isfinite(t).all() and t.abs().sum() > 0

    assert nonzero(m.cls_token.grad)
    if m.with_cls_token:
        assert nonzero(m.pos_embed.grad[:, 0])  # the cls position
    else:
        assert nonzero(m.pos_embed_cls.grad)
    if m.cls_reduce > 1:
        assert nonzero(m.neck.weight.grad) and nonzero(m.norm_neck.weight.grad)
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_frozen_stages_freeze_the_tokens_not_the_neck():
    m = tiny(frozen_stages=1, **LAYOUTS['reg_reduce']).train()
    assert not m.cls_token.requires_grad and not m.pos_embed_cls.requires_grad
    assert not m.pos_embed.requires_grad
    assert m.neck.weight.requires_grad and m.norm_neck.weight.requires_grad
    m = tiny(frozen_stages=1, **LAYOUTS['cls']).train()
    assert not m.cls_token.requires_grad


def test_reset_parameters_initialises_the_tokens():
    m = ShuffleMamba(arch=dict(embed_dims=D, num_layers=2), img_size=32, kernel='torch',
                     **LAYOUTS['reg_reduce'])
    assert not m.cls_token.any() and not m.pos_embed_cls.any()  # zeros when built
    m.reset_parameters()
    for t in (m.cls_token, m.pos_embed_cls, m.pos_embed, m.neck.weight):
        assert 0.012 < float(t.detach().std()) < 0.03  # trunc_normal(std=0.02)
    m = ShuffleMamba(arch=dict(embed_dims=D, num_layers=2), img_size=32, kernel='torch',
                     with_cls_token=True)
    m.init_weights()  # no init_cfg: the same initialisation
    assert m.cls_token.abs().sum() > 0 and m.pos_embed[:, 0].abs().sum() > 0


def _std(t):
    return float(t.detach().float().std())


def test_official_init_follows_the_official_models():
    """ShuffleMambaOfficialInit: models_shuffle.py's (cls token): segm_init_weights on
    every Linear (std 0.02, zero biases, dt_proj's included), the cls token zero, then
    Mamba's out_proj rescale; models_reg.py's (registers): Mamba's mixer init (dt_proj
    bias = softplus^-1(dt), dt in [1e-3, 0.1]); both: LeCun-normal patch embedding. The
    default init (no init_cfg) is the control: Mamba's mixers, torch's patch embedding."""
    torch.manual_seed(0)
    L, W = 4, 64

    def build(init=None, **kw):
        m = ShuffleMamba(arch=dict(embed_dims=W, num_layers=L), img_size=32,
                         kernel='torch', init_cfg=init, **kw)
        m.init_weights()
        return m

    plain = build(dict(type='ShuffleMambaOfficialInit', official='shufflemamba'),
                  with_cls_token=True)
    reg = build(dict(type='ShuffleMambaOfficialInit', official='reg'), num_registers=4)
    default = build(with_cls_token=True)
    mixer = plain.layers[1].mixer
    assert not mixer.dt_proj.bias.any() and not mixer.dt_proj_b.bias.any()
    assert not plain.cls_token.any() and _std(plain.pos_embed) > 0.012
    for lin in (mixer.in_proj, mixer.x_proj, mixer.dt_proj, mixer.x_proj_b):
        assert 0.017 < _std(lin.weight) < 0.023, lin
    for m in (reg, default):
        dt = torch.nn.functional.softplus(m.layers[1].mixer.dt_proj.bias.detach())
        assert 0.99e-3 <= float(dt.min()) and float(dt.max()) <= 0.1 + 1e-6
        assert float(dt.std()) > 0
    assert _std(default.layers[1].mixer.in_proj.weight) > 0.05  # torch's kaiming-uniform
    assert 0.012 < _std(reg.cls_token) < 0.03 and 0.012 < _std(reg.pos_embed_cls) < 0.03
    fan_in = 3 * 16 * 16
    for m in (plain, reg):
        assert abs(_std(m.patch_embed.proj.weight) * fan_in ** 0.5 - 1) < 0.1
        assert not m.patch_embed.proj.bias.any()
    # torch's default (kaiming-uniform, a=sqrt(5)): std 1 / sqrt(3 fan_in)
    assert abs(_std(default.patch_embed.proj.weight) * (3 * fan_in) ** 0.5 - 1) < 0.1
    for m in (plain, reg, default):  # kaiming-uniform / sqrt(L): std 1 / sqrt(3 fan_in L)
        w = m.layers[2].mixer.out_proj.weight
        assert abs(_std(w) * (3 * w.shape[1] * L) ** 0.5 - 1) < 0.1
    with pytest.raises(ValueError, match=r"official \(ShuffleMambaOfficialInit\) must be one of"):
        build(dict(type='ShuffleMambaOfficialInit', official='vim'), with_cls_token=True)


# ------------------------------------------------------------------- bad arguments
@pytest.mark.parametrize('kw,exc,msg', [
    (dict(with_cls_token=True, num_registers=2), ValueError, 'pick one'),
    (dict(out_cls=True), ValueError, 'out_cls=True .* the backbone has none'),
    (dict(with_cls_token=True, out_cls=True, final_norm=False), ValueError,
     'set final_norm=True'),
    (dict(num_registers=2, out_cls=True, final_norm=False), ValueError, 'final_norm=True'),
    (dict(cls_reduce=2), ValueError, 'reduces register tokens'),
    (dict(with_cls_token=True, cls_reduce=2), ValueError, 'reduces register tokens'),
    (dict(num_registers=2, cls_reduce=3), ValueError, 'must divide embed_dims=32'),
    (dict(num_registers=2, cls_reduce=0), ValueError, 'cls_reduce must be an int >= 1'),
    (dict(num_registers=2, cls_reduce=2.0), ValueError, 'cls_reduce must be an int >= 1'),
    (dict(num_registers=2, cls_reduce=True), ValueError, 'cls_reduce must be an int >= 1'),
    (dict(out_indices=()), TypeError, r'an empty one only with out_cls=True'),
    (dict(with_cls_token=True, out_indices=()), TypeError, 'only with out_cls=True'),
    (dict(with_cls_token=True, out_cls=True, out_indices=(3, )), ValueError,
     'out of range'),
])
def test_bad_classification_arguments(kw, exc, msg):
    with pytest.raises(exc, match=msg):
        tiny(**kw)


def test_cls_feature_without_tokens_is_an_error():
    m = tiny()
    with pytest.raises(RuntimeError, match='no cls / register tokens'):
        m.cls_feature(torch.randn(1, 16, D))


@pytest.mark.parametrize('name,value', [('with_cls_token', True), ('out_cls', True),
                                        ('cls_reduce', 4), ('shuffle_cls', False)])
def test_adapter_rejects_classification_arguments(name, value):
    with pytest.raises(TypeError, match=f"ShuffleMambaAdapter does not take '{name}'"):
        ShuffleMambaAdapter(arch=dict(embed_dims=48, num_layers=4), img_size=64,
                            deform_num_heads=4, conv_inplane=8,
                            adapter_norm_cfg=dict(type='BN', requires_grad=True),
                            kernel='torch', **{name: value})
