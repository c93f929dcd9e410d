import argparse
import os.path as osp
import sys

import pytest
import torch

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.models.utils import (CheckpointError, convert_to_backbone,
                                                detect_format, load_pretrained_backbone)

sys.path.insert(0, osp.dirname(__file__))
from official_reference import make_official_state_dict, official_features  # noqa: E402

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def official_checkpoint(path, fmt='shufflemamba', ema=True, **kw):
    model = make_official_state_dict(fmt=fmt, seed=1, **kw)
    model_ema = make_official_state_dict(fmt=fmt, seed=2, **kw) if ema else None
    ckpt = dict(model=model, model_ema=model_ema, optimizer=dict(state={}, param_groups=[]),
                lr_scheduler=dict(last_epoch=3), epoch=299, scaler=dict(scale=65536.0),
                args=argparse.Namespace(model='shufflemamba_base', lr=1e-3, shuffle_rate=0.5))
    torch.save(ckpt, path)
    return model, model_ema


def backbone(ckpt=None, **kw):
    cfg = dict(arch=dict(embed_dims=32, num_layers=3), img_size=64, patch_size=16,
               out_indices=(0, 1, 2))
    cfg.update(kw)
    if ckpt is not None:
        cfg['init_cfg'] = dict(type='Pretrained', checkpoint=str(ckpt))
    m = ShuffleMamba(**cfg)
    m.init_weights()
    return m.eval()


def assert_features(model, sd, fmt, keep=False, hw=(96, 80), out_type='residual'):
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        ours = model(x)
        ref = official_features(sd, x, fmt, (0, 1, 2), keep_tokens=keep, out_type=out_type)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize('fmt', ['shufflemamba', 'vim'])
@pytest.mark.parametrize('out_type', ['residual', 'mixer'])
def test_plain_and_vim_round_trip(tmp_path, fmt, out_type):
    src = tmp_path / 'official.pth'
    _, ema = official_checkpoint(src, fmt)
    cfg = dict(arch=dict(embed_dims=32, num_layers=3), img_size=64, out_indices=(0, 1, 2),
               out_type=out_type,
               init_cfg=dict(type='Pretrained', checkpoint=str(src), ckpt_format=fmt))
    model = ShuffleMamba(**cfg)
    model.init_weights()
    model.eval()
    assert_features(model, ema, fmt, out_type=out_type)  # EMA weights by default

    from tools_convert import convert_main
    dst = tmp_path / 'converted.pth'
    summary = convert_main([str(src), str(dst), '--format', fmt])
    assert summary['format'] == fmt and summary['dropped'] == ['head.weight', 'head.bias']
    reloaded = ShuffleMamba(**dict(cfg, init_cfg=dict(type='Pretrained', checkpoint=str(dst))))
    reloaded.init_weights()
    reloaded.eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        for a, b in zip(model(x), reloaded(x)):
            assert torch.equal(a, b)


def test_vim_detected_from_training_args(tmp_path):
    sd = make_official_state_dict(fmt='vim', seed=3)
    args = argparse.Namespace(
        model='vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok')
    torch.save(dict(model=sd, model_ema=None, args=args), tmp_path / 'vim.pth')
    m = backbone()
    assert load_pretrained_backbone(m, str(tmp_path / 'vim.pth'))['format'] == 'vim'
    assert_features(m, sd, 'vim')


def test_vim_keeps_middle_cls_as_register(tmp_path):
    src = tmp_path / 'vim.pth'
    _, ema = official_checkpoint(src, 'vim')
    model = backbone(num_registers=1)
    load_pretrained_backbone(model, str(src), ckpt_format='vim')
    assert_features(model, ema, 'vim', keep=True, hw=(64, 64))


@pytest.mark.parametrize('keep', [False, True])
def test_reg_round_trip(tmp_path, keep):
    src = tmp_path / 'reg.pth'
    _, ema = official_checkpoint(src, 'reg', registers=3, rms_norm=True)
    model = backbone(src, num_registers=3 if keep else 0, norm_cfg=dict(type='RMSNorm'))
    assert_features(model, ema, 'reg', keep=keep, hw=(64, 64) if keep else (80, 112))
    if keep:
        torch.testing.assert_close(model.cls_token, ema['cls_token'])


def test_ema_choice_and_raw_weights(tmp_path):
    src = tmp_path / 'o.pth'
    raw, ema = official_checkpoint(src)
    m = backbone()
    assert load_pretrained_backbone(m, str(src))['entry'] == 'model_ema'
    assert_features(m, ema, 'shufflemamba')
    assert load_pretrained_backbone(m, str(src), use_ema=False)['entry'] == 'model'
    assert_features(m, raw, 'shufflemamba')
    no_ema = tmp_path / 'no_ema.pth'
    official_checkpoint(no_ema, ema=False)
    assert load_pretrained_backbone(m, str(no_ema))['entry'] == 'model'
    with pytest.raises(CheckpointError, match='no EMA weights'):
        load_pretrained_backbone(m, str(no_ema), use_ema=True)


