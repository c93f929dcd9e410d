import argparse
import os.path as osp

import numpy as np
import pytest
import torch

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.checkpoint import (CheckpointError, convert_to_backbone,
                                              detect_format, load_pretrained_backbone,
                                              select_state_dict)

from helpers.official_reference import make_official_state_dict, official_features

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


# Model names as the official training scripts store them in ``args.model``.
MODEL_NAMES = {
    'shufflemamba': 'mambar_base_patch16_224',
    'vim': 'vim_small_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2',
    'reg': 'mambar_base_patch16_224',  # models_reg.py reuses the name
}


def official_checkpoint(path, fmt='shufflemamba', ema=True, **kw):
    model = make_official_state_dict(fmt=fmt, seed=1, **kw)
    model_ema = make_official_state_dict(fmt=fmt, seed=2, **kw) if ema else None
    ckpt = dict(model=model, model_ema=model_ema, optimizer=dict(state={}, param_groups=[]),
                lr_scheduler=dict(last_epoch=3), epoch=299, scaler=dict(scale=65536.0),
                args=argparse.Namespace(model=MODEL_NAMES[fmt], lr=1e-3, shuffle_rate=0.5))
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
    raw, _ = official_checkpoint(src, fmt)
    cfg = dict(arch=dict(embed_dims=32, num_layers=3), img_size=64, out_indices=(0, 1, 2),
               out_type=out_type,
               init_cfg=dict(type='Pretrained', checkpoint=str(src), ckpt_format=fmt))
    model = ShuffleMamba(**cfg)
    model.init_weights()
    model.eval()
    assert_features(model, raw, fmt, out_type=out_type)  # raw weights by default

    from helpers.tools_convert import convert_main
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


def test_overlapping_patch_models_are_refused(tmp_path):
    """Vim's stride-8 "+" models embed overlapping patches: their file names the model,
    and the weights (a 27 x 27 grid at 224 px) would be squeezed onto this backbone's
    non-overlapping patches, so every way in refuses them."""
    from mmengine.runner.checkpoint import load_checkpoint

    from helpers.tools_convert import convert_main
    from mmplugin_shufflemamba.checkpoint.safe_load import enable_mmengine_checkpoints
    enable_mmengine_checkpoints()  # Namespace args: the tools and configs opt in
    sd = make_official_state_dict(fmt='vim', seed=3)
    name = ('vim_small_patch16_stride8_224_bimambav2_final_pool_mean_abs_pos_embed_'
            'with_midclstok_div2')
    path = tmp_path / 'vim_plus.pth'
    torch.save(dict(model=sd, model_ema=None, args=argparse.Namespace(model=name)), path)
    words = (r"args\.model='vim_small_patch16_stride8_.*' has overlapping patches \(patch 16, "
             r'stride 8: Vim\'s "\+" models\), and this backbone embeds non-overlapping')
    with pytest.raises(CheckpointError, match=words):
        backbone(path)
    with pytest.raises(CheckpointError, match=words):
        load_checkpoint(backbone(), str(path))  # MMEngine's loader, through the pre-hook
    with pytest.raises(CheckpointError, match=words):
        convert_main([str(path), str(tmp_path / 'out.pth')])
    import timm
    classifier = timm.create_model('shufflemamba_m_patch16_224', embed_dims=32, num_layers=3,
                                   img_size=64, num_classes=0, kernel='torch')
    with pytest.raises(CheckpointError, match=words):  # the timm classifiers' loader
        classifier.load_pretrained(str(path))
    ok = name.replace('_stride8', '')  # stride = patch size: the backbone's own
    torch.save(dict(model=sd, model_ema=None, args=argparse.Namespace(model=ok)), path)
    assert load_pretrained_backbone(backbone(), str(path))['format'] == 'vim'


def test_vim_keeps_middle_cls_as_register(tmp_path):
    src = tmp_path / 'vim.pth'
    raw, _ = official_checkpoint(src, 'vim')
    model = backbone(num_registers=1)
    assert load_pretrained_backbone(model, str(src))['format'] == 'vim'  # from args.model
    assert_features(model, raw, 'vim', keep=True, hw=(64, 64))


@pytest.mark.parametrize('keep', [False, True])
def test_reg_round_trip(tmp_path, keep):
    src = tmp_path / 'reg.pth'
    raw, _ = official_checkpoint(src, 'reg', registers=3, rms_norm=True)
    model = backbone(src, num_registers=3 if keep else 0, norm_cfg=dict(type='RMSNorm'))
    assert_features(model, raw, 'reg', keep=keep, hw=(64, 64) if keep else (80, 112))
    if keep:
        torch.testing.assert_close(model.cls_token, raw['cls_token'])


def test_raw_weights_by_default_ema_on_request(tmp_path):
    src = tmp_path / 'o.pth'
    raw, ema = official_checkpoint(src)
    m = backbone()
    # The official downstream code loads checkpoint['model'], the raw weights.
    assert load_pretrained_backbone(m, str(src))['entry'] == 'model'
    assert_features(m, raw, 'shufflemamba')
    assert load_pretrained_backbone(m, str(src), use_ema=True)['entry'] == 'model_ema'
    assert_features(m, ema, 'shufflemamba')
    assert load_pretrained_backbone(m, str(src), use_ema=False)['entry'] == 'model'
    assert_features(m, raw, 'shufflemamba')
    # init_cfg carries the choice
    m2 = backbone(src)
    assert_features(m2, raw, 'shufflemamba')
    m3 = ShuffleMamba(arch=dict(embed_dims=32, num_layers=3), img_size=64,
                      out_indices=(0, 1, 2),
                      init_cfg=dict(type='Pretrained', checkpoint=str(src), use_ema=True))
    m3.init_weights()
    assert_features(m3.eval(), ema, 'shufflemamba')
    no_ema = tmp_path / 'no_ema.pth'
    official_checkpoint(no_ema, ema=False)
    assert load_pretrained_backbone(m, str(no_ema))['entry'] == 'model'
    with pytest.raises(CheckpointError, match='no EMA weights.*trained without --model-ema'):
        load_pretrained_backbone(m, str(no_ema), use_ema=True)


