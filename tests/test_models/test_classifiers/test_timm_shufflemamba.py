"""The timm-registered ShuffleMamba ImageNet classifiers: registry, sizes, the official
state-dict layout, timm's model interface (features / head / optimizer groups / grad
checkpointing / classifier reset), pretrained loading and the way from a timm-trained
checkpoint into the dense backbones."""
import argparse

import pytest
import timm
import torch
import torch.nn.functional as F
from timm.models import group_parameters
from timm.optim import create_optimizer_v2, param_groups_layer_decay

import mmplugin_shufflemamba  # noqa: F401  (registers the timm models)
from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.models.classifiers import TIMM_ARCHS, ShuffleMambaClassifier
from mmplugin_shufflemamba.checkpoint import CheckpointError, load_pretrained_backbone

from helpers.official_reference import make_official_state_dict

NAMES = sorted(TIMM_ARCHS)
PLAIN = 'shufflemamba_b_patch16_224'
REG = 'shufflemamba_reg_b_patch16_224'
D = 32
RMS = dict(type='RMSNorm', eps=1e-5)
# tiny versions: arch overridden by create_model kwargs
TINY = {PLAIN: dict(embed_dims=D, num_layers=3, img_size=32, num_classes=5, kernel='torch'),
        REG: dict(embed_dims=D, num_layers=3, img_size=32, num_classes=5, kernel='torch',
                  num_registers=3, cls_reduce=2)}


def tiny(name=PLAIN, seed=0, **kw):
    m = timm.create_model(name, **dict(TINY[name], **kw))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return m.eval()


def official_checkpoint(path, model, name=PLAIN, ema=None):
    """What the official (DeiT-style) training script saves for a timm-built model."""
    torch.save({'model': model.state_dict(), 'model_ema': ema, 'optimizer': {},
                'epoch': 299, 'args': argparse.Namespace(model=name, shuffle_rate=0.5)},
               path)
    return str(path)


@pytest.fixture
def restore_safe_globals():
    """timm's own checkpoint reader allow-lists argparse.Namespace in a
    ``torch.serialization.safe_globals`` context whose exit removes it from the
    process-wide allow-list this package installs: put the list back afterwards."""
    before = list(torch.serialization.get_safe_globals())
    yield
    torch.serialization.add_safe_globals(
        [g for g in before if g not in torch.serialization.get_safe_globals()])


# ------------------------------------------------------------------------ registry
def test_every_model_is_registered():
    assert set(timm.list_models('shufflemamba*')) == set(NAMES)
    assert NAMES == ['shufflemamba_b_patch16_224', 'shufflemamba_l1_patch16_224',
                     'shufflemamba_m_patch16_224', 'shufflemamba_reg_b_patch16_224',
                     'shufflemamba_reg_l2_patch16_224']
    for name in NAMES:
        assert timm.is_model(name)
    assert timm.list_pretrained('shufflemamba*') == []  # nothing was released


