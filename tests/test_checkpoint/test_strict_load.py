"""Nothing silently wrong: tools/test.py, tools/train.py's load_from and --resume stop
before evaluating / training when the checkpoint does not fit the config (or holds
NaN / inf), with a short report; --allow-partial-load / --allow-nonfinite-checkpoint
relax that; a run whose loss goes NaN stops at that iteration without saving it."""
import os
import os.path as osp
import re
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from mmengine.model import BaseModel, BaseTTAModel

from mmplugin_shufflemamba.compat import safe_torch_load
from mmplugin_shufflemamba.datasets import generate_synthetic_ade20k
from mmplugin_shufflemamba.checkpoint import (CheckpointError, CheckpointFitError,
                                              check_checkpoint_fit)
from mmplugin_shufflemamba.checkpoint.runner import checkpoint_to_load
from mmplugin_shufflemamba.checkpoint.saved_config import (model_config_differences,
                                                           saved_config_value)

from helpers.dist import free_port, tiny_overrides

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG = osp.join(ROOT, 'configs', 'quickstart',
                  'upernet_shufflemamba-tiny_1xb8-300it_synthetic-ade20k-128x128.py')


# ------------------------------------------------------------------ the check itself
class Toy(BaseModel):

    def __init__(self, width=4):
        super().__init__(data_preprocessor=dict(type='BaseDataPreprocessor'))
        self.backbone = nn.Sequential(nn.Conv2d(3, width, 1), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, 2)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return inputs


class TTA(BaseTTAModel):

    def merge_preds(self, data_samples_list):
        return data_samples_list[0]


def ckpt_of(model, **extra):
    return dict(meta=dict(iter=4), state_dict=OrderedDict(model.state_dict()), **extra)


def test_fitting_checkpoints_pass():
    model = Toy()
    check_checkpoint_fit(model, ckpt_of(model))
    # DDP-saved keys (module.), a wrapped model (TTA), BN counters MMEngine ignores
    sd = OrderedDict(('module.' + k, v) for k, v in model.state_dict().items()
                     if 'num_batches_tracked' not in k)
    details = check_checkpoint_fit(TTA(module=model), dict(state_dict=sd))
    assert not details['missing'] and not details['unexpected'] and not details['shapes']
    # a bare state dict is read as MMEngine reads it
    check_checkpoint_fit(model, OrderedDict(model.state_dict()))


def test_mismatch_report_is_short_and_names_the_origin():
    small, big = Toy(4), Toy(8)
    ckpt = ckpt_of(small)
    ckpt['state_dict']['extra.weight'] = torch.zeros(1)
    del ckpt['state_dict']['head.bias']
    ckpt['meta'].update(experiment_name='toy_small_20250101_000000', cfg=(
        "model = dict(type='Toy', width=4, backbone=dict(norm_cfg=dict(type='SyncBN')), "
        "init_cfg=dict(type='Pretrained'))\nwork_dir = './work_dirs/toy_small'\n"))
    with pytest.raises(CheckpointFitError) as e:
        check_checkpoint_fit(big, ckpt, source='small.pth', target='toy_big.py',
                             model_cfg=dict(type='Toy', width=8,
                                            backbone=dict(norm_cfg=dict(type='BN'))))
    msg = str(e.value)
    assert msg.startswith('small.pth does not fit the model of toy_big.py: refusing to '
                          'load it.'), msg
    # of the 8 that count (BN's num_batches_tracked, which MMEngine ignores, does not)
    assert 'missing in the checkpoint: 1 of 8 model tensors' in msg and 'head.bias' in msg
    assert 'unexpected (not in the model): 1 tensors, in extra (1)' in msg
    assert re.search(r'shape mismatch: \d+ tensors, in backbone\.0 \(2\), backbone\.1 ', msg)
    assert 'backbone.0.weight: checkpoint [4, 3, 1, 1] vs model [8, 3, 1, 1]' in msg
    assert "experiment 'toy_small_20250101_000000', work_dir './work_dirs/toy_small', " \
        'iteration 4' in msg
    assert "width: 4 in the file's config, 8 here" in msg
    assert 'SyncBN' not in msg and 'init_cfg' not in msg  # no noise in the differences
    assert '--allow-partial-load' in msg
    assert len(msg.splitlines()) < 12