def test_bare_and_mmengine_state_dicts(tmp_path):
    raw = make_official_state_dict(seed=5)
    torch.save(raw, tmp_path / 'bare.pth')
    # A bare official-layout state dict does not say where its cls token sits.
    with pytest.raises(CheckpointError, match="bare.pth: cannot tell where the cls token "
                       r"sits.*ckpt_format='shufflemamba'.*ckpt_format='vim'"):
        backbone(tmp_path / 'bare.pth')
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=3), img_size=64,
                     out_indices=(0, 1, 2),
                     init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'bare.pth'),
                                   ckpt_format='shufflemamba'))
    m.init_weights()
    m.eval()
    assert_features(m, raw, 'shufflemamba')
    with pytest.raises(CheckpointError, match='bare state dict'):
        load_pretrained_backbone(m, str(tmp_path / 'bare.pth'), use_ema=True,
                                 ckpt_format='shufflemamba')
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
    assert detect_format(backbone().state_dict()) == 'mmplugin'
    assert detect_format(backbone(num_registers=2).state_dict(), 'mmplugin') == 'mmplugin'
    official = make_official_state_dict()
    with pytest.raises(CheckpointError, match='cannot tell where the cls token sits'):
        detect_format(official)
    with pytest.raises(CheckpointError, match='cannot tell where the cls token sits'):
        detect_format(official, 'mmplugin')  # MMEngine meta does not place a cls token
    assert detect_format(official, 'shufflemamba') == 'shufflemamba'
    assert detect_format(official, 'videomamba') == 'videomamba'
    assert detect_format(official, 'vim') == 'vim'
    with pytest.raises(CheckpointError, match='cannot tell where the cls token sits'):
        convert_to_backbone(official)  # a state dict alone is no evidence


@pytest.mark.parametrize('src_grid,dst_grid', [((14, 14), (32, 32)), ((8, 8), (14, 14))])
def test_pos_embed_resize_on_conversion(src_grid, dst_grid):
    sd = make_official_state_dict(grid=src_grid[0])
    out, summary = convert_to_backbone(sd, 'shufflemamba', patch_resolution=dst_grid)
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
    assert 'Fix: build the backbone with arch=dict(embed_dims=32, num_layers=3)' in msg
    assert 'norm_cfg' not in msg  # same norm on both sides: nothing to say about it


def test_wrong_size_names_the_arch_and_norm(tmp_path):
    """A published size is named by its arch; a norm mismatch joins the fix."""
    src = tmp_path / 'b.pth'
    official_checkpoint(src, depth=24, dim=768, grid=2, rms_norm=True)
    with pytest.raises(CheckpointError) as e:
        backbone(src, arch=dict(embed_dims=32, num_layers=2), out_indices=(0, 1))
    msg = str(e.value)
    assert 'norm RMSNorm' in msg and 'norm LN' in msg
    assert ("Fix: build the backbone with arch='b' and norm_cfg=dict(type='RMSNorm', "
            'eps=1e-5)') in msg


def test_adapter_checkpoint_into_the_plain_backbone_says_so(tmp_path):
    from mmplugin_shufflemamba import ShuffleMambaAdapter
    adapter = ShuffleMambaAdapter(arch=dict(embed_dims=32, num_layers=4), img_size=64,
                                  interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
                                  deform_num_heads=4, kernel='torch')
    path = tmp_path / 'detector.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in adapter.state_dict().items()}),
               path)
    with pytest.raises(CheckpointError, match='the file holds a ShuffleMambaAdapter'):
        backbone(path, arch=dict(embed_dims=32, num_layers=4), out_indices=(3, ))


def test_an_adapter_file_loads_whole_into_the_adapter(tmp_path):
    """A detector's or segmentor's ShuffleMambaAdapter (backbone.* keys) given as the
    adapter's pretrained weights: its own modules load too, exactly."""
    from mmplugin_shufflemamba import ShuffleMambaAdapter
    cfg = dict(arch=dict(embed_dims=32, num_layers=4), img_size=64,
               interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], deform_num_heads=4,
               kernel='torch')
    src = ShuffleMambaAdapter(**cfg)
    for prm in src.parameters():
        torch.nn.init.normal_(prm, std=0.05)
    path = tmp_path / 'detector.pth'
    torch.save(dict(meta=dict(iter=1), state_dict={
        f'backbone.{k}': v for k, v in src.state_dict().items()}), path)
    dst = ShuffleMambaAdapter(**cfg, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    dst.init_weights()
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith('spm.stem.0')}
    with pytest.raises(CheckpointError) as e:  # part of the adapter: strict, no hint
        load_pretrained_backbone(ShuffleMambaAdapter(**cfg), sd)
    assert 'missing in checkpoint' in str(e.value) and 'spm.stem.0' in str(e.value)
    assert 'the file holds a ShuffleMambaAdapter' not in str(e.value)


def test_missing_and_unexpected_keys(tmp_path):
    sd = make_official_state_dict()
    del sd['layers.1.mixer.D_b']
    sd['layers.0.mixer.extra'] = torch.zeros(1)
    torch.save(dict(model=sd, model_ema=None,
                    args=argparse.Namespace(model=MODEL_NAMES['shufflemamba'])),
               tmp_path / 'x.pth')
    with pytest.raises(CheckpointError) as e:
        backbone(tmp_path / 'x.pth')
    msg = str(e.value)
    assert "missing in checkpoint (1): ['layers.1.mixer.D_b']" in msg
    assert "unexpected in checkpoint (1): ['layers.0.mixer.extra']" in msg


