"""Every config in configs/ loads, resolves its mmseg/mmdet bases and builds."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import mmplugin_shufflemamba  # noqa: F401
from mmplugin_shufflemamba.utils.runtime import _replace_syncbn

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = sorted(glob.glob(osp.join(ROOT, 'configs', '**', '*.py'), recursive=True))


def shrink(cfg, dims=32, layers=4):
    bb = cfg.model.backbone
    bb.arch = dict(embed_dims=dims, num_layers=layers)
    bb.pop('embed_dims', None)
    bb.pop('num_layers', None)
    n_out = len(bb.out_indices) if not isinstance(bb.out_indices, int) else 1
    bb.out_indices = tuple(range(layers - n_out, layers))
    head = cfg.model.decode_head
    head.in_channels = [dims] * n_out
    head.channels = 16
    if cfg.model.get('auxiliary_head'):
        cfg.model.auxiliary_head.in_channels = dims
        cfg.model.auxiliary_head.channels = 8
    _replace_syncbn(cfg.model)
    return cfg


def test_configs_exist():
    names = [osp.relpath(c, ROOT) for c in CONFIGS]
    assert 'configs/upernet_shufflemamba_b.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(c, ROOT) for c in CONFIGS])
def test_config_loads_and_builds(path):
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'ShuffleMamba'
    assert 'mmplugin_shufflemamba' in cfg.custom_imports['imports']
    model = MODELS.build(shrink(cfg).model)
    model.init_weights()
    model.train()
    from mmseg.structures import SegDataSample
    from mmengine.structures import PixelData
    samples = []
    for _ in range(2):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 64)))
        s.set_metainfo(dict(img_shape=(64, 64), pad_shape=(64, 64), ori_shape=(64, 64)))
        samples.append(s)
    losses = model(torch.randn(2, 3, 64, 64), samples, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()


def test_b_config_matches_paper_recipe_and_size():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py'))
    bb = cfg.model.backbone
    assert (bb.arch, bb.img_size, bb.patch_size, bb.drop_path_rate) == ('b', 224, 16, 0.2)
    assert tuple(bb.out_indices) == (5, 11, 17, 23)
    assert cfg.model.get('neck') is None
    assert cfg.optim_wrapper.optimizer.lr == 6e-5
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.01
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.model.test_cfg.mode == 'slide' and tuple(cfg.model.test_cfg.stride) == (341, 341)
    _replace_syncbn(cfg.model)
    model = MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.parameters())
    assert round(params / 1e6) == 131, params  # paper Table 3: 131M
    # no weight decay on embeddings, norms, A_log and D
    keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    for name in ('backbone.pos_embed', 'backbone.layers.3.norm.weight',
                 'backbone.layers.3.mixer.A_log', 'backbone.layers.3.mixer.D_b',
                 'backbone.layers.3.mixer.A_b_log', 'backbone.norm_f.bias'):
        assert any(k in name and v['decay_mult'] == 0 for k, v in keys.items()), name
    assert not any(k in 'backbone.layers.3.mixer.in_proj.weight' for k in keys)


def test_three_line_user_config_inherits_and_sets_pretrained(tmp_path):
    user = tmp_path / 'my_config.py'
    base = osp.join(ROOT, 'configs', 'upernet_shufflemamba_b.py')
    user.write_text(
        f"_base_ = [{base!r}]\n"
        "model = dict(backbone=dict(init_cfg=dict(type='Pretrained', checkpoint='x.pth')))\n"
        "train_dataloader = dict(dataset=dict(data_root='data/ade'))\n")
    cfg = Config.fromfile(str(user))
    assert cfg.model.backbone.type == 'ShuffleMamba'
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='x.pth')
    assert cfg.train_dataloader.dataset.data_root == 'data/ade'
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'