def test_resume_from_weights_alone_names_load_from():
    """A file of weights that fit (converted, published) has no training state: MMEngine's
    resume would stop in a KeyError; the check names load_from / init_cfg instead."""
    model = Toy()
    state = dict(meta=dict(epoch=1, iter=4), message_hub={}, state_dict=model.state_dict())
    check_checkpoint_fit(model, state, mode='resume')
    for drop in ('meta', 'message_hub'):
        ckpt = {k: v for k, v in state.items() if k != drop}
        with pytest.raises(CheckpointFitError, match=r'holds weights but no training state '
                           r'to resume \(no (meta\.epoch / meta\.iter|message_hub)\).*'
                           'load_from'):
            check_checkpoint_fit(model, ckpt, source='w.pth', mode='resume')
        check_checkpoint_fit(model, ckpt, mode='load')
    with pytest.raises(CheckpointFitError, match='no training state'):
        check_checkpoint_fit(model, model.state_dict(), mode='resume')


def test_another_kind_of_model_gets_the_whole_report():
    """A segmentor's checkpoint given to a classifier: its backbone cannot be read as the
    classifier's (no cls token), and the report is the whole model's (the file's heads
    unexpected, the classifier's missing), not a fix for the backbone alone."""
    from mmpretrain.models import ImageClassifier

    from mmplugin_shufflemamba import ShuffleMamba
    arch = dict(embed_dims=32, num_layers=2)
    clf = ImageClassifier(
        backbone=dict(type='ShuffleMamba', arch=arch, img_size=64, with_cls_token=True,
                      out_cls=True, out_indices=(), kernel='torch'),
        head=dict(type='LinearClsHead', num_classes=4, in_channels=32))
    seg = {f'backbone.{k}': v for k, v in
           ShuffleMamba(arch=arch, img_size=64, kernel='torch').state_dict().items()}
    seg['decode_head.conv_seg.weight'] = torch.zeros(4, 32, 1, 1)
    with pytest.raises(CheckpointFitError) as e:
        check_checkpoint_fit(clf, dict(meta=dict(iter=2), state_dict=seg), source='seg.pth',
                             target='pretrain.py', mode='test')
    msg = str(e.value)
    assert msg.startswith('seg.pth does not fit the model of pretrain.py: refusing to '
                          'evaluate it.'), msg
    assert 'missing in the checkpoint' in msg and 'head.fc' in msg, msg
    assert 'unexpected (not in the model): 1 tensors, in decode_head' in msg, msg
    assert 'note: its backbone could not be read as this one' in msg
    # (the backbone's own reason, kept as a note: a dense file, no classification tokens)
    assert 'the checkpoint has no cls / register tokens, and ShuffleMamba reads its ' \
        'classification feature from them' in msg, msg
    # a partial load cannot get past it either: its reason, not a partial-load warning
    with pytest.raises(CheckpointError, match='has no cls / register tokens'):
        check_checkpoint_fit(clf, dict(meta=dict(iter=2), state_dict=seg), mode='test',
                             allow_partial=True)


def test_load_from_an_ema_hook_file_says_which_weights_it_loads():
    from helpers.logs import captured_log
    model = Toy()
    raw = {f'module.{k}': v for k, v in model.state_dict().items()}
    with captured_log() as lines:
        check_checkpoint_fit(model, ckpt_of(model, ema_state_dict=raw), source='e.pth')
        check_checkpoint_fit(model, ckpt_of(model, ema_state_dict=raw), mode='test')
        check_checkpoint_fit(model, ckpt_of(model))
    said = [line for line in lines if 'EMAHook saved as the EMA weights' in line]
    assert len(said) == 1 and said[0].startswith("e.pth: load_from loads its 'state_dict'")