@pytest.fixture(scope='module')
def full_size():
    """Full-size models, built once per module (a few seconds each on CPU)."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = timm.create_model(name)
        return cache[name]

    yield get
    cache.clear()


# paper Table 1: M 74M, B 98M, L1 284M, L2 340M (Reg-B is B with registers)
@pytest.mark.parametrize('name,params,paper', [
    ('shufflemamba_m_patch16_224', 74.2, 74),
    ('shufflemamba_b_patch16_224', 97.6, 98),
    pytest.param('shufflemamba_l1_patch16_224', 283.7, 284, marks=pytest.mark.slow),
    ('shufflemamba_reg_b_patch16_224', 99.3, 98),
    pytest.param('shufflemamba_reg_l2_patch16_224', 341.2, 340, marks=pytest.mark.slow),
])
def test_full_size_parameter_counts(full_size, name, params, paper):
    m = full_size(name) if name in (PLAIN, REG) else timm.create_model(name)
    count = sum(p.numel() for p in m.parameters()) / 1e6
    assert round(count, 1) == params
    assert abs(count - paper) / paper < 0.02
    assert m.num_classes == 1000 and m.head.out_features == 1000
    norm = torch.nn.LayerNorm if name == 'shufflemamba_m_patch16_224' else torch.nn.RMSNorm
    assert isinstance(m.layers[0].norm, norm) and isinstance(m.norm_f, norm)


def test_full_size_official_layout(full_size):
    sd = full_size(PLAIN).state_dict()
    assert sd['cls_token'].shape == (1, 1, 768)
    assert sd['pos_embed'].shape == (1, 197, 768)
    assert sd['patch_embed.proj.weight'].shape == (768, 3, 16, 16)
    assert sd['head.weight'].shape == (1000, 768) and sd['head.bias'].shape == (1000, )
    assert 'pos_embed_cls' not in sd and not any(k.startswith('neck') for k in sd)
    assert 'layers.23.mixer.A_b_log' in sd and 'layers.24.norm.weight' not in sd
    assert 'layers.0.norm.bias' not in sd and 'norm_f.bias' not in sd  # RMSNorm
    sd = full_size(REG).state_dict()
    assert sd['cls_token'].shape == (1, 12, 768)
    assert sd['pos_embed_cls'].shape == (1, 12, 768)
    assert sd['pos_embed'].shape == (1, 196, 768)
    assert sd['neck.weight'].shape == (192, 768) and 'neck.bias' not in sd
    assert sd['norm_neck.weight'].shape == (2304, ) and 'norm_neck.bias' not in sd
    assert sd['head.weight'].shape == (1000, 2304)


@pytest.mark.parametrize('name,fmt,rms', [(PLAIN, 'shufflemamba', True),
                                          ('shufflemamba_m_patch16_224', 'shufflemamba', False),
                                          (REG, 'reg', True)])
def test_state_dict_is_the_official_layout(name, fmt, rms):
    """Keys and shapes equal those of an official checkpoint of the same size."""
    kw = dict(embed_dims=64, num_layers=2, img_size=64, num_classes=10, kernel='torch')
    if fmt == 'reg':
        kw.update(num_registers=3, cls_reduce=4)  # the reference neck is D -> D // 4
    ours = timm.create_model(name, **kw).state_dict()
    official = make_official_state_dict(depth=2, dim=64, grid=4, fmt=fmt, registers=3,
                                        rms_norm=rms, num_classes=10)
    assert {k: tuple(v.shape) for k, v in ours.items()} == \
        {k: tuple(v.shape) for k, v in official.items()}


@pytest.mark.parametrize('name,config', [
    ('shufflemamba_m_patch16_224', 'shufflemamba-m_8xb256-300e_in1k.py'),
    ('shufflemamba_b_patch16_224', 'shufflemamba-b_8xb256-300e_in1k.py'),
    ('shufflemamba_l1_patch16_224', 'shufflemamba-l1_8xb128-200e_in1k.py'),
    ('shufflemamba_reg_b_patch16_224', 'shufflemamba-reg-b_8xb64-20e_in1k-224px-ft.py'),
    ('shufflemamba_reg_l2_patch16_224', 'shufflemamba-reg-l2_8xb64-20e_in1k-224px-ft.py'),
])
def test_pretrained_cfg_evaluates_as_the_recipe(name, config):
    """timm's eval transform (resolve_data_config) crops as the row's pretraining
    config tests: short side to 224 / crop_pct, then the 224 centre crop."""
    import os.path as osp
    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    cfg = Config.fromfile(osp.join(root, 'configs', 'pretrain', config))
    resize, crop = [t for t in cfg.test_dataloader.dataset.pipeline
                    if t.type in ('ResizeEdge', 'CenterCrop')]
    model = timm.create_model(name, arch=dict(embed_dims=32, num_layers=2))
    data = timm.data.resolve_data_config({}, model=model)
    assert data['input_size'] == (3, crop.crop_size, crop.crop_size)
    assert int(crop.crop_size / data['crop_pct']) == resize.scale
    assert data['interpolation'] == resize.interpolation == 'bicubic'


def test_create_model_kwargs_reach_the_model():
    m = timm.create_model(PLAIN, embed_dims=D, num_layers=4, img_size=64, num_classes=7,
                          drop_path_rate=0.3, shuffle_rate=0.4, in_chans=1, kernel='torch')
    assert isinstance(m, ShuffleMambaClassifier)
    assert (m.embed_dims, m.num_layers) == (D, 4)
    assert m.num_classes == 7 and m.head.out_features == 7
    assert m.patch_resolution == (4, 4) and m.pos_embed.shape == (1, 17, D)
    assert m.patch_embed.proj.in_channels == 1
    # official schedule: block i gets ([0] + linspace(0, rate, L))[i], norm_f's add the rate
    torch.testing.assert_close(
        torch.tensor([float(getattr(b.drop_path, 'drop_prob', 0.0)) for b in m.layers]),
        torch.tensor([0.0, 0.0, 0.1, 0.2]))
    assert abs(m.drop_path.drop_prob - 0.3) < 1e-6
    assert m.shuffle_rate == 0.4
    torch.testing.assert_close(torch.tensor(m.layer_shuffle.probs),
                               torch.linspace(0, 0.4, 4))
    assert m.with_cls_token and m.num_registers == 0
    assert m.pretrained_cfg['architecture'] == PLAIN
    with torch.no_grad():
        assert m.eval()(torch.randn(1, 1, 32, 48)).shape == (1, 7)
    for bad in ('out_indices', 'out_cls', 'final_norm', 'out_type'):
        with pytest.raises(TypeError, match=f'does not take {bad!r}'):
            timm.create_model(PLAIN, embed_dims=D, num_layers=2, **{bad: True})
    with pytest.raises(ValueError, match='needs classification tokens'):
        ShuffleMambaClassifier(arch='b', embed_dims=D, num_layers=2)


def test_they_start_from_the_official_initialisation():
    """As the official models from scratch: models_shuffle.py's (dt_proj bias zero, cls
    token zero) for the plain names, models_reg.py's (Mamba's dt_proj init) for Reg,
    both with a zero patch-embedding bias; weight_init='default' is the backbone's."""
    plain = timm.create_model(PLAIN, embed_dims=D, num_layers=2, img_size=32)
    reg = timm.create_model(REG, embed_dims=D, num_layers=2, img_size=32, num_registers=3,
                            cls_reduce=2)
    default = timm.create_model(PLAIN, embed_dims=D, num_layers=2, img_size=32,
                                weight_init='default')
    assert not plain.layers[0].mixer.dt_proj.bias.any() and not plain.cls_token.any()
    assert reg.layers[0].mixer.dt_proj.bias.abs().min() > 0 and reg.cls_token.std() > 0.01
    for m in (plain, reg):
        assert not m.patch_embed.proj.bias.any()
    assert default.patch_embed.proj.bias.abs().min() > 0
    assert default.layers[0].mixer.dt_proj.bias.abs().min() > 0
    with pytest.raises(ValueError, match=r"weight_init must be one of \('official', "
                       r"'default'\), got 'jax'"):
        timm.create_model(PLAIN, embed_dims=D, num_layers=2, weight_init='jax')