def test_norm_mismatch_names_the_norm_cfg_to_set(tmp_path):
    src = tmp_path / 'reg.pth'
    official_checkpoint(src, 'reg', rms_norm=True)
    with pytest.raises(CheckpointError) as e:
        backbone(src)  # LayerNorm backbone, RMSNorm checkpoint (no norm biases)
    assert ("norm mismatch: the checkpoint was trained with RMSNorm (norm weights only, no "
            "norm biases) but the backbone was built with LayerNorm: set "
            "norm_cfg=dict(type='RMSNorm', eps=1e-5)") in str(e.value)
    src_ln = tmp_path / 'ln.pth'
    official_checkpoint(src_ln)
    with pytest.raises(CheckpointError) as e:
        backbone(src_ln, norm_cfg=dict(type='RMSNorm'))
    assert ("trained with LayerNorm (norm weights and biases) but the backbone was built "
            "with RMSNorm: set norm_cfg=dict(type='LN', eps=1e-5)") in str(e.value)
    assert 'patch 16, norm RMSNorm, 0 register(s)' in str(e.value)
    with pytest.raises(CheckpointError) as e:
        backbone(src_ln, norm_cfg=dict(type='RMSNorm'), with_cls_token=True)
    assert 'patch 16, norm RMSNorm, cls token first' in str(e.value)  # the model's tokens


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
    with pytest.raises(CheckpointError,
                       match='none of the expected.*use a ShuffleMamba / Mamba-Reg / Vim'):
        backbone(tmp_path / 'other.pth')
    torch.save(dict(epoch=3), tmp_path / 'noweights.pth')
    with pytest.raises(CheckpointError, match='has no model weights'):
        backbone(tmp_path / 'noweights.pth')


def test_convert_no_ema_and_grid(tmp_path, capsys):
    from helpers.tools_convert import convert_main
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
    with pytest.raises(SystemExit, match='--img-size 50 is not a multiple of the patch size '
                       '16 .*--img-size 48'):
        convert_main([str(src), str(tmp_path / 'd.pth'), '--no-ema', '--img-size', '50'])
    assert not (tmp_path / 'd.pth').exists()


def test_converting_a_whole_models_file_says_what_it_left_out(tmp_path, capsys):
    """A segmentor / detector file: its backbone is converted, and the summary (printed
    and in the file's meta) names the rest of the model it left out, not 'dropped: []'
    alone."""
    from helpers.tools_convert import convert_main
    m = backbone()
    ours = {f'module.backbone.{k}': v for k, v in m.state_dict().items()}
    heads = {'module.decode_head.conv_seg.weight': torch.zeros(3, 3),
             'module.decode_head.conv_seg.bias': torch.zeros(3),
             'module.auxiliary_head.conv_seg.weight': torch.zeros(3, 3)}
    torch.save(dict(meta=dict(iter=4), state_dict=dict(ours, **heads)), tmp_path / 'seg.pth')
    summary = convert_main([str(tmp_path / 'seg.pth'), str(tmp_path / 'bb.pth')])
    printed = capsys.readouterr().out
    assert 'left out (not the backbone): 3 keys, in decode_head (2), auxiliary_head (1)' \
        in printed, printed
    assert sorted(summary['outside_backbone']) == sorted(k[len('module.'):] for k in heads)
    meta = torch.load(tmp_path / 'bb.pth', weights_only=True)['meta']
    assert meta['outside_backbone'] == {'decode_head': 2, 'auxiliary_head': 1}
    assert meta['dropped'] == []
    saved = torch.load(tmp_path / 'bb.pth', weights_only=True)['state_dict']
    assert set(saved) == set(m.state_dict())
    # an ImageNet file: nothing outside the backbone
    official_checkpoint(tmp_path / 'o.pth')
    summary = convert_main([str(tmp_path / 'o.pth'), str(tmp_path / 'c.pth')])
    assert summary['outside_backbone'] == [] and 'left out' not in capsys.readouterr().out


# ------------------------------------------------------------ evidence of the format
@pytest.mark.parametrize('name,fmt', [
    ('mambar_middle_patch16_224', 'shufflemamba'),
    ('mambar_large_patch16_224_40', 'shufflemamba'),
    ('videomamba_small', 'videomamba'),
    (MODEL_NAMES['vim'], 'vim'),
])
def test_cls_position_from_official_model_name(tmp_path, name, fmt):
    layout = 'shufflemamba' if fmt == 'videomamba' else fmt
    sd = make_official_state_dict(fmt=layout, seed=4)
    path = tmp_path / 'o.pth'
    torch.save(dict(model=sd, model_ema=None, epoch=3, args=argparse.Namespace(model=name)),
               path)
    m = backbone()
    assert load_pretrained_backbone(m, str(path))['format'] == fmt
    if fmt == 'videomamba':
        # VideoMamba's mixer is out_proj(y_f + y_b): the averaging reference with a
        # doubled out_proj computes the same function.
        sd = {k: v * 2 if k.endswith('mixer.out_proj.weight') else v for k, v in sd.items()}
    assert_features(m, sd, layout)


def test_videomamba_file_without_a_model_name_loads_with_its_format(tmp_path):
    """VideoMamba's image checkpoints hold only 'model': the cls-first layout alone
    cannot tell ShuffleMamba (averaged directions) from VideoMamba (summed ones)."""
    sd = make_official_state_dict(fmt='shufflemamba', seed=5)
    path = str(tmp_path / 'videomamba_s16_in1k_res224.pth')
    torch.save(dict(model=sd), path)
    with pytest.raises(CheckpointError, match="ckpt_format='videomamba'"):
        load_pretrained_backbone(backbone(), path)
    m = backbone()
    assert load_pretrained_backbone(m, path, ckpt_format='videomamba')['format'] == \
        'videomamba'
    doubled = {k: v * 2 if k.endswith('mixer.out_proj.weight') else v
               for k, v in sd.items()}
    assert_features(m, doubled, 'shufflemamba')