def test_partial_load_when_allowed():
    details = check_checkpoint_fit(Toy(8), ckpt_of(Toy(4)), allow_partial=True)
    # conv weight / bias, BN weight / bias / running mean / var, head weight
    assert len(details['shapes']) == 7 and not details['missing']


def test_load_checked_loads_a_fitting_file_and_refuses_one_that_does_not(
        tmp_path, monkeypatch):
    """load_checked (the benchmark's load, without a runner): the fit check, then the
    weights, converted once; with allow_partial the mis-shaped tensors keep their
    initialisation."""
    import importlib
    from mmplugin_shufflemamba.checkpoint import load_checked
    fit = importlib.import_module('mmplugin_shufflemamba.checkpoint.fit')
    conversions, as_loaded = [], fit.as_loaded
    monkeypatch.setattr(fit, 'as_loaded',
                        lambda *a, **k: conversions.append(1) or as_loaded(*a, **k))
    torch.manual_seed(0)
    src, dst = Toy(), Toy()
    path = tmp_path / 'toy.pth'
    torch.save(ckpt_of(src), path)
    details = load_checked(dst, str(path))
    assert len(conversions) == 1
    assert not details['missing'] and not details['shapes']
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)
    other = Toy(width=8)
    torch.save(ckpt_of(other), path)
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(CheckpointFitError, match='does not fit the model of bench.py'):
        load_checked(dst, str(path), target='bench.py')
    for k, v in before.items():  # nothing loaded
        torch.testing.assert_close(dst.state_dict()[k], v)
    sd = OrderedDict(src.state_dict())
    sd['head.weight'] = torch.zeros(2, 5)  # one mis-shaped tensor
    sd['head.bias'] = torch.full((2, ), 3.)
    details = load_checked(dst, dict(state_dict=sd), allow_partial=True)
    assert [k for k, _, _ in details['shapes']] == ['head.weight']
    torch.testing.assert_close(dst.head.weight, before['head.weight'])
    torch.testing.assert_close(dst.head.bias, torch.full((2, ), 3.))
    sd['head.weight'] = torch.full((2, 4), float('nan'))
    with pytest.raises(CheckpointFitError, match='NaN'):
        load_checked(dst, dict(state_dict=sd))


def test_nonfinite_weights_are_refused_also_in_ema():
    model = Toy()
    ckpt = ckpt_of(model)
    ckpt['state_dict']['head.weight'] = torch.full((2, 4), float('nan'))
    with pytest.raises(CheckpointFitError,
                       match=r'x\.pth: 1 of \d+ tensors hold NaN/inf values: head\.weight '
                       r'\(NaN\)\..*--allow-nonfinite-checkpoint loads it anyway'):
        check_checkpoint_fit(model, ckpt, source='x.pth')
    assert check_checkpoint_fit(model, ckpt, allow_nonfinite=True)['nonfinite']
    # EMAHook's checkpoints: the raw weights in 'ema_state_dict' (module.<key>, steps)
    ckpt = ckpt_of(model)
    ema = OrderedDict(('module.' + k, v.clone()) for k, v in model.state_dict().items())
    ema['steps'] = torch.tensor(10)
    check_checkpoint_fit(model, dict(ckpt, ema_state_dict=ema))
    ema['module.head.bias'] = torch.tensor([float('inf'), 0.0])
    with pytest.raises(CheckpointFitError, match=r'ema_state_dict: head\.bias \(inf\)'):
        check_checkpoint_fit(model, dict(ckpt, ema_state_dict=ema))


def test_imagenet_checkpoint_as_load_from_says_where_it_belongs():
    with pytest.raises(CheckpointFitError,
                       match=r"(?s)no 'state_dict' entry.*init_cfg=.*--to mmpretrain.*"
                       r'unexpected \(not in the model\): 2 entries, in model'):
        check_checkpoint_fit(Toy(), dict(model=OrderedDict(w=torch.zeros(1)), epoch=3))


