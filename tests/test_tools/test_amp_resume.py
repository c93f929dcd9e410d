"""tools/train.py --amp (bfloat16 autocast on the CPU) and --resume (a resumed run ends
exactly where an uninterrupted one does)."""
import math
import os
import os.path as osp
import shutil
import subprocess
import sys

import pytest
import torch

from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k
from mmplugin_shufflemamba.engine.optimizers.amp_optim_wrapper import (
    CPUAmpOptimWrapper, amp_optim_wrapper_cfg)

from helpers.dist import tiny_overrides

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('amp_resume') / 'data')
    generate_synthetic_ade20k(root, num_train=8, num_val=4, size=(64, 64))
    return root


def test_amp_config_choice():
    base = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3),
                clip_grad=dict(max_norm=1.0))
    gpu = amp_optim_wrapper_cfg(base, 'float16', cuda=True)
    assert gpu['type'] == 'AmpOptimWrapper' and gpu['dtype'] == 'float16'
    assert gpu['loss_scale'] == 'dynamic' and gpu['clip_grad'] == base['clip_grad']
    assert amp_optim_wrapper_cfg(base, 'bfloat16', cuda=True)['dtype'] == 'bfloat16'
    cpu = amp_optim_wrapper_cfg(base, 'bfloat16', cuda=False)
    assert cpu['type'] == 'CPUAmpOptimWrapper' and cpu['dtype'] == 'bfloat16'
    with pytest.raises(ValueError, match='needs a GPU'):
        amp_optim_wrapper_cfg(base, 'float16', cuda=False)
    with pytest.raises(ValueError, match='bfloat16 only'):
        CPUAmpOptimWrapper(optimizer=torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))],
                                                     lr=0.1), dtype='float16')


def test_cpu_bf16_training_steps_are_finite(data_root, tmp_path):
    """A few bfloat16-autocast training steps of the tiny UperNet: the forward really
    runs in bfloat16, loss and every gradient are finite, parameters stay float32."""
    from mmengine.runner import Runner

    from mmplugin_shufflemamba.utils import load_config, prepare_runtime
    opts = {}
    for item in tiny_overrides(data_root, 3):
        key, value = item.split('=', 1)
        opts[key] = eval(value) if value[:1] in '[0123456789' or value in (
            'True', 'False') else value
    cfg = load_config(CONFIG, 'none', str(tmp_path / 'work'), opts)
    cfg.optim_wrapper = amp_optim_wrapper_cfg(cfg.optim_wrapper, 'bfloat16', cuda=False)
    prepare_runtime(cfg, 'none')
    runner = Runner.from_cfg(cfg)
    model = runner.model
    model.train()
    optim_wrapper = runner.build_optim_wrapper(cfg.optim_wrapper)
    assert isinstance(optim_wrapper, CPUAmpOptimWrapper)
    seen = []
    for m in model.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            m.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    batches = iter(runner.train_dataloader)
    for _ in range(3):
        with optim_wrapper.optim_context(model):
            data = model.data_preprocessor(next(batches), True)
            losses = model._run_forward(data, mode='loss')
        loss, _ = model.parse_losses(losses)
        assert math.isfinite(loss.item())
        optim_wrapper.backward(loss)
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        assert all(p.dtype == torch.float32 for p in model.parameters())
        optim_wrapper.step()
        optim_wrapper.zero_grad()
    assert seen and all(d == torch.bfloat16 for d in seen), set(seen)


def test_train_amp_float16_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip('float16 AMP runs on this machine')
    run = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG,
                          '--amp', '--amp-dtype', 'float16'], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 2 and 'needs a GPU' in run.stderr, run.stderr[-2000:]


def train(work, data_root, iters, ckpt_interval, extra=(), env=None, options=()):
    opts = tiny_overrides(data_root, iters) + [
        f'default_hooks.checkpoint.interval={ckpt_interval}',
        'default_hooks.checkpoint.max_keep_ckpts=-1', *options]
    cmd = [sys.executable, osp.join(ROOT, 'tools', 'train.py'), CONFIG, '--work-dir',
           str(work)] + list(extra) + ['--cfg-options'] + opts
    env = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env,
                         cwd=str(work.parent))
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return run.stdout + run.stderr


