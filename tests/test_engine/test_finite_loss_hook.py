"""FiniteLossHook stops training at the first non-finite loss (or gradient norm) and
before that state is saved; tools/train.py adds it (once) unless switched off."""
import logging
import math
import os
import os.path as osp
import uuid

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.hooks import CheckpointHook, EMAHook, LoggerHook
from mmengine.logging import MessageHub, MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmplugin_shufflemamba  # noqa: F401  (registers the hook)
from mmplugin_shufflemamba.engine.hooks import FiniteLossHook, NonFiniteTrainingError
from mmplugin_shufflemamba.engine.hooks.finite_loss_hook import uses_loss_scaler
from mmplugin_shufflemamba.utils import add_training_hooks, stop_message


class ToyModel(BaseModel):
    """y = w * x; the loss turns NaN (or its gradient inf) from iteration ``bad_at``."""

    def __init__(self, bad_at=None, mode='nan'):
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))
        self.bad_at, self.mode, self.calls = bad_at, mode, 0

    def forward(self, inputs, data_samples=None, mode='tensor'):
        self.calls += 1
        x = torch.stack(inputs) if isinstance(inputs, (list, tuple)) else inputs
        loss = ((self.w * x) ** 2).mean()
        aux = (self.w.sum() - 2) ** 2
        if self.bad_at is not None and self.calls >= self.bad_at:
            if self.mode == 'nan':
                loss = loss * float('nan')
            else:  # finite loss, infinite gradient: d sqrt(u) / du at u = 0
                loss = loss + torch.sqrt((self.w - self.w.detach()).abs()).sum()
        return dict(loss_main=loss, loss_aux=aux, acc=torch.tensor(float('nan')))


class ToyData(torch.utils.data.Dataset):

    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((2, ), float(i + 1)))


def runner(tmp_path, model, max_iters=6, clip=False, custom_hooks=None, epochs=None):
    opt = dict(optimizer=dict(type='SGD', lr=0.01))
    if clip:
        opt['clip_grad'] = dict(max_norm=1.0)
    train_cfg = dict(by_epoch=True, max_epochs=epochs) if epochs else \
        dict(by_epoch=False, max_iters=max_iters)
    return Runner(
        model=model, work_dir=str(tmp_path),
        train_dataloader=dict(dataset=ToyData(), sampler=dict(type='DefaultSampler',
                                                              shuffle=False),
                              batch_size=2, num_workers=0),
        optim_wrapper=opt, train_cfg=train_cfg,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1,
                                           by_epoch=bool(epochs)),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=custom_hooks if custom_hooks is not None else [
            dict(type='FiniteLossHook')],
        experiment_name=f'toy_{uuid.uuid4().hex}', default_scope='mmengine')


def test_stops_at_the_first_nan_loss_and_saves_nothing_of_it(tmp_path):
    r = runner(tmp_path, ToyModel(bad_at=3))
    with pytest.raises(NonFiniteTrainingError) as e:
        r.train()
    msg = str(e.value)
    assert msg.startswith('Training stopped: non-finite loss at iteration 3: '), msg
    assert 'loss=nan' in msg and 'loss_main=nan' in msg and 'loss_aux=0' in msg, msg
    assert 'acc' not in msg.split('. ')[0]  # only the loss terms are checked / named
    assert 'the last checkpoint is' in msg and 'iter_2.pth' in msg
    assert 'Lower the learning rate' in msg
    assert osp.isfile(tmp_path / 'iter_2.pth')
    assert not osp.exists(tmp_path / 'iter_3.pth')


def test_first_iteration(tmp_path):
    r = runner(tmp_path, ToyModel(bad_at=1))
    with pytest.raises(NonFiniteTrainingError, match='at iteration 1: loss=nan'):
        r.train()
    assert not any(f.endswith('.pth') for f in os.listdir(tmp_path))


def test_epoch_based_loop_names_epoch_and_batch(tmp_path):
    r = runner(tmp_path, ToyModel(bad_at=6), epochs=3)  # 4 batches an epoch
    with pytest.raises(NonFiniteTrainingError,
                       match=r'at iteration 6 \(epoch 2, batch 2\)'):
        r.train()
    assert osp.isfile(tmp_path / 'epoch_1.pth') and not osp.exists(tmp_path / 'epoch_2.pth')