def test_bare_and_mmengine_state_dicts(tmp_path):
    raw = make_official_state_dict(seed=5)
    torch.save(raw, tmp_path / 'bare.pth')
    m = backbone(tmp_path / 'bare.pth')
    assert_features(m, raw, 'shufflemamba')
    # A whole segmentor saved by MMEngine: backbone.* keys plus heads.
    ours = {f'backbone.{k}': v for k, v in m.state_dict().items()}
    ours['decode_head.conv_seg.weight'] = torch.zeros(3, 3)
    torch.save(dict(meta=dict(iter=4), state_dict=ours), tmp_path / 'mmengine.pth')
    m2 = backbone(tmp_path / 'mmengine.pth')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(m(x), m2(x)))


def test_detect_format():
    assert detect_format(make_official_state_dict(fmt='reg')) == 'reg'
    assert detect_format(make_official_state_dict()) == 'shufflemamba'
    assert detect_format(backbone().state_dict()) == 'mmplugin'


@pytest.mark.parametrize('src_grid,dst_grid', [((14, 14), (32, 32)), ((8, 8), (14, 14))])
def test_pos_embed_resize_on_conversion(src_grid, dst_grid):
    sd = make_official_state_dict(grid=src_grid[0])
    out, summary = convert_to_backbone(sd, patch_resolution=dst_grid)
    patch_pos = sd['pos_embed'][:, 1:]
    direct = torch.nn.functional.interpolate(
        patch_pos.reshape(1, *src_grid, -1).permute(0, 3, 1, 2), size=dst_grid,
        mode='bicubic', align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(out['pos_embed'], direct)
    assert summary['grid'] == src_grid and summary['target_grid'] == dst_grid


def test_224_checkpoint_into_512_backbone(tmp_path):
    src = tmp_path / 'o.pth'
    official_checkpoint(src, grid=14)
    m = backbone(src, img_size=512)  # 14x14 -> 32x32 grid at load
    assert m.pos_embed.shape == (1, 32 * 32, 32)


# ------------------------------------------------------------------------ bad inputs
def test_wrong_arch_lists_keys_and_compares(tmp_path):
    src = tmp_path / 'b.pth'
    official_checkpoint(src, depth=3, dim=32)
    with pytest.raises(CheckpointError) as e:
        backbone(src, arch=dict(embed_dims=48, num_layers=2), out_indices=(0, 1))
    msg = str(e.value)
    assert str(src) in msg
    assert 'unexpected in checkpoint' in msg and 'layers.2.' in msg
    assert 'shape mismatch' in msg
    assert 'checkpoint: depth 3, width 32' in msg and 'model:      depth 2, width 48' in msg


def test_missing_and_unexpected_keys(tmp_path):
    sd = make_official_state_dict()
    del sd['layers.1.mixer.D_b']
    sd['layers.0.mixer.extra'] = torch.zeros(1)
    torch.save(dict(model=sd, model_ema=None), tmp_path / 'x.pth')
    with pytest.raises(CheckpointError) as e:
        backbone(tmp_path / 'x.pth')
    msg = str(e.value)
    assert "missing in checkpoint (1): ['layers.1.mixer.D_b']" in msg
    assert "unexpected in checkpoint (1): ['layers.0.mixer.extra']" in msg


def test_norm_mismatch_suggests_rmsnorm(tmp_path):
    src = tmp_path / 'reg.pth'
    official_checkpoint(src, 'reg', rms_norm=True)
    with pytest.raises(CheckpointError, match='RMSNorm'):
        backbone(src)


def test_register_count_mismatch(tmp_path):
    src = tmp_path / 'reg.pth'
    official_checkpoint(src, 'reg', registers=3, rms_norm=True)
    with pytest.raises(CheckpointError, match='num_registers=3 to keep'):
        backbone(src, num_registers=2, norm_cfg=dict(type='RMSNorm'))


def test_not_a_checkpoint_truncated_and_missing(tmp_path):
    txt = tmp_path / 'notes.pth'
    txt.write_text('hello')
    with pytest.raises(CheckpointError, match='notes.pth is not a readable PyTorch'):
        backbone(txt)
    src = tmp_path / 'full.pth'
    official_checkpoint(src)
    data = src.read_bytes()
    trunc = tmp_path / 'trunc.pth'
    trunc.write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='trunc.pth is not a readable'):
        backbone(trunc)
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        backbone(tmp_path / 'nowhere.pth')
    torch.save(dict(state_dict={'foo.weight': torch.zeros(2)}), tmp_path / 'other.pth')
    with pytest.raises(CheckpointError, match='none of the expected'):
        backbone(tmp_path / 'other.pth')
    torch.save(dict(epoch=3), tmp_path / 'noweights.pth')
    with pytest.raises(CheckpointError, match='has no model weights'):
        backbone(tmp_path / 'noweights.pth')


def test_convert_no_ema_and_grid(tmp_path, capsys):
    from tools_convert import convert_main
    src = tmp_path / 'o.pth'
    raw, _ = official_checkpoint(src, grid=4)
    dst = tmp_path / 'c.pth'
    summary = convert_main([str(src), str(dst), '--no-ema', '--img-size', '128'])
    printed = capsys.readouterr().out
    assert 'weights entry: model' in printed and 'format detected: shufflemamba' in printed
    assert summary['target_grid'] == (8, 8)
    saved = torch.load(dst, weights_only=True)
    assert saved['state_dict']['pos_embed'].shape == (1, 64, 32)
    torch.testing.assert_close(saved['state_dict']['layers.0.mixer.D'],
                               raw['layers.0.mixer.D'])