@pytest.mark.parametrize('args', [None, argparse.Namespace(model='my_own_vim_variant'),
                                  argparse.Namespace(lr=1e-3)])
def test_official_layout_without_evidence_is_an_error(tmp_path, args):
    sd = make_official_state_dict(seed=4)
    ckpt = dict(model=sd, model_ema=None, epoch=3)
    if args is not None:
        ckpt['args'] = args
    torch.save(ckpt, tmp_path / 'o.pth')
    with pytest.raises(CheckpointError, match="cannot tell where the cls token sits.*"
                       "ckpt_format='shufflemamba'") as e:
        backbone(tmp_path / 'o.pth')
    assert 'o.pth' in str(e.value) and 'evidence:' in str(e.value)
    m = backbone()
    assert load_pretrained_backbone(m, str(tmp_path / 'o.pth'),
                                    ckpt_format='vim')['format'] == 'vim'
    assert_features(m, sd, 'vim')


def test_a_format_given_against_the_files_own_word_is_warned_about(tmp_path):
    from helpers.logs import captured_log
    sd = make_official_state_dict(seed=4)
    torch.save(dict(model=sd, model_ema=None, args=argparse.Namespace(
        model='mambar_base_patch16_224')), tmp_path / 'o.pth')
    with captured_log() as lines:
        m = backbone()
        assert load_pretrained_backbone(m, str(tmp_path / 'o.pth'),
                                        ckpt_format='vim')['format'] == 'vim'
    assert any("ckpt_format='vim' overrides what" in line and
               "args.model='mambar_base_patch16_224'" in line and
               "format 'shufflemamba'" in line for line in lines), lines
    assert_features(m, sd, 'vim')  # the given format is what loads
    with captured_log() as lines:
        load_pretrained_backbone(backbone(), str(tmp_path / 'o.pth'),
                                 ckpt_format='shufflemamba')
    assert not any('overrides' in line for line in lines)


def test_converted_files_carry_their_marker(tmp_path):
    from helpers.tools_convert import convert_main
    src = tmp_path / 'bare.pth'
    sd = make_official_state_dict(fmt='vim', seed=6)
    torch.save(sd, src)
    with pytest.raises(CheckpointError, match='cannot tell where the cls token sits'):
        convert_main([str(src), str(tmp_path / 'x.pth')])
    dst = tmp_path / 'vim_kept.pth'
    convert_main([str(src), str(dst), '--format', 'vim', '--num-registers', '1'])
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['shufflemamba_format'] == 'mmplugin'
    assert saved['meta']['weights'] == 'raw' and saved['meta']['source_format'] == 'vim'
    m = backbone(dst, num_registers=1)
    assert_features(m, sd, 'vim', keep=True, hw=(64, 64))
    with pytest.raises(CheckpointError, match='no EMA weights'):
        load_pretrained_backbone(m, str(dst), use_ema=True)


def test_converted_register_file_keeps_its_neck_when_asked(tmp_path):
    """A backbone with cls_reduce > 1 needs Mamba-Reg's neck: --keep-neck keeps it; a
    file converted without it is refused with that fix."""
    from helpers.tools_convert import convert_main
    src = tmp_path / 'reg.pth'
    model, _ = official_checkpoint(src, 'reg', rms_norm=True)
    reg = dict(num_registers=3, cls_reduce=4, norm_cfg=dict(type='RMSNorm'))
    convert_main([str(src), str(tmp_path / 'no_neck.pth'), '--num-registers', '3'])
    with pytest.raises(CheckpointError, match='no classification neck .*--keep-neck'):
        backbone(tmp_path / 'no_neck.pth', **reg)
    convert_main([str(src), str(tmp_path / 'neck.pth'), '--num-registers', '3',
                  '--keep-neck'])
    m = backbone(tmp_path / 'neck.pth', **reg)
    assert torch.equal(m.neck.weight, model['neck.weight'])
    assert torch.equal(m.norm_neck.weight, model['norm_neck.weight'])


def test_converted_ema_weights(tmp_path):
    from helpers.tools_convert import convert_main
    src = tmp_path / 'o.pth'
    raw, ema = official_checkpoint(src)
    dst = tmp_path / 'ema.pth'
    summary = convert_main([str(src), str(dst), '--use-ema'])
    assert summary['format'] == 'shufflemamba'
    assert torch.load(dst, weights_only=True)['meta']['weights'] == 'ema'
    m = backbone()
    assert load_pretrained_backbone(m, str(dst), use_ema=True)['entry'] == 'state_dict'
    assert_features(m, ema, 'shufflemamba')


# ------------------------------------------------------------------ MMEngine and DDP
class TinySegmentor(torch.nn.Module):

    def __init__(self):
        super().__init__()
        self.backbone = backbone()
        self.decode_head = torch.nn.Conv2d(32, 4, 1)


def mmengine_checkpoint(path, ema_hook):
    """A checkpoint as MMEngine's runner writes it, with or without ``EMAHook``."""
    from types import SimpleNamespace

    from mmengine.hooks import EMAHook
    model = TinySegmentor()
    hook = EMAHook(momentum=0.5)
    if ema_hook:
        hook.before_run(SimpleNamespace(model=model))
        hook.ema_model.update_parameters(model)  # the first update copies the weights
    with torch.no_grad():  # a training step moves the raw weights away from the EMA
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if ema_hook:
        hook.ema_model.update_parameters(model)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ({k[len('module.'):]: v.clone() for k, v in hook.ema_model.state_dict().items()
            if k.startswith('module.')} if ema_hook else None)
    ckpt = dict(meta=dict(epoch=0, iter=8, mmengine_version='0.10.7'),
                state_dict=dict(model.state_dict()), message_hub=dict(log_scalars={}),
                optimizer=dict(state={}, param_groups=[]))
    if ema_hook:
        hook.before_save_checkpoint(None, ckpt)  # swaps: state_dict <- EMA weights
    torch.save(ckpt, path)
    return raw, ema