def test_a_backbone_file_as_load_from_says_where_it_belongs():
    """A converted backbone file (or a bare ImageNet state dict) given as load_from: its
    keys sit at the top, the model's under 'backbone.'."""
    from mmplugin_shufflemamba.models.backbones import ShuffleMamba
    backbone = ShuffleMamba(arch=dict(embed_dims=16, num_layers=1), img_size=32)

    class Segmentor(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = ShuffleMamba(arch=dict(embed_dims=16, num_layers=1),
                                         img_size=32)

        def forward(self, inputs, data_samples=None, mode='tensor'):
            return inputs

    classifier = dict(backbone.state_dict(), **{'head.weight': torch.zeros(5, 16)})
    for ckpt in (dict(state_dict=backbone.state_dict(),
                      meta=dict(shufflemamba_format='mmplugin')),
                 backbone.state_dict(), dict(state_dict=classifier, meta=dict(iter=1))):
        with pytest.raises(CheckpointFitError,
                           match=r"(?s)holds a backbone at its top level.*'backbone\.'.*"
                           r'ImageNet classifier or a converted backbone file.*'
                           r'model\.backbone\.init_cfg=.*not load_from'):
            check_checkpoint_fit(Segmentor(), ckpt)
    # an mmpretrain ImageClassifier's file (backbone.* with head.fc.*)
    mmpretrain = dict({'backbone.' + k: v for k, v in backbone.state_dict().items()},
                      **{'head.fc.weight': torch.zeros(5, 16), 'head.fc.bias': torch.zeros(5)})
    with pytest.raises(CheckpointFitError,
                       match=r"(?s)the file is an mmpretrain ImageClassifier \('backbone\.\*' "
                       r"and 'head\.fc\.\*'\), an ImageNet checkpoint: its backbone loads "
                       r'through model\.backbone\.init_cfg=.*head is left out'):
        check_checkpoint_fit(Segmentor(), dict(state_dict=mmpretrain, meta=dict(iter=3)))
    # Control: another backbone's keys at the top get no such line.
    toy = Toy().state_dict()
    with pytest.raises(CheckpointFitError) as info:
        check_checkpoint_fit(Toy(), {k[len('backbone.'):]: v for k, v in toy.items()
                                     if k.startswith('backbone.')})
    assert 'top level' not in str(info.value)


def test_a_file_that_is_not_a_checkpoint_stops_with_its_name(tmp_path):
    """tools/test.py / load_from on a text file, an empty file, a pickled list, a
    truncated file or a missing one: a CheckpointError naming the file (the tools print
    it without a traceback), not the reader's KeyError / EOFError."""
    import pickle
    from mmplugin_shufflemamba.checkpoint import CheckpointError, CheckpointNotFoundError
    text, empty, lst, cut = (tmp_path / n for n in ('a.txt', 'e.pth', 'l.pth', 'c.pth'))
    text.write_text('not a checkpoint\n')
    empty.write_bytes(b'')
    lst.write_bytes(pickle.dumps([1, 2, 3]))
    torch.save(ckpt_of(Toy()), cut)
    cut.write_bytes(cut.read_bytes()[:200])
    for path in (text, empty, lst, cut):
        with pytest.raises(CheckpointError, match=re.escape(str(path))):
            check_checkpoint_fit(Toy(), str(path))
    with pytest.raises(CheckpointNotFoundError, match='not found: .*missing.pth'):
        check_checkpoint_fit(Toy(), str(tmp_path / 'missing.pth'))
    torch.save(ckpt_of(Toy()), tmp_path / 'ok.pth')  # control: a real file is read
    assert check_checkpoint_fit(Toy(), str(tmp_path / 'ok.pth'))['missing'] == []


def test_saved_config_parsing_executes_nothing():
    text = ("model = dict(type='X', depth=-2, dims=[1, 2], t=(3, 4), f=foo(1))\n"
            "import os\nwork_dir = os.getcwd()\n")
    assert saved_config_value(text, 'model') == dict(type='X', depth=-2, dims=[1, 2],
                                                     t=(3, 4), f='<foo(1)>')
    assert saved_config_value(text, 'work_dir') == '<os.getcwd()>'
    assert saved_config_value('not python (', 'model') is None
    diffs = model_config_differences(dict(a=1, b=dict(c=[1, 2])),
                                     dict(type='SegTTAModel', module=dict(a=2,
                                                                          b=dict(c=(1, 2)))))
    assert diffs == ["a: 1 in the file's config, 2 here"]


class _Runner:

    def __init__(self, work_dir, resume, load_from):
        self.work_dir, self._resume, self._load_from = str(work_dir), resume, load_from
        self._has_loaded = False


def test_checkpoint_to_load_mirrors_load_or_resume(tmp_path):
    assert checkpoint_to_load(_Runner(tmp_path, False, None)) == (None, None)
    assert checkpoint_to_load(_Runner(tmp_path, True, None)) == (None, None)  # nothing yet
    (tmp_path / 'iter_2.pth').write_bytes(b'')
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_2.pth'))
    assert checkpoint_to_load(_Runner(tmp_path, True, None)) == (
        str(tmp_path / 'iter_2.pth'), 'resume')
    assert checkpoint_to_load(_Runner(tmp_path, True, 'a.pth')) == ('a.pth', 'resume')
    assert checkpoint_to_load(_Runner(tmp_path, False, 'a.pth')) == ('a.pth', 'load')


@pytest.mark.parametrize('mode, hooks', [
    (None, ['BackboneLayoutHook']),  # load_from: training starts from the file
    ('test', ['BackboneLayoutHook', 'EvaluateFileWeightsHook']),
])
def test_the_runner_check_registers_the_hooks_of_its_mode(tmp_path, mode, hooks):
    """Only a test turns an EMA hook's swap off for a file without EMA weights: in
    training, load_from must leave mmpretrain's EMAHook as configured."""
    from types import SimpleNamespace

    from mmplugin_shufflemamba.checkpoint import check_runner_checkpoint
    model = Toy()
    path = tmp_path / 'toy.pth'
    torch.save(ckpt_of(model), path)
    registered = []
    runner = SimpleNamespace(model=model, _load_from=str(path), _resume=False,
                             work_dir=str(tmp_path), cfg=None,
                             register_hook=lambda hook: registered.append(hook))
    check_runner_checkpoint(runner, mode=mode)
    assert [type(h).__name__ for h in registered] == hooks


# ------------------------------------------------------------------------- the tools
def env():
    path = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
    return dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=path)