# ------------------------------------------------------------------ forward interface
@pytest.mark.parametrize('name', [PLAIN, REG])
def test_forward_is_head_of_features(name):
    m = tiny(name)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        tokens = m.forward_features(x)
        assert tokens.shape == (2, 2 * 3 + m.num_extra_tokens, D)
        out = m(x)
        assert out.shape == (2, 5)
        assert torch.equal(out, m.forward_head(tokens))
        pre = m.forward_head(tokens, pre_logits=True)
        assert pre.shape == (2, m.num_features) and m.num_features == m.cls_feature_dims
        assert torch.equal(out, m.head(pre))


@pytest.mark.parametrize('name', [PLAIN, REG])
def test_pre_logits_are_the_backbone_cls_feature(name):
    m = tiny(name)
    tokens = dict(with_cls_token=True) if name == PLAIN else \
        dict(num_registers=3, cls_reduce=2)
    backbone = ShuffleMamba(arch=dict(embed_dims=D, num_layers=3), img_size=TINY[name][
        'img_size'], kernel='torch', norm_cfg=RMS, out_cls=True, out_indices=(1, 2), **tokens)
    backbone.load_state_dict(m.pretrained_state_dict(), strict=True)
    backbone.eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        feats = m.forward_features(x)
        outs = backbone(x)
        assert torch.equal(outs[-1], m.forward_head(feats, pre_logits=True))
        patch_pos, _ = backbone.tokens.positions(6)
        dense = feats[:, patch_pos].reshape(2, 2, 3, D).permute(0, 3, 1, 2)
        assert torch.equal(outs[1], dense)