def load(path):
    from mmplugin_shufflemamba.compat import safe_torch_load
    return safe_torch_load(str(path), map_location='cpu')


def assert_same_tree(a, b, where=''):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f'{where} differs'
    elif isinstance(a, dict):
        assert set(a) == set(b), f'{where}: keys {set(a) ^ set(b)}'
        for k in a:
            assert_same_tree(a[k], b[k], f'{where}.{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f'{where}[{i}]')
    else:
        assert a == b, f'{where}: {a!r} != {b!r}'


@pytest.mark.slow
@pytest.mark.parametrize('amp', [False, True])
def test_resume_ends_like_an_uninterrupted_run(data_root, tmp_path, amp):
    """6 iterations straight, against 3 iterations, a stop, and --resume to 6 (drop
    path and the layer shuffle on, as in the config): identical weights, optimizer and
    scheduler states. Without the saved generator state the weights differ (the test
    sees the difference the hook makes)."""
    extra = ['--amp'] if amp else []
    full = tmp_path / 'full'
    train(full, data_root, 6, 3, extra)
    # The interrupted run: its checkpoint at iteration 3 is what a run stopped there
    # wrote (the same process state); a fresh process resumes from it.
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(full / 'iter_3.pth', resumed / 'iter_3.pth')
    log = train(resumed, data_root, 6, 3, extra + ['--resume', str(resumed / 'iter_3.pth')])
    assert 'resumed' in log.lower() or 'Advance dataloader 3 steps' in log, log[-3000:]
    a, b = load(full / 'iter_6.pth'), load(resumed / 'iter_6.pth')
    assert a['meta']['iter'] == b['meta']['iter'] == 6
    assert_same_tree(a['state_dict'], b['state_dict'], 'state_dict')
    assert_same_tree(a['optimizer'], b['optimizer'], 'optimizer')
    assert_same_tree(a['param_schedulers'], b['param_schedulers'], 'param_schedulers')
    if amp:
        return
    # Control: the same resume without the generator state continues differently.
    ckpt = load(full / 'iter_3.pth')
    del ckpt['rng_state']
    control = tmp_path / 'control'
    control.mkdir()
    torch.save(ckpt, control / 'iter_3.pth')
    train(control, data_root, 6, 3, ['--resume', str(control / 'iter_3.pth')])
    c = load(control / 'iter_6.pth')
    assert any(not torch.equal(a['state_dict'][k], c['state_dict'][k])
               for k in a['state_dict']), 'the generator state made no difference'


@pytest.mark.slow
def test_resume_without_a_seed_in_the_config_keeps_the_data_order(data_root, tmp_path):
    """A config without randomness.seed (the zoo configs): MMEngine draws one, and
    restores it on resume only after it built the sampler; tools/train.py resumes with
    the checkpoint's seed, so the resumed run trains on the same batches."""
    options = ['randomness.seed=None']
    full = tmp_path / 'full'
    train(full, data_root, 4, 2, options=options)
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    shutil.copy(full / 'iter_2.pth', resumed / 'iter_2.pth')
    log = train(resumed, data_root, 4, 2, ['--resume', str(resumed / 'iter_2.pth')],
                options=options)
    seed = load(full / 'iter_2.pth')['meta']['seed']
    assert f'Resuming with the seed the run was trained with ({seed}' in log, log[-3000:]
    assert_same_tree(load(full / 'iter_4.pth')['state_dict'],
                     load(resumed / 'iter_4.pth')['state_dict'], 'state_dict')


def test_cpu_amp_refuses_detectors(monkeypatch, tmp_path):
    """mmcv's CPU nms takes float32 only: --amp without CUDA stops a Mask R-CNN config
    before anything is built, naming the fix; the segmentors keep CPU autocast."""
    from helpers.tools import load_tool
    from mmplugin_shufflemamba.utils import ConfigError
    base = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3))
    with pytest.raises(ConfigError, match='without --amp'):
        amp_optim_wrapper_cfg(base, 'bfloat16', cuda=False, scope='mmdet')
    assert amp_optim_wrapper_cfg(base, 'bfloat16', cuda=True, scope='mmdet')['type'] == \
        'AmpOptimWrapper'
    assert amp_optim_wrapper_cfg(base, 'bfloat16', cuda=False, scope='mmseg')['type'] == \
        'CPUAmpOptimWrapper'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    train = load_tool('train.py')
    det = osp.join(ROOT, 'configs', 'quickstart',
                   'mask-rcnn_shufflemamba-adapter-tiny_1xb8-400it_synthetic-coco-128x128.py')
    monkeypatch.setattr(sys, 'argv', ['train.py', det, '--amp',
                                      '--work-dir', str(tmp_path / 'w')])
    with pytest.raises(ConfigError, match="mmcv's CPU nms"):
        train.train(train.parse_args())


