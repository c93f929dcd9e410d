"""tools/train_timm.py: a DeiT-style timm training loop on CPU (single process and a
2-process torchrun / gloo run) on generated ImageNet-layout data; its checkpoint has the
official ``main_shuffle.py`` layout and loads into the dense backbone (raw and EMA)."""
import argparse
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import pytest
import torch

from mmplugin_shufflemamba.compat import safe_torch_load
from mmplugin_shufflemamba.datasets import generate_synthetic_imagenet

from helpers.tools import load_tool

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TOOL = osp.join(ROOT, 'tools', 'train_timm.py')
MODEL = 'shufflemamba_b_patch16_224'
TINY = dict(embed_dims=32, num_layers=2, patch_size=8, kernel='torch')
OFFICIAL_KEYS = {'model', 'optimizer', 'lr_scheduler', 'epoch', 'model_ema', 'scaler', 'args'}
TOP = re.compile(r'model: top-1 ([0-9.]+) top-5 ([0-9.]+)')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tool_args(data, out, iters):
    return ['--model', MODEL, '--data-path', data, '--output-dir', out, '--input-size', '32',
            '--model-kwargs'] + [f'{k}={v}' for k, v in TINY.items()] + [
        '--max-iters', str(iters), '--epochs', '3', '--warmup-epochs', '1',
        '--batch-size', '8', '--num-workers', '0', '--seed', '0', '--lr', '1e-3',
        '--mixup', '0.8', '--cutmix', '1.0', '--ssr', '0.5', '--clip-grad', '3.0',
        '--model-ema', '--model-ema-decay', '0.9', '--print-freq', '1']


def run(cmd, cwd, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    return log


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('timm_data') / 'imagenet')
    generate_synthetic_imagenet(root, num_train=48, num_val=16, size=(32, 32))
    return root


def tiny_timm_model(state_dict=None):
    import timm
    model = timm.create_model(MODEL, num_classes=4, img_size=32, **TINY)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def test_train_timm_checkpoint_loads_into_backbone(data_root, tmp_path):
    out = str(tmp_path / 'out')
    log = run([sys.executable, TOOL] + tool_args(data_root, out, 6), ROOT)
    m = TOP.search(log)
    assert m, log[-3000:]
    assert 0.0 <= float(m.group(1)) <= 100.0 and 0.0 <= float(m.group(2)) <= 100.0
    assert 'model_ema: top-1' in log and 'Stopped after --max-iters 6' in log, log[-3000:]
    assert 'Epoch [0] [6/6] iter 6' in log, log[-3000:]  # 48 images / 8 = 6 iterations
    with open(osp.join(out, 'log.txt')) as f:
        lines = f.read().splitlines()
    assert len(lines) == 1 and '"test_acc1"' in lines[0] and '"test_ema_acc1"' in lines[0]

    path = osp.join(out, 'checkpoint.pth')
    ckpt = safe_torch_load(path, map_location='cpu')  # weights_only=True reads it
    assert set(ckpt) == OFFICIAL_KEYS
    assert isinstance(ckpt['args'], argparse.Namespace) and ckpt['args'].model == MODEL
    assert ckpt['epoch'] == 0 and ckpt['scaler'] is None  # no --amp
    ref = tiny_timm_model().state_dict()
    for name in ('model', 'model_ema'):
        sd = ckpt[name]
        assert isinstance(sd, dict) and set(sd) == set(ref), name
        assert all(sd[k].shape == ref[k].shape for k in ref), name
    assert any(not torch.equal(ckpt['model'][k], ckpt['model_ema'][k]) for k in ref)

    # The package's loader reads it (args.model -> cls token first) into the dense
    # backbone; its cls feature is the timm model's pre-logits feature.
    from mmplugin_shufflemamba.models.backbones import ShuffleMamba
    x = torch.randn(2, 3, 32, 32)
    for use_ema, entry in ((False, 'model'), (True, 'model_ema')):
        init_cfg = dict(type='Pretrained', checkpoint=path)
        if use_ema:
            init_cfg['use_ema'] = True
        backbone = ShuffleMamba(embed_dims=32, num_layers=2, patch_size=8, img_size=32,
                                norm_cfg=dict(type='RMSNorm', eps=1e-5), with_cls_token=True,
                                out_cls=True, kernel='torch', init_cfg=init_cfg)
        backbone.init_weights()
        backbone.eval()
        timm_model = tiny_timm_model(ckpt[entry])
        with torch.no_grad():
            cls_feat = backbone(x)[-1]
            expected = timm_model.forward_head(timm_model.forward_features(x),
                                               pre_logits=True)
        torch.testing.assert_close(cls_feat, expected, rtol=1e-5, atol=1e-5)
        for k, v in backbone.state_dict().items():
            assert torch.equal(v, ckpt[entry][k]), (entry, k)

    # --eval-only --resume evaluates the raw and the EMA weights of the file.
    log = run([sys.executable, TOOL, '--eval-only', '--resume', path, '--model', MODEL,
               '--data-path', data_root, '--input-size', '32', '--batch-size', '8',
               '--num-workers', '0', '--model-kwargs'] +
              [f'{k}={v}' for k, v in TINY.items()], ROOT)
    assert TOP.search(log) and 'model_ema: top-1' in log, log[-3000:]


def test_train_timm_torchrun_two_processes(data_root, tmp_path):
    out = str(tmp_path / 'out')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
           '--master_port', str(free_port()), TOOL] + tool_args(data_root, out, 4)
    log = run(cmd, ROOT)
    assert 'world size 2' in log, log[-3000:]
    # 48 images over 2 ranks at 8 per process: 3 iterations per epoch, so 4 iterations
    # end one iteration into epoch 1.
    assert 'Epoch [1] [1/3] iter 4' in log, log[-3000:]
    m = TOP.search(log)
    assert m and 0.0 <= float(m.group(1)) <= 100.0, log[-3000:]
    assert '(16 images)' in log  # the ranks' halves of val/ add up to all of it
    ckpt = safe_torch_load(osp.join(out, 'checkpoint.pth'), map_location='cpu')
    assert set(ckpt) == OFFICIAL_KEYS and ckpt['epoch'] == 1
    assert ckpt['args'].model == MODEL and ckpt['args'].world_size == 2
    assert set(ckpt['model']) == set(tiny_timm_model().state_dict())
    assert not any(k.startswith('module.') for k in ckpt['model'])


def test_posterize_zero_bits(monkeypatch):
    """timm's RandAugment may ask for 0 bits (PosterizeIncreasing at magnitude 10),
    which Pillow >= 13 refuses; the tool makes it a black image again."""
    from PIL import Image
    from timm.data import auto_augment
    # The tool patches timm in place: undo it after this test.
    monkeypatch.setattr(auto_augment, 'posterize', auto_augment.posterize)
    monkeypatch.setattr(auto_augment, 'NAME_TO_OP', dict(auto_augment.NAME_TO_OP))
    tool = load_tool('train_timm.py')
    tool.patch_timm_posterize()
    img = Image.new('RGB', (4, 4), (200, 100, 50))
    for name, magnitude in (('PosterizeIncreasing', 10), ('Posterize', 0)):  # 0 bits
        op = auto_augment.AugmentOp(name, prob=1.0, magnitude=magnitude)
        assert op(img).getextrema() == ((0, 0), (0, 0), (0, 0)), name
    assert auto_augment.posterize(img, 8) is img