def test_no_weight_decay():
    m = tiny()
    assert {'cls_token', 'pos_embed'} <= set(m.no_weight_decay())
    assert 'pos_embed_cls' in tiny(REG).no_weight_decay()
    opt = create_optimizer_v2(m, 'adamw', lr=1e-3, weight_decay=0.05)
    names = {id(p): n for n, p in m.named_parameters()}
    decay = {names[id(p)] for g in opt.param_groups if g['weight_decay'] > 0
             for p in g['params']}
    no_decay = {names[id(p)] for g in opt.param_groups if g['weight_decay'] == 0
                for p in g['params']}
    assert {'cls_token', 'pos_embed', 'head.bias', 'norm_f.weight'} <= no_decay
    assert {'patch_embed.proj.weight', 'head.weight', 'layers.0.mixer.in_proj.weight'} <= decay
    assert decay | no_decay == set(names.values()) and not decay & no_decay


@pytest.mark.parametrize('name', [PLAIN, REG])
@pytest.mark.parametrize('coarse', [False, True])
def test_group_matcher_layer_decay(name, coarse):
    m = tiny(name)
    L = m.num_layers
    layer_of = group_parameters(m, m.group_matcher(coarse=coarse), reverse=True)
    assert set(layer_of) == {n for n, _ in m.named_parameters()}
    for n, lid in layer_of.items():
        if n.startswith(('cls_token', 'pos_embed', 'patch_embed')):
            expected = 0  # the embeddings (pos_embed_cls included)
        elif n.startswith('layers.'):
            expected = int(n.split('.')[1]) + 1
        elif n.startswith(('norm_f', 'neck', 'norm_neck')):
            expected = L  # with the last block
        else:
            assert n.startswith('head.'), n
            expected = L + 1
        assert lid == expected, (n, lid, expected)
    groups = param_groups_layer_decay(m, weight_decay=0.05, layer_decay=0.5,
                                      no_weight_decay_list=m.no_weight_decay())
    # L + 2 layers (embeddings, blocks, head), each with and without weight decay
    assert len(groups) == 2 * (L + 2)
    assert sorted({g['lr_scale'] for g in groups}) == sorted(0.5 ** i for i in range(L + 2))
    head = [g for g in groups if any(p is m.head.weight for p in g['params'])][0]
    stem = [g for g in groups if any(p is m.cls_token for p in g['params'])][0]
    assert head['lr_scale'] == 1.0 and head['weight_decay'] == 0.05
    assert stem['lr_scale'] == 0.5 ** (L + 1) and stem['weight_decay'] == 0.0
    opt = create_optimizer_v2(m, 'adamw', lr=1e-3, weight_decay=0.05, layer_decay=0.75)
    assert sum(len(g['params']) for g in opt.param_groups) == len(list(m.parameters()))


@pytest.mark.parametrize('name', [PLAIN, REG])
def test_reset_classifier(name):
    m = tiny(name)
    assert m.get_classifier() is m.head
    x = torch.randn(1, 3, 32, 32)
    m.reset_classifier(7)
    assert m.num_classes == 7 and m.head.out_features == 7
    assert m.head.in_features == m.num_features
    assert not m.head.bias.any()  # official init: zero bias
    with torch.no_grad():
        assert m(x).shape == (1, 7)
        m.reset_classifier(0)
        assert isinstance(m.head, torch.nn.Identity)
        assert torch.equal(m(x), m.forward_head(m.forward_features(x), pre_logits=True))
    m.reset_classifier(3, global_pool='token')
    with pytest.raises(ValueError, match="global_pool='token'"):
        m.reset_classifier(3, global_pool='avg')
    assert 'head.weight' not in tiny(name, num_classes=0).state_dict()