def backbone_part(sd):
    return {k[len('backbone.'):]: v for k, v in sd.items() if k.startswith('backbone.')}


def test_mmengine_ema_hook_checkpoint_raw_and_ema(tmp_path):
    path = tmp_path / 'iter_8.pth'
    raw, ema = mmengine_checkpoint(path, ema_hook=True)
    saved = torch.load(path, weights_only=False)
    # What EMAHook wrote: EMA weights in state_dict, raw ones in ema_state_dict.
    torch.testing.assert_close(saved['state_dict']['backbone.pos_embed'],
                               ema['backbone.pos_embed'])
    assert not torch.equal(raw['backbone.pos_embed'], ema['backbone.pos_embed'])
    sd, entry = select_state_dict(saved)
    assert entry == 'ema_state_dict' and set(sd) == set(raw)
    for k in raw:
        torch.testing.assert_close(sd[k], raw[k])
    sd, entry = select_state_dict(saved, use_ema=True)
    assert entry == 'state_dict'
    for k in ema:
        torch.testing.assert_close(sd[k], ema[k])
    m = backbone()
    summary = load_pretrained_backbone(m, str(path), prefix='backbone.')
    assert (summary['entry'], summary['format']) == ('ema_state_dict', 'mmplugin')
    for k, v in backbone_part(raw).items():
        torch.testing.assert_close(m.state_dict()[k], v)
    load_pretrained_backbone(m, str(path), use_ema=True)  # backbone.* picked out itself
    for k, v in backbone_part(ema).items():
        torch.testing.assert_close(m.state_dict()[k], v)


def test_mmengine_checkpoint_without_ema(tmp_path):
    path = tmp_path / 'iter_8.pth'
    raw, _ = mmengine_checkpoint(path, ema_hook=False)
    m = backbone(path)
    for k, v in backbone_part(raw).items():
        torch.testing.assert_close(m.state_dict()[k], v)
    with pytest.raises(CheckpointError, match='no EMA weights.*without EMAHook'):
        load_pretrained_backbone(m, str(path), use_ema=True)


def test_whole_ddp_segmentor_state_dict_saved_by_hand(tmp_path):
    seg = TinySegmentor()
    torch.save({f'module.{k}': v for k, v in seg.state_dict().items()}, tmp_path / 'ddp.pth')
    m = backbone(tmp_path / 'ddp.pth')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(m(x), seg.backbone.eval()(x)))
    # also with registers (cls_token + pos_embed_cls in this project's layout)
    seg_r = TinySegmentor()
    seg_r.backbone = backbone(num_registers=2)
    torch.save({f'module.{k}': v for k, v in seg_r.state_dict().items()},
               tmp_path / 'ddp_r.pth')
    m = backbone(tmp_path / 'ddp_r.pth', num_registers=2)
    torch.testing.assert_close(m.cls_token, seg_r.backbone.cls_token)


@pytest.mark.parametrize('path', ['path/to/shufflemamba_b_in1k.pth', '<checkpoint>',
                                  'your_model_path', '/data/path/to/x.pth'])
def test_placeholder_checkpoint_is_refused(path):
    with pytest.raises(CheckpointError, match='placeholder, not a file.*init_cfg.checkpoint'):
        backbone(path)
    with pytest.raises(CheckpointError, match="has no 'checkpoint'"):
        load_pretrained_backbone(backbone(), None)


def test_rectangular_backbone_reloads_its_own_weights(tmp_path):
    """This project's layout with the model's own (non-square) grid is read as that
    grid; a count that is neither that grid nor a square is refused, naming both."""
    arch = dict(embed_dims=32, num_layers=2)
    src = ShuffleMamba(arch=arch, img_size=(64, 128))
    path = str(tmp_path / 'rect.pth')
    torch.save(src.state_dict(), path)
    same = ShuffleMamba(arch=arch, img_size=(64, 128),
                        init_cfg=dict(type='Pretrained', checkpoint=path))
    same.init_weights()
    for key, value in src.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    other = ShuffleMamba(arch=arch, img_size=64, init_cfg=dict(type='Pretrained',
                                                               checkpoint=path))
    with pytest.raises(CheckpointError, match="32 patch positions: not a square grid nor "
                       "the model's 4x4 grid.*img_size the checkpoint was saved with"):
        other.init_weights()


def test_convert_tool_reports_errors_without_a_traceback(tmp_path):
    import subprocess
    import sys
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'convert_checkpoint.py'),
                          str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth')],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith(
        'tools/convert_checkpoint.py: checkpoint file not found')
    assert 'Traceback' not in run.stderr


@pytest.mark.parametrize('case', ['no_cls_token', 'no_cls_position'])
def test_cls_token_and_pos_embed_that_disagree_are_named(tmp_path, case):
    """A cls token without its position in pos_embed, or a cls position without a
    cls_token, is named as such, not as a wrong img_size."""
    sd = make_official_state_dict(depth=3, dim=32, grid=4)
    if case == 'no_cls_token':
        del sd['cls_token']  # pos_embed keeps 17 positions
        path = tmp_path / 'state_dict.pth'
        torch.save(sd, path)
        match = "16 of them make a square grid.*no 'cls_token'"
    else:
        sd['pos_embed'] = sd['pos_embed'][:, 1:]  # the 4x4 grid only
        path = tmp_path / 'checkpoint.pth'
        torch.save(dict(model=sd, args=argparse.Namespace(model=MODEL_NAMES['shufflemamba'])),
                   path)
        match = 'All 16 positions of pos_embed make a square grid.*no position for the cls'
    with pytest.raises(CheckpointError, match=match):
        backbone(path)