def test_auto_resume_reads_the_work_dir_it_is_given(tmp_path):
    """--resume without a path continues from the checkpoint of *this* work dir: a copied
    or moved work dir's record still names the old place; a record whose file is not
    here is an error naming the fix; no record starts afresh."""
    from mmplugin_shufflemamba.utils import ConfigError, latest_checkpoint
    old, new = tmp_path / 'run', tmp_path / 'run_copy'
    old.mkdir()
    (old / 'iter_4.pth').write_bytes(b'x')
    (old / 'last_checkpoint').write_text(str(old / 'iter_4.pth'))
    assert latest_checkpoint(str(old)) == str(old / 'iter_4.pth')
    shutil.copytree(old, new)
    assert latest_checkpoint(str(new)) == str(new / 'iter_4.pth')
    (new / 'iter_4.pth').unlink()  # then the record's own path (CheckpointHook out_dir)
    assert latest_checkpoint(str(new)) == str(old / 'iter_4.pth')
    (old / 'iter_4.pth').unlink()
    with pytest.raises(ConfigError, match='which does not exist, and iter_4.pth is not in '
                       '.*--resume PATH'):
        latest_checkpoint(str(new))
    assert latest_checkpoint(str(tmp_path)) is None


def test_resume_settings(tmp_path):
    """--resume CKPT, --resume alone and the config's resume / load_from together."""
    from mmengine.config import Config
    from mmplugin_shufflemamba.utils import apply_resume

    def settings(option, **cfg):
        cfg = Config(dict(work_dir=str(tmp_path), **cfg))
        apply_resume(cfg, option)
        return cfg.get('resume'), cfg.get('load_from')

    assert settings('x.pth', load_from='ft.pth') == (True, 'x.pth')
    # No record yet: a fresh start, from the config's load_from (a resumable job's start),
    # which the log says
    from helpers.logs import captured_log
    with captured_log() as lines:
        assert settings('auto') == (False, None)
        assert settings('auto', load_from='ft.pth') == (False, 'ft.pth')
    assert lines == [f'Nothing to resume in {tmp_path} (no last_checkpoint, iter_*.pth or '
                     'epoch_*.pth): the run starts at iteration 0.',
                     f'Nothing to resume in {tmp_path} (no last_checkpoint, iter_*.pth or '
                     'epoch_*.pth): the run starts at iteration 0 from load_from=ft.pth.']
    assert settings(None, resume=True) == (False, None)
    assert settings(None, load_from='ft.pth') == (None, 'ft.pth')  # untouched
    (tmp_path / 'iter_8.pth').write_bytes(b'x')
    (tmp_path / 'last_checkpoint').write_text('/elsewhere/iter_8.pth')
    here = str(tmp_path / 'iter_8.pth')
    assert settings('auto', load_from='ft.pth') == (True, here)
    assert settings(None, resume=True) == (True, here)
    assert settings(None, resume=True, load_from='x.pth') == (True, 'x.pth')  # MMEngine's