def test_non_finite_gradient_norm_with_clipping(tmp_path):
    r = runner(tmp_path, ToyModel(bad_at=2, mode='inf_grad'), clip=True)
    with pytest.raises(NonFiniteTrainingError) as e:
        r.train()
    msg = str(e.value)
    assert 'non-finite gradient norm (grad_norm=' in msg and 'at iteration 2' in msg, msg
    assert 'non-finite loss' not in msg
    assert not osp.exists(tmp_path / 'iter_2.pth')


def test_weights_made_non_finite_by_a_step_are_not_saved(tmp_path):
    """Without clipping no grad_norm is logged: the (finite) loss passes, but the step
    made the weights NaN, and the checkpoint of that iteration is refused."""
    r = runner(tmp_path, ToyModel(bad_at=2, mode='inf_grad'), max_iters=2)
    with pytest.raises(NonFiniteTrainingError,
                       match=r'the weights hold NaN/inf after iteration 2 \(1 of 1 '
                       r'tensors: w \(NaN\)\).*this checkpoint is not saved'):
        r.train()
    assert osp.isfile(tmp_path / 'iter_1.pth') and not osp.exists(tmp_path / 'iter_2.pth')


def test_checks_can_be_switched_off(tmp_path):
    r = runner(tmp_path, ToyModel(bad_at=2, mode='inf_grad'), max_iters=2, clip=True,
               custom_hooks=[dict(type='FiniteLossHook', check_grad_norm=False,
                                  check_weights=False)])
    r.train()
    assert osp.isfile(tmp_path / 'iter_2.pth')


class _Scaler:

    def __init__(self, on):
        self.on = on

    def is_enabled(self):
        return self.on


class _Wrapper:

    def __init__(self, scaler=None):
        self.loss_scaler = scaler


class _Runner:
    """What the hook reads from a runner, for checks without a training loop."""

    def __init__(self, wrapper, name):
        self.optim_wrapper = wrapper
        self.message_hub = MessageHub.get_instance(name)
        self.iter = 4
        self.work_dir = '/nonexistent'
        self.logger = logging.getLogger('finite_loss_hook_test')


@pytest.mark.parametrize('scaler,raises', [(None, True), (_Scaler(False), True),
                                           (_Scaler(True), False)])
def test_loss_scaler_skips_the_grad_norm_check(scaler, raises):
    """float16 loss scaling makes inf gradients on purpose (and skips those steps)."""
    run = _Runner(_Wrapper(scaler), f'scaler_{id(scaler)}_{raises}')
    assert uses_loss_scaler(run.optim_wrapper) == (not raises)
    hook = FiniteLossHook()
    hook.before_train_iter(run, 4)
    run.message_hub.update_scalar('train/grad_norm', float('inf'))
    outputs = dict(loss=torch.tensor(1.0))
    if raises:
        with pytest.raises(NonFiniteTrainingError, match=r'grad_norm=inf\) at iteration 5'):
            hook.after_train_iter(run, 4, outputs=outputs)
    else:
        hook.after_train_iter(run, 4, outputs=outputs)
    # A wrapper dict (several optimizers) with one scaler counts too.
    assert uses_loss_scaler(type('D', (), dict(optim_wrappers=dict(
        a=_Wrapper(), b=_Wrapper(_Scaler(True)))))())


def test_a_grad_norm_of_an_earlier_iteration_is_not_rechecked():
    """After a resume the message hub holds the saved run's grad_norm history: only a
    value logged in this iteration counts."""
    run = _Runner(_Wrapper(), 'stale')
    run.message_hub.update_scalar('train/grad_norm', float('nan'))
    hook = FiniteLossHook()
    hook.before_train_iter(run, 0)
    hook.after_train_iter(run, 0, outputs=dict(loss=torch.tensor(0.5)))  # no new value
    hook.before_train_iter(run, 1)
    run.message_hub.update_scalar('train/grad_norm', 3.0)
    hook.after_train_iter(run, 1, outputs=dict(loss=torch.tensor(0.5)))


def test_no_checkpoint_with_non_finite_weights(tmp_path):
    run = _Runner(_Wrapper(), 'weights')
    sd = dict(a=torch.ones(2), b=torch.tensor([1.0, float('inf')]))
    with pytest.raises(NonFiniteTrainingError,
                       match=r'weights hold NaN/inf after iteration 7 \(1 of 2 tensors: '
                       r'b \(inf\)\).*not saved'):
        FiniteLossHook().before_save_checkpoint(run, dict(meta=dict(iter=7), state_dict=sd))
    FiniteLossHook().before_save_checkpoint(run, dict(meta=dict(iter=7),
                                                      state_dict=dict(a=torch.ones(2))))
    FiniteLossHook(check_weights=False).before_save_checkpoint(
        run, dict(meta=dict(iter=7), state_dict=sd))