def run(tool, args, cwd, timeout=600):
    cmd = [sys.executable, osp.join(ROOT, 'tools', tool)] + [str(a) for a in args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env(),
                       cwd=str(cwd))
    return r.returncode, r.stdout + r.stderr, r.stderr


def data_options(data_root):
    """The quickstart config at its own size (96 wide, 6 blocks) on the small data."""
    return [o for o in tiny_overrides(data_root, 2) if o.split('=')[0].endswith(
        ('data_root', 'num_workers', 'persistent_workers', 'batch_size'))]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A 32-wide, 4-block run of the quickstart config: iter_2.pth."""
    base = tmp_path_factory.mktemp('strict_load')
    data_root = str(base / 'data')
    generate_synthetic_ade20k(data_root, num_train=8, num_val=4, size=(64, 64))
    work = base / 'w32'
    rc, log, _ = run('train.py', [CONFIG, '--work-dir', work, '--cfg-options'] +
                     tiny_overrides(data_root, 2), base)
    assert rc == 0, log[-4000:]
    return dict(base=base, data_root=data_root, ckpt=str(work / 'iter_2.pth'))


def assert_refused(rc, log, err, what):
    assert rc == 1, log[-4000:]
    assert f'does not fit the model of {osp.basename(CONFIG)}: refusing to {what} it' in err
    assert re.search(r'missing in the checkpoint: \d+ of \d+ model tensors, in '
                     r'backbone\.layers', err), err
    assert re.search(r'shape mismatch: \d+ tensors, in backbone', err), err
    assert 'backbone.pos_embed: checkpoint [1, 256, 32] vs model [1, 256, 96]' in err, err
    assert "the file comes from experiment 'upernet_shufflemamba-tiny_1xb8-300it_" in err
    assert "backbone.embed_dims: 32 in the file's config, 96 here" in err, err
    assert "backbone.num_layers: 4 in the file's config, 6 here" in err, err
    assert '--allow-partial-load' in err
    assert 'size mismatch for' not in log and 'Traceback' not in log, log[-4000:]
    report = err[err.index('does not fit'):]
    assert len(report.splitlines()) < 16, report


def test_test_tool_refuses_a_checkpoint_of_another_width(trained):
    rc, log, err = run('test.py', [CONFIG, trained['ckpt'], '--work-dir',
                                   trained['base'] / 't96', '--cfg-options'] +
                       data_options(trained['data_root']), trained['base'])
    assert_refused(rc, log, err, 'evaluate')
    assert 'mIoU: ' not in log and 'Iter(test)' not in log


@pytest.mark.slow
def test_test_tool_partial_load_when_asked(trained):
    rc, log, err = run('test.py', [CONFIG, trained['ckpt'], '--allow-partial-load',
                                   '--work-dir', trained['base'] / 'tp', '--cfg-options'] +
                       data_options(trained['data_root']), trained['base'])
    assert rc == 0, log[-4000:]
    assert re.search(r'partial load \(--allow-partial-load\): \d+ model tensors keep '
                     r'their initialisation', log), log[-4000:]
    assert 'size mismatch for' not in log  # summarised once, not one line per tensor
    assert 'mIoU: ' in log


def test_missing_data_and_pretrained_file_stop_without_traceback(trained):
    """A wrong data root or Pretrained path is a usage error: the tool names it and
    exits 1, no traceback (as for a checkpoint that does not fit)."""
    base = trained['base']
    opts = data_options(trained['data_root'])
    rc, log, err = run('train.py', [CONFIG, '--work-dir', base / 'nodata', '--cfg-options']
                       + [o for o in opts if 'data_root' not in o] +
                       [f'{k}.dataset.data_root={base / "nowhere"}'
                        for k in ('train_dataloader', 'val_dataloader')], base)
    assert rc == 1 and 'Traceback' not in log, log[-4000:]
    assert 'tools/train.py: ' in err and str(base / 'nowhere') in err, err[-2000:]
    rc, log, err = run('train.py', [CONFIG, '--work-dir', base / 'noinit', '--cfg-options']
                       + opts + ['model.backbone.init_cfg.type=Pretrained',
                                 f'model.backbone.init_cfg.checkpoint={base / "no.pth"}'],
                       base)
    assert rc == 1 and 'Traceback' not in log, log[-4000:]
    assert f'checkpoint file not found: {base / "no.pth"}' in err, err[-2000:]


def test_resume_refuses_before_training(trained):
    work = trained['base'] / 'r96'
    rc, log, err = run('train.py', [CONFIG, '--work-dir', work, '--resume', trained['ckpt'],
                                    '--cfg-options'] + data_options(trained['data_root']) +
                       ['train_cfg.max_iters=4'], trained['base'])
    assert_refused(rc, log, err, 'resume from')
    assert 'Resume with the config the file was trained with' in err
    assert 'parameter group' not in log and 'Iter(train)' not in log
    assert not [f for f in os.listdir(work) if f.endswith('.pth')]


@pytest.mark.slow
def test_load_from_refuses_before_training(trained):
    work = trained['base'] / 'l96'
    rc, log, err = run('train.py', [CONFIG, '--work-dir', work, '--cfg-options'] +
                       data_options(trained['data_root']) +
                       [f"load_from={trained['ckpt']}", 'train_cfg.max_iters=4'],
                       trained['base'])
    assert_refused(rc, log, err, 'load')
    assert 'Iter(train)' not in log
    assert not [f for f in os.listdir(work) if f.endswith('.pth')]


def poison(trained, path, keep=3):
    """The run's checkpoint with NaN in all but ``keep`` floating-point tensors."""
    ckpt = safe_torch_load(trained['ckpt'], map_location='cpu')
    sd = ckpt['state_dict']
    floats = [k for k, v in sd.items() if v.is_floating_point()]
    for k in floats[:-keep]:
        sd[k] = torch.full_like(sd[k], float('nan'))
    torch.save(ckpt, path)
    return len(floats) - keep, len(sd)