@pytest.mark.parametrize('name', [PLAIN, REG])
def test_grad_checkpointing(name):
    m = tiny(name, shuffle_rate=0.5, drop_path_rate=0.1, num_layers=2)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        ref = m(x)
    m.set_grad_checkpointing(True)
    assert m.with_cp
    with torch.no_grad():
        assert torch.equal(m(x), ref)  # eval: checkpointing changes nothing

    def step(cp):
        m.set_grad_checkpointing(cp)
        m.zero_grad()
        torch.manual_seed(3)  # the same permutations and drop-path masks
        out = m.train()(x)
        (out * torch.arange(5.0)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}

    out_cp, grads_cp = step(True)
    out, grads = step(False)
    torch.testing.assert_close(out_cp, out)
    assert grads_cp.keys() == grads.keys()
    for n in grads:
        torch.testing.assert_close(grads_cp[n], grads[n], rtol=1e-4, atol=1e-6, msg=n)
    assert grads_cp['cls_token'].abs().sum() > 0


# ------------------------------------------------------------------ pretrained weights
def test_pretrained_without_a_file_is_an_error():
    with pytest.raises(RuntimeError, match='no ShuffleMamba ImageNet weights were ever '
                       r"released.*pretrained_cfg_overlay=dict\(file="):
        timm.create_model(PLAIN, pretrained=True, **TINY[PLAIN])


@pytest.mark.parametrize('name', [PLAIN, REG])
def test_pretrained_from_official_checkpoint(tmp_path, name):
    src = tiny(name, seed=1)
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src, name)
    m = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path),
                          **TINY[name])
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), src(x))


def test_pretrained_load_is_one_log_line_that_counts_the_head(tmp_path):
    """The backbone and the head in one line: the head is loaded, not dropped, and no
    tensor keeps its initialisation; a head of another size is said not to load."""
    from helpers.logs import captured_log
    src = tiny(seed=1)
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src, PLAIN)
    model = timm.create_model(PLAIN, **TINY[PLAIN])
    with captured_log() as lines:
        summary = model.load_pretrained(path)
    assert summary['dropped'] == []  # (the summary says what the log says)
    (line, ) = [m for m in lines if path in m]
    assert 'backbone tensors and head.weight, head.bias;' in line, line
    assert 'dropped keys: []' in line and 'initialisation' not in line, line
    with captured_log() as lines:
        timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=dict(file=path),
                          **dict(TINY[PLAIN], num_classes=3))
    (line, ) = [m for m in lines if path in m]
    assert "dropped keys: ['head.weight', 'head.bias']; 2 tensors of ShuffleMambaClassifier " \
        "keep their initialisation; the head is not loaded (checkpoint head {'weight': (5, " \
        f"{D}), 'bias': (5,)}}, model head {{'weight': (3, {D}), 'bias': (3,)}})" in line, line


def asks_which_then_loads(src, overlay, words):
    """A bare state dict with one cls token is refused as ambiguous, then loads exactly
    with ckpt_format."""
    with pytest.raises(CheckpointError, match=words):
        timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=overlay,
                          **TINY[PLAIN])
    m = timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=overlay,
                          ckpt_format='shufflemamba', **TINY[PLAIN])
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_pretrained_bare_state_dict_takes_the_loader_options(tmp_path):
    """A bare state dict with one cls token could be either official layout: the error
    asks which, and create_model passes ckpt_format (and use_ema) to the loader."""
    src = tiny(seed=2)
    path = str(tmp_path / 'own.pth')
    torch.save({'model': src.state_dict()}, path)
    asks_which_then_loads(src, dict(file=path), f'{path}: cannot tell where the cls token')
    ema = tiny(seed=3)
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src, ema=ema.state_dict())
    m = timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=dict(file=path),
                          use_ema=True, **TINY[PLAIN])
    assert torch.equal(m.state_dict()['pos_embed'], ema.state_dict()['pos_embed'])
    with pytest.raises(ValueError, match=r"\['ckpt_format'\] apply to the weights of "
                       r"pretrained=True"):
        timm.create_model(PLAIN, ckpt_format='shufflemamba', **TINY[PLAIN])