@pytest.mark.parametrize('ema_priority', ['NORMAL', 'ABOVE_NORMAL'])
def test_runs_before_ema_logger_and_checkpoint_hooks(tmp_path, ema_priority):
    """Also before an EMAHook listed first at mmpretrain's ABOVE_NORMAL (the pretraining
    configs): the run stops before the non-finite state is averaged."""
    r = runner(tmp_path, ToyModel(), custom_hooks=[dict(type='EMAHook', priority=ema_priority),
                                                   dict(type='FiniteLossHook')])
    order = [type(h) for h in r.hooks]
    ours = order.index(FiniteLossHook)
    for other in (EMAHook, LoggerHook, CheckpointHook):
        assert ours < order.index(other), order


def test_finite_training_is_untouched(tmp_path):
    r = runner(tmp_path, ToyModel(), max_iters=3, clip=True)
    r.train()
    assert osp.isfile(tmp_path / 'iter_3.pth')
    assert math.isfinite(r.message_hub.get_scalar('train/grad_norm').current())


def test_stop_message_is_the_first_sentence():
    err = NonFiniteTrainingError('Training stopped: non-finite loss at iteration 3: '
                                 'loss=nan, loss_main=nan. The weights of this iteration...')
    assert stop_message(err, 'tools/train.py') == \
        'tools/train.py: Training stopped: non-finite loss at iteration 3: loss=nan, ' \
        'loss_main=nan.'


def test_stop_message_of_a_data_error_from_a_loader_worker(monkeypatch):
    """A DataError raised in a DataLoader worker reaches the tool wrapped in the worker's
    traceback: the message is the worker's reason, without the traceback, in full on
    the rank that met it (a data error is one rank's, not every rank's verdict)."""
    from torch._utils import ExceptionWrapper
    from mmplugin_shufflemamba.datasets.data_checks import DataError
    reason = 'a.png: label values {199} outside [0, 150) and not the ignore index 255'
    try:
        raise DataError(reason)
    except DataError:
        wrapped = ExceptionWrapper(where='in DataLoader worker process 0')
    with pytest.raises(DataError) as e:
        wrapped.reraise()
    assert 'Original Traceback' in str(e.value)
    assert stop_message(e.value, 'tools/train.py') == f'tools/train.py: {reason}'
    monkeypatch.setenv('RANK', '1')
    monkeypatch.setenv('WORLD_SIZE', '2')
    assert stop_message(e.value, 'tools/train.py') == f'[rank 1] tools/train.py: {reason}'


# --------------------------------------------------------------- tools/train.py's hooks
def names(cfg):
    return [h['type'] if isinstance(h, dict) else type(h).__name__ for h in cfg.custom_hooks]


def test_train_tool_adds_the_hook_once():
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')]))
    assert add_training_hooks(cfg) == ['RNGStateHook', 'FiniteLossHook']
    assert names(cfg) == ['EMAHook', 'RNGStateHook', 'FiniteLossHook']
    assert add_training_hooks(cfg) == []  # a second call adds nothing
    assert names(cfg).count('FiniteLossHook') == 1
    # Listed by the config (plain or scoped name, or an instance): not added again.
    for listed in (dict(type='FiniteLossHook', check_grad_norm=False),
                   dict(type='mmseg.FiniteLossHook'), FiniteLossHook()):
        cfg = Config(dict(custom_hooks=[listed]))
        assert add_training_hooks(cfg) == ['RNGStateHook']
        assert len(cfg.custom_hooks) == 2
    cfg = Config(dict())
    add_training_hooks(cfg)
    assert names(cfg) == ['RNGStateHook', 'FiniteLossHook']


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_train_tool_switches_it_off():
    logger = MMLogger.get_current_instance()
    records = _Records()
    logger.addHandler(records)
    try:
        cfg = Config(dict(custom_hooks=[dict(type='FiniteLossHook')]))
        assert add_training_hooks(cfg, finite_check=False) == ['RNGStateHook']
        assert names(cfg) == ['RNGStateHook']  # the config's hook is removed as well
        assert any('off (--no-finite-check)' in m for m in records.lines), records.lines
        cfg = Config(dict(finite_check=False))
        add_training_hooks(cfg)
        assert names(cfg) == ['RNGStateHook']
        assert any('off (finite_check=False)' in m for m in records.lines), records.lines
    finally:
        logger.removeHandler(records)