def test_nan_checkpoint_is_refused(trained, tmp_path):
    bad = str(tmp_path / 'diverged.pth')
    n_bad, n = poison(trained, bad)
    rc, log, err = run('test.py', [CONFIG, bad, '--work-dir', tmp_path / 't',
                                   '--cfg-options'] + tiny_overrides(trained['data_root'], 2),
                       trained['base'])
    assert rc == 1, log[-4000:]
    assert f'diverged.pth: {n_bad} of {n} tensors hold NaN/inf values: backbone.' in err, err
    assert 'Use a checkpoint saved before the divergence' in err
    assert '--allow-nonfinite-checkpoint loads it anyway' in err
    assert "(the file comes from experiment 'upernet_shufflemamba-tiny" in err
    assert 'mIoU: ' not in log and 'Traceback' not in log


@pytest.mark.slow
def test_fitting_and_allowed_nan_checkpoints_load(trained, tmp_path):
    opts = ['--cfg-options'] + tiny_overrides(trained['data_root'], 2)
    rc, log, _ = run('test.py', [CONFIG, trained['ckpt'], '--work-dir', tmp_path / 't'] +
                     opts, trained['base'])
    assert rc == 0 and 'mIoU: ' in log and 'partial load' not in log, log[-4000:]
    bad = str(tmp_path / 'diverged.pth')
    poison(trained, bad)
    rc, log, err = run('test.py', [CONFIG, bad, '--allow-nonfinite-checkpoint',
                                   '--work-dir', tmp_path / 't'] + opts, trained['base'])
    assert rc == 0 and 'NaN/inf values as asked (--allow-nonfinite-checkpoint)' in log, \
        log[-4000:]