def test_two_different_weight_entries_ask_which(tmp_path):
    """'model' and 'state_dict' with different weights: an error naming both; identical
    copies load."""
    a = make_official_state_dict(seed=1)
    b = make_official_state_dict(seed=2)
    args = argparse.Namespace(model=MODEL_NAMES['shufflemamba'])
    torch.save(dict(model=a, state_dict=b, args=args), tmp_path / 'two.pth')
    with pytest.raises(CheckpointError, match="two different sets of weights, 'model' and "
                       "'state_dict'.*save the one you mean"):
        backbone(tmp_path / 'two.pth')
    torch.save(dict(model=a, state_dict=dict(a), args=args), tmp_path / 'copies.pth')
    assert_features(backbone(tmp_path / 'copies.pth'), a, 'shufflemamba')


def test_identical_entries_with_nan_are_one_reading_and_ema_reads_ema(tmp_path):
    """Copies holding NaN are the same weights (refused then as non-finite, not as two
    readings); use_ema=True reads the EMA entry whatever the other entries hold."""
    a = make_official_state_dict(seed=1)
    a['layers.0.mixer.D'][0] = float('nan')
    args = argparse.Namespace(model=MODEL_NAMES['shufflemamba'])
    torch.save(dict(model=a, state_dict={k: v.clone() for k, v in a.items()}, args=args),
               tmp_path / 'nan.pth')
    with pytest.raises(CheckpointError, match='NaN'):
        backbone(tmp_path / 'nan.pth')
    ema = make_official_state_dict(seed=3)
    torch.save(dict(model=make_official_state_dict(seed=1), model_ema=ema,
                    state_dict=make_official_state_dict(seed=2), args=args),
               tmp_path / 'ema.pth')
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=3), img_size=64, out_indices=(0, 1, 2),
                     init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'ema.pth'),
                                   use_ema=True))
    m.init_weights()
    assert_features(m.eval(), ema, 'shufflemamba')


def load_tiny(path, **init_kw):
    """A tiny ShuffleMamba initialised from ``path`` through init_cfg (Pretrained)."""
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32, init_cfg=dict(
        type='Pretrained', checkpoint=str(path), **init_kw))
    m.init_weights()
    return m


def test_non_tensor_values_stop_load_backbone_state_before_anything_loads():
    from mmplugin_shufflemamba.checkpoint import load_backbone_state
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32, kernel='torch')
    before = {k: v.clone() for k, v in m.state_dict().items()}
    sd = {k: torch.randn_like(v) for k, v in before.items()}
    sd['layers.1.mixer.D'] = [1.0] * 64
    with pytest.raises(CheckpointError, match=r'<mem>: values that are not tensors: '
                       r'layers.1.mixer.D \(list\)'):
        load_backbone_state(m, sd, 'model', 'auto', '<mem>')
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


def test_a_state_dict_in_memory_is_named_as_such_in_messages():
    from mmplugin_shufflemamba.checkpoint import load_pretrained_backbone
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32, kernel='torch')
    sd = dict(m.state_dict())
    assert load_pretrained_backbone(m, sd)['loaded'] == len(sd)
    sd['layers.0.mixer.D'] = sd['layers.0.mixer.D'][:3]
    with pytest.raises(CheckpointError,
                       match='^the given state dict: the checkpoint does not match'):
        load_pretrained_backbone(m, sd)


def test_bad_reader_options_and_files_are_named(tmp_path, monkeypatch):
    """Options of the wrong type are refused (a string 'no' was read as True), a
    directory is not 'not found', values that are not tensors are named, and the safe
    loader's refusal says which global it refused."""
    import os
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32)
    sd = m.state_dict()
    load = load_tiny

    good = tmp_path / 'good.pth'
    torch.save({'model': sd, 'model_ema': sd}, good)
    for kw, exc, msg in [(dict(use_ema='no'), TypeError, "use_ema must be True or False"),
                         (dict(allow_nonfinite='False'), TypeError,
                          'allow_nonfinite must be True or False'),
                         (dict(prefix=5), TypeError, 'prefix must be a key prefix'),
                         (dict(map_location='gpu'), ValueError,
                          "map_location='gpu' is not a device")]:
        with pytest.raises(exc, match=msg):
            load(good, **kw)
    from mmplugin_shufflemamba.checkpoint import read_checkpoint
    with pytest.raises(ValueError, match="map_location='gpu' is not a device"):
        read_checkpoint(str(good), 'gpu')  # the file reader itself, not only the loader
    monkeypatch.setenv('HOME', str(tmp_path))
    assert torch.equal(load('~/good.pth').pos_embed, sd['pos_embed'])  # as MMEngine's
    for uri in (f'file://{good}', f'file://localhost{good}', f'FILE://{good}'):
        assert torch.equal(load(uri).pos_embed, sd['pos_embed']), uri
    with pytest.raises(CheckpointError, match=r"could not fetch nosuch://x.pth: MMEngine's "
                       r'fileio has no backend for nosuch://'):
        load('nosuch://x.pth')
    (tmp_path / 'dir.pth').mkdir()
    with pytest.raises(CheckpointError, match='dir.pth is a directory, not a checkpoint'):
        load(tmp_path / 'dir.pth')
    torch.save(dict(sd, epoch=3), tmp_path / 'extra.pth')
    with pytest.raises(CheckpointError, match=r'the file holds weights but also values that '
                       r'are not tensors \(epoch \(int\)\)'):
        load(tmp_path / 'extra.pth')
    torch.save({'state_dict': sd, 'epoch': 3}, tmp_path / 'noema.pth')
    with pytest.raises(CheckpointError, match='use_ema=True but .*noema.pth has no EMA '
                       'weights'):
        load(tmp_path / 'noema.pth', use_ema=True)
    load(tmp_path / 'noema.pth', use_ema=0, allow_nonfinite=np.bool_(False))  # 0/1 too
    torch.save({'state_dict': dict(sd, note='x'), 'meta': {}}, tmp_path / 'note.pth')
    with pytest.raises(CheckpointError, match=r"entry 'state_dict' holds weights but also "
                       r"values that are not tensors \(note \(str\)\)"):
        load(tmp_path / 'note.pth')

    class Unsafe:
        def __reduce__(self):
            return (os.getcwd, ())

    torch.save({'model': Unsafe()}, tmp_path / 'unsafe.pth')
    with pytest.raises(CheckpointError, match=r'refused by the safe loader .*GLOBAL '
                       r'\S*getcwd'):
        load(tmp_path / 'unsafe.pth')