def test_pretrained_from_a_state_dict_in_the_overlay():
    """pretrained_cfg_overlay=dict(state_dict=...) goes through the same loader as a
    file: the head of the model's num_classes is loaded (timm's generic loader dropped it
    for any num_classes but 1000), the loader's options apply, the grid is resized."""
    src = tiny(seed=5)
    overlay = dict(state_dict=src.state_dict())
    asks_which_then_loads(src, overlay, 'the given state dict: cannot tell where')
    m = timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=overlay,
                          ckpt_format='shufflemamba', **dict(TINY[PLAIN], img_size=64))
    assert m.pos_embed.shape == (1, 17, D)
    assert torch.equal(m.head.weight, src.head.weight)
    assert 'state_dict' not in m.pretrained_cfg  # no second copy of the weights kept


@pytest.mark.parametrize('kw,msg', [
    (dict(features_only=True), 'features_only=True is not supported: use the mmseg'),
    (dict(global_pool='avg'), "global_pool='avg' is not supported"),
])
def test_timm_options_the_classifiers_do_not_offer(kw, msg):
    with pytest.raises(ValueError, match=msg):
        timm.create_model(PLAIN, **kw, **TINY[PLAIN])
    assert timm.create_model(PLAIN, global_pool='token', **TINY[PLAIN]).num_classes == 5


def test_pretrained_at_another_resolution(tmp_path):
    src = tiny(PLAIN, seed=1)  # img_size 32: 2 x 2 grid
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src)
    m = timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=dict(file=path),
                          **dict(TINY[PLAIN], img_size=64))
    sd = src.state_dict()
    assert m.pos_embed.shape == (1, 17, D)
    assert torch.equal(m.pos_embed[:, :1], sd['pos_embed'][:, :1])
    grid = sd['pos_embed'][:, 1:].reshape(1, 2, 2, D).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, size=(4, 4), mode='bicubic',
                             align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(m.pos_embed[:, 1:], expected)
    for k in ('cls_token', 'head.weight', 'head.bias', 'layers.2.mixer.A_b_log',
              'norm_f.weight'):
        assert torch.equal(m.state_dict()[k], sd[k]), k
    # the same input: the source resizes its pos_embed at run time, exactly so
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), src(x))


@pytest.mark.parametrize('name', [PLAIN, REG])
def test_a_dense_backbones_file_is_not_a_classifiers(tmp_path, name):
    """A segmentor's / detector's file has no cls / register tokens: the message says so
    and asks for an ImageNet classifier checkpoint (not 'build with_cls_token=False',
    which a classifier cannot)."""
    from mmplugin_shufflemamba import ShuffleMamba
    from mmplugin_shufflemamba.checkpoint import CheckpointError
    dense = ShuffleMamba(arch=dict(embed_dims=D, num_layers=3), img_size=32, kernel='torch')
    path = tmp_path / 'seg.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in dense.state_dict().items()},
                    meta=dict(iter=2)), path)
    with pytest.raises(CheckpointError) as e:
        tiny(name).load_pretrained(str(path))
    assert 'the checkpoint has no cls / register tokens, and ShuffleMambaClassifier reads ' \
        'its classification feature from them' in str(e.value), str(e.value)
    assert 'with_cls_token=False' not in str(e.value)


def test_pretrained_head_of_another_size_keeps_its_init(tmp_path):
    src = tiny(PLAIN, seed=1)
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src)
    m = timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=dict(file=path),
                          **dict(TINY[PLAIN], num_classes=9))
    assert m.head.out_features == 9 and not m.head.bias.any()
    assert torch.equal(m.cls_token, src.cls_token)
    assert torch.equal(m.layers[1].mixer.in_proj.weight, src.layers[1].mixer.in_proj.weight)