def test_load_from_at_another_grid_reads_the_files_grid(trained, tmp_path):
    """The checkpoint's backbone was trained on a 16x16 grid (128 px, patch 8): a config
    on an 8x32 grid (the same 256 positions) or a 12x12 one loads it resized from 16x16,
    as its saved config records, in tools/test.py and as tools/train.py's load_from."""
    opts = tiny_overrides(trained['data_root'], 2)
    rc, log, _ = run('test.py', [CONFIG, trained['ckpt'], '--work-dir', tmp_path / 't',
                                 '--cfg-options', 'model.backbone.img_size=[64,256]'] + opts,
                     trained['base'])
    assert rc == 0 and 'mIoU: ' in log, log[-4000:]
    assert "read a 'mmplugin' checkpoint (pos_embed (16, 16) -> (8, 32)" in log, log[-4000:]
    rc, log, _ = run('train.py', [CONFIG, '--work-dir', tmp_path / 'l', '--cfg-options',
                                  f"load_from={trained['ckpt']}",
                                  'model.backbone.img_size=96'] + opts, trained['base'])
    assert rc == 0 and 'Iter(train) [2/2]' in log, log[-4000:]
    assert "read a 'mmplugin' checkpoint (pos_embed (16, 16) -> (12, 12)" in log, log[-4000:]