def test_two_copies_of_the_backbone_ask_which(tmp_path):
    a = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32).state_dict()
    b = {k: v + 1 for k, v in a.items()}
    both = dict({'backbone.' + k: v for k, v in a.items()},
                **{'module.backbone.' + k: v for k, v in b.items()})
    torch.save(both, tmp_path / 'both.pth')
    with pytest.raises(CheckpointError, match=r"holds the backbone more than once: under "
                       r"'backbone.' and under \['module.backbone.'\]; give prefix="):
        load_tiny(tmp_path / 'both.pth')
    m = load_tiny(tmp_path / 'both.pth', prefix='module.backbone.')
    with pytest.raises(CheckpointError, match=r"no keys under prefix 'decode_head.'; it holds "
                       r"the backbone under \['backbone.', 'module.backbone.'\]: give one"):
        load_tiny(tmp_path / 'both.pth', prefix='decode_head')
    assert torch.equal(m.pos_embed, b['pos_embed'])


def test_another_models_backbone_beside_ours_is_not_a_second_copy(tmp_path):
    """A distiller whose teacher is another network (teacher.backbone.* of a ResNet)
    keeps 'backbone.' unambiguous; a second copy of this family (here at the top level)
    is still refused and named."""
    a = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32).state_dict()
    resnet = {'distiller.teacher.backbone.conv1.weight': torch.zeros(8, 3, 7, 7),
              'distiller.teacher.backbone.layer1.0.bn1.weight': torch.ones(8),
              # a ViT has a patch embedding too, but no Mamba mixers
              'vit.patch_embed.proj.weight': torch.zeros(8, 3, 16, 16),
              'vit.blocks.0.attn.qkv.weight': torch.zeros(24, 8)}
    sd = dict({'backbone.' + k: v for k, v in a.items()}, **resnet)
    torch.save({'state_dict': sd, 'meta': {}}, tmp_path / 'kd.pth')
    assert torch.equal(load_tiny(tmp_path / 'kd.pth').pos_embed, a['pos_embed'])
    torch.save(dict(sd, **{k: v + 1 for k, v in a.items()}), tmp_path / 'top.pth')
    with pytest.raises(CheckpointError, match=r"more than once: under 'backbone.' and under "
                       r"\['\(the top level\)'\]; give prefix="):
        load_tiny(tmp_path / 'top.pth')


def test_backbones_nested_under_other_models_ask_for_a_prefix(tmp_path):
    """A semi-supervised / distillation model saves teacher.backbone.* and
    student.backbone.*: the error lists them and names prefix=."""
    a = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32).state_dict()
    sd = dict({'teacher.backbone.' + k: v for k, v in a.items()},
              **{'student.backbone.' + k: v + 1 for k, v in a.items()})
    path = tmp_path / 'ts.pth'
    torch.save({'state_dict': sd, 'meta': {}}, path)
    with pytest.raises(CheckpointError, match=r"holds the backbone under \['student.backbone."
                       r"', 'teacher.backbone.'\], not at the top: give prefix="):
        load_tiny(path)
    assert torch.equal(load_tiny(path, prefix='student.backbone.').pos_embed,
                       a['pos_embed'] + 1)