def test_pretrained_ema_and_timm_script_checkpoints(tmp_path):
    raw, ema = tiny(PLAIN, seed=1), tiny(PLAIN, seed=2)
    # timm's train.py: state_dict (+ state_dict_ema), args
    path = tmp_path / 'timm.pth.tar'
    torch.save({'epoch': 9, 'arch': PLAIN, 'state_dict': raw.state_dict(),
                'state_dict_ema': ema.state_dict(), 'args': argparse.Namespace(model=PLAIN)},
               path)
    m = timm.create_model(PLAIN, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                          **TINY[PLAIN])
    assert torch.equal(m.cls_token, raw.cls_token)
    assert torch.equal(m.head.weight, raw.head.weight)
    m.load_pretrained(str(path), use_ema=True)
    assert torch.equal(m.cls_token, ema.cls_token)
    assert torch.equal(m.head.weight, ema.head.weight)
    # saved without args (CheckpointSaver with args=None): its 'arch' names the model
    torch.save({'epoch': 9, 'arch': PLAIN, 'state_dict': raw.state_dict()}, path)
    assert m.load_pretrained(str(path))['format'] == 'shufflemamba'
    assert torch.equal(m.cls_token, raw.cls_token)


def test_pretrained_from_an_mmpretrain_classifier(tmp_path):
    """An ImageClassifier trained with MMEngine (``backbone.*``, ``head.fc.*``)."""
    from mmengine.config import Config

    from mmplugin_shufflemamba.checkpoint import official_to_mmpretrain
    src = tiny(PLAIN, seed=4)
    cfg = Config(dict(model=dict(
        type='ImageClassifier',
        backbone=dict(type='ShuffleMamba', arch=dict(embed_dims=D, num_layers=3),
                      img_size=32, with_cls_token=True, out_cls=True, out_indices=()),
        head=dict(type='LinearClsHead', num_classes=5, in_channels=D))))
    torch.save(dict(meta=dict(cfg=cfg.pretty_text, epoch=3),
                    state_dict=official_to_mmpretrain(src.state_dict())),
               tmp_path / 'epoch_3.pth')
    m = timm.create_model(PLAIN, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(tmp_path / 'epoch_3.pth')),
                          **TINY[PLAIN])
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m.eval()(x), src(x))


def test_checkpoint_path_of_exactly_this_model(tmp_path, restore_safe_globals):
    src = tiny(PLAIN, seed=1)
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src)
    m = timm.create_model(PLAIN, checkpoint_path=path, **TINY[PLAIN])
    for k, v in src.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


# --------------------------------------------------- timm checkpoint -> dense backbone
@pytest.mark.parametrize('out_cls', [False, True])
def test_timm_checkpoint_into_dense_backbone(tmp_path, out_cls):
    src = tiny(PLAIN, seed=5)
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src)
    m = ShuffleMamba(arch=dict(embed_dims=D, num_layers=3), img_size=32, kernel='torch',
                     with_cls_token=True, out_cls=out_cls, out_indices=(0, 2), norm_cfg=RMS,
                     init_cfg=dict(type='Pretrained', checkpoint=path))
    m.init_weights()
    m.eval()
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        outs = m(x)
        feats = src.forward_features(x)
    assert len(outs) == 2 + int(out_cls)
    dense = feats[:, 1:].reshape(2, 2, 3, D).permute(0, 3, 1, 2)
    assert torch.equal(outs[1], dense)
    if out_cls:
        with torch.no_grad():
            assert torch.equal(outs[-1], src.forward_head(feats, pre_logits=True))


def test_timm_checkpoint_into_backbone_without_cls_token(tmp_path):
    src = tiny(PLAIN, seed=5)
    path = official_checkpoint(tmp_path / 'checkpoint.pth', src)
    m = ShuffleMamba(arch=dict(embed_dims=D, num_layers=3), img_size=64, kernel='torch',
                     norm_cfg=RMS, out_indices=(0, 1, 2))
    summary = load_pretrained_backbone(m, path)
    assert summary['format'] == 'shufflemamba'
    assert summary['checkpoint_tokens'] == 1 and summary['kept_tokens'] == 0
    assert set(summary['dropped']) == {'head.weight', 'head.bias'}
    assert m.pos_embed.shape == (1, 16, D) and not hasattr(m, 'cls_token')
    assert torch.equal(m.layers[2].mixer.D_b, src.layers[2].mixer.D_b)
    with torch.no_grad():
        outs = m.eval()(torch.randn(1, 3, 64, 64))
    assert [o.shape for o in outs] == [(1, D, 4, 4)] * 3