def nan_run(trained, work, extra=()):
    """lr 1e8 on the shrunk quickstart config, a checkpoint every iteration."""
    return run('train.py', [CONFIG, '--work-dir', work] + list(extra) + ['--cfg-options'] +
               tiny_overrides(trained['data_root'], 6) + [
                   'default_hooks.checkpoint.interval=1',
                   'default_hooks.checkpoint.max_keep_ckpts=-1',
                   'optim_wrapper.optimizer.lr=1e8'], trained['base'])


def test_nan_loss_stops_the_run_at_that_iteration(trained):
    work = trained['base'] / 'nan'
    rc, log, err = nan_run(trained, work)
    assert rc == 1, log[-4000:]
    m = re.search(r'tools/train\.py: Training stopped: non-finite loss at iteration (\d+): '
                  r'loss=nan, decode\.loss_ce=nan, aux\.loss_ce=', err)
    assert m, log[-4000:]
    it = int(m.group(1))
    assert 'The weights of this iteration are not saved' in log
    assert 'Traceback' not in log
    saved = sorted(f for f in os.listdir(work) if f.endswith('.pth'))
    assert saved == [f'iter_{i}.pth' for i in range(1, it)], saved
    for f in saved:  # what was saved is finite
        sd = safe_torch_load(str(work / f), map_location='cpu')['state_dict']
        assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


@pytest.mark.slow
def test_no_finite_check_lets_a_diverged_run_go_on(trained):
    work = trained['base'] / 'nan_unchecked'
    rc, log, _ = nan_run(trained, work, ['--no-finite-check'])
    assert rc == 0, log[-4000:]
    assert 'The non-finite loss check (FiniteLossHook) is off (--no-finite-check)' in log
    sd = safe_torch_load(str(work / 'iter_6.pth'), map_location='cpu')['state_dict']
    assert any(not torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


# ------------------------------------------------------------- every rank stops (slow)
def dist(script, args, cwd):
    e = dict(env(), PYTHON=sys.executable, PORT=str(free_port()))
    r = subprocess.run(['bash', osp.join(ROOT, 'tools', script)] + [str(a) for a in args],
                       cwd=str(cwd), env=e, capture_output=True, text=True, timeout=600)
    return r.returncode, r.stdout + r.stderr


@pytest.mark.slow
def test_dist_test_stops_on_every_rank(trained):
    """2 CPU processes: both ranks refuse (no rank waits for the other)."""
    rc, log = dist('dist_test.sh', [CONFIG, trained['ckpt'], '2', '--work-dir',
                                    trained['base'] / 'dt', '--cfg-options'] +
                   data_options(trained['data_root']), trained['base'])
    assert rc != 0, log[-4000:]
    assert 'refusing to evaluate it' in log, log[-4000:]
    assert '[rank 1] tools/test.py: stopped:' in log, log[-4000:]
    assert 'mIoU: ' not in log


@pytest.mark.slow
def test_dist_train_nan_loss_stops_every_rank(trained):
    work = trained['base'] / 'dist_nan'
    rc, log = dist('dist_train.sh', [CONFIG, '2', '--work-dir', work, '--cfg-options'] +
                   tiny_overrides(trained['data_root'], 6) + [
                       'default_hooks.checkpoint.interval=1',
                       'default_hooks.checkpoint.max_keep_ckpts=-1',
                       'optim_wrapper.optimizer.lr=1e8'], trained['base'])
    assert rc != 0, log[-4000:]
    m = re.search(r'Training stopped: non-finite loss at iteration (\d+)', log)
    assert m, log[-4000:]
    assert '[rank 1] tools/train.py: stopped.' in log, log[-4000:]
    saved = sorted(f for f in os.listdir(work) if f.endswith('.pth'))
    assert f'iter_{m.group(1)}.pth' not in saved, saved