def test_the_converter_takes_a_prefix_and_names_its_own_options(tmp_path):
    """tools/convert_checkpoint.py converts one of several backbones with --prefix, and
    its messages name its options (--prefix, --use-ema, --format), not the loader's
    argument names."""
    import subprocess
    import sys
    from helpers.tools import ROOT
    from helpers.tools_convert import convert_main
    a = ShuffleMamba(arch=dict(embed_dims=32, num_layers=2), img_size=32).state_dict()
    sd = dict({'teacher.backbone.' + k: v for k, v in a.items()},
              **{'student.backbone.' + k: v + 1 for k, v in a.items()})
    path, dst = tmp_path / 'ts.pth', tmp_path / 'student.pth'
    torch.save({'state_dict': sd, 'meta': {}}, path)
    convert_main([str(path), str(dst), '--prefix', 'student.backbone.'])
    saved = torch.load(dst, weights_only=True)['state_dict']
    assert torch.equal(saved['pos_embed'], a['pos_embed'] + 1)
    tool = [sys.executable, osp.join(ROOT, 'tools', 'convert_checkpoint.py')]
    run = subprocess.run(tool + [str(path), str(tmp_path / 'x.pth')], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1 and 'Traceback' not in run.stderr, run.stderr
    assert "give --prefix to choose, e.g. --prefix student.backbone." in run.stderr
    assert 'prefix=' not in run.stderr
    torch.save({'state_dict': {'backbone.' + k: v for k, v in a.items()}}, path)
    run = subprocess.run(tool + [str(path), str(tmp_path / 'x.pth'), '--use-ema'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and '--use-ema but' in run.stderr and \
        '(--no-ema, the default)' in run.stderr, run.stderr
    assert 'use_ema' not in run.stderr
    torch.save(make_official_state_dict(seed=1), path)  # a bare official state dict
    run = subprocess.run(tool + [str(path), str(tmp_path / 'x.pth')], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1 and 'Pass --format shufflemamba (cls first), --format ' \
        "videomamba (VideoMamba's image models" in run.stderr, run.stderr
    assert 'ckpt_format' not in run.stderr and 'init_cfg' not in run.stderr
    official_checkpoint(path)
    run = subprocess.run(tool + [str(path), str(tmp_path / 'x.pth'), '--num-registers', '2'],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and 'asks for --num-registers 2. Use --num-registers 0 to ' \
        'drop it' in run.stderr, run.stderr


def test_a_model_reading_its_cls_feature_without_the_files_neck_is_refused(tmp_path):
    """A Reg file's neck reduces its registers: a model returning the classification
    feature without it (cls_reduce=1) would not return the file's feature. Dense
    models drop the neck as before."""
    src = tmp_path / 'reg.pth'
    official_checkpoint(src, 'reg', rms_norm=True)
    reg = dict(num_registers=3, norm_cfg=dict(type='RMSNorm'))
    with pytest.raises(CheckpointError) as e:
        backbone(src, out_cls=True, **reg)
    assert 'classification neck (neck / norm_neck, cls_reduce=4)' in str(e.value)
    assert 'build it with cls_reduce=4, or without out_cls' in str(e.value)
    assert backbone(src, out_cls=True, cls_reduce=4, **reg).neck.weight.shape == (8, 32)
    assert not hasattr(backbone(src, **reg), 'neck')  # dense features: dropped
    # tokens that do not fit the file are named first (the neck is not the fix there)
    with pytest.raises(CheckpointError, match='num_registers=3') as e:
        backbone(src, out_cls=True, norm_cfg=dict(type='RMSNorm'), with_cls_token=True)
    assert 'cls_reduce' not in str(e.value)


@pytest.mark.parametrize('arg,fix', [
    (dict(d_state=8), 'd_state=16'), (dict(expand=1), 'expand=2'),
    (dict(d_conv=3), 'd_conv=4'), (dict(patch_size=8, img_size=32), 'patch_size=16'),
    (dict(num_registers=3, cls_reduce=2, norm_cfg=dict(type='RMSNorm')), 'cls_reduce=4')])
def test_a_mixer_or_patch_mismatch_names_the_argument_to_set(tmp_path, arg, fix):
    """The checkpoint's shapes give the backbone arguments it was trained with."""
    src = tmp_path / 'ckpt.pth'
    fmt = 'reg' if 'cls_reduce' in arg else 'shufflemamba'
    official_checkpoint(src, fmt, rms_norm=fmt == 'reg')
    with pytest.raises(CheckpointError) as e:
        backbone(src, out_cls='cls_reduce' in arg, **arg)
    assert f'Fix: build the backbone with {fix} (what the checkpoint was trained' \
        in str(e.value)


def test_files_that_are_not_checkpoints_say_so(tmp_path):
    """A tensor saved alone is named for what it holds; a plain pickle or a text file
    is not a PyTorch checkpoint (the unsafe loader cannot read it either), not a file
    the safe loader refused."""
    import pickle
    torch.save(torch.randn(3), tmp_path / 'tensor.pth')
    with pytest.raises(CheckpointError,
                       match='tensor.pth holds a Tensor, not a checkpoint dict'):
        backbone(tmp_path / 'tensor.pth')
    with open(tmp_path / 'plain.pkl', 'wb') as f:
        pickle.dump(dict(model={'w': 1}), f)
    (tmp_path / 'notes.pth').write_text('not a checkpoint\n')
    for name in ('plain.pkl', 'notes.pth'):
        with pytest.raises(CheckpointError) as e:
            backbone(tmp_path / name)
        assert f'{name} is not a readable PyTorch checkpoint' in str(e.value)
        assert 'Unsupported operand' in str(e.value) and 'safe loader' not in str(e.value)
    # a checkpoint torch.save wrote with a protocol the safe loader does not read
    official_checkpoint(tmp_path / 'ok.pth')
    torch.save(torch.load(tmp_path / 'ok.pth', weights_only=False), tmp_path / 'p4.pth',
               pickle_protocol=4)
    with pytest.raises(CheckpointError, match=r'p4\.pth: refused by the safe loader .*'
                       r'Unsupported operand 149 \(pickle protocol 4, which the safe loader '
                       r'does not read.*weights_only=False'):
        backbone(tmp_path / 'p4.pth')
    # a damaged pickle in a genuine torch zip (protocol 2) is no protocol matter
    import zipfile
    with zipfile.ZipFile(tmp_path / 'ok.pth') as src, \
            zipfile.ZipFile(tmp_path / 'damaged.pth', 'w') as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith('/data.pkl'):
                data = data[:2] + b'\x95' + data[3:]
            dst.writestr(item, data)
    with pytest.raises(CheckpointError) as e:
        backbone(tmp_path / 'damaged.pth')
    assert 'damaged.pth is not a readable PyTorch checkpoint (truncated, corrupted' in \
        str(e.value) and 'protocol' not in str(e.value), str(e.value)
    # a TorchScript archive is named as such
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / 'scripted.pt'))
    with pytest.raises(CheckpointError, match=r'scripted\.pt is a TorchScript archive '
                       r'\(torch\.jit\.save\).*torch\.save\(model\.state_dict\(\), path\)'):
        backbone(tmp_path / 'scripted.pt')


def test_a_missing_relative_path_says_where_it_was_looked_for(tmp_path, monkeypatch):
    """A relative init_cfg.checkpoint is read from the current directory, not from the
    config's folder (as _base_ paths are): the message says which directory."""
    from mmplugin_shufflemamba.checkpoint import CheckpointNotFoundError, read_checkpoint
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError) as e:
        read_checkpoint('weights/b.pth')
    assert str(e.value) == (f'checkpoint file not found: weights/b.pth (a relative path: '
                            f"looked for in the current directory, {tmp_path}, not in a "
                            "config's folder)")
    with pytest.raises(CheckpointNotFoundError, match=r'^checkpoint file not found: /\S+$'):
        read_checkpoint(str(tmp_path / 'b.pth'))
