"""Published ImageNet layouts load through ``load_state_dict`` and MMEngine's
``load_checkpoint`` / ``PretrainedInit`` as they are (the backbone's pre-hook), with the
same result as this package's loader; the module's own layout passes untouched; a file
that could be read two ways is an error asking which."""
import argparse

import pytest
import torch
import torch.nn as nn
from mmengine.runner import load_checkpoint

from helpers.logs import captured_log
from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.checkpoint import CheckpointError, load_pretrained_backbone
from mmplugin_shufflemamba.checkpoint.safe_load import enable_mmengine_checkpoints

ARCH = dict(embed_dims=32, num_layers=2)


def published(num_registers=0, with_cls_token=True, seed=0):
    """An official-layout classifier state dict (grid 4x4) with a head."""
    torch.manual_seed(seed)
    src = ShuffleMamba(arch=ARCH, img_size=64, with_cls_token=with_cls_token,
                       num_registers=num_registers, kernel='torch')
    for p in src.parameters():
        nn.init.normal_(p, std=0.1)
    sd = dict(src.state_dict())
    sd['head.weight'], sd['head.bias'] = torch.randn(10, 32), torch.randn(10)
    return sd


def target(**kw):
    return ShuffleMamba(arch=ARCH, img_size=kw.pop('img_size', 128), kernel='torch', **kw)


def test_official_training_file_loads_with_mmengine_load_checkpoint(tmp_path):
    enable_mmengine_checkpoints()  # Namespace args: the tools and configs opt in
    path = str(tmp_path / 'checkpoint.pth')
    torch.save(dict(model=published(), model_ema=None, epoch=3,
                    args=argparse.Namespace(model='mambar_tiny_patch16_224')), path)
    via_mmengine = target()
    load_checkpoint(via_mmengine, path, strict=True)
    via_plugin = target()
    load_pretrained_backbone(via_plugin, path)
    ours = via_plugin.state_dict()
    for k, v in via_mmengine.state_dict().items():
        torch.testing.assert_close(v, ours[k], rtol=0, atol=0, msg=k)
    assert via_mmengine.pos_embed.shape == (1, 64, 32)  # 4x4 grid resized to 8x8


def test_register_layout_under_a_prefix_drops_tokens_and_head():
    sd = published(num_registers=4, with_cls_token=False)

    class Segmentor(nn.Module):

        def __init__(self):
            super().__init__()
            self.backbone = target(img_size=64)

    seg = Segmentor()
    result = seg.load_state_dict({'backbone.' + k: v for k, v in sd.items()}, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    torch.testing.assert_close(seg.backbone.pos_embed, sd['pos_embed'])
    torch.testing.assert_close(seg.backbone.layers[1].mixer.A_log, sd['layers.1.mixer.A_log'])
    kept = target(img_size=64, num_registers=4)
    kept.load_state_dict(sd, strict=True)  # registers kept when the model has them
    torch.testing.assert_close(kept.cls_token, sd['cls_token'])


def test_own_layout_passes_untouched(monkeypatch):
    from mmplugin_shufflemamba.checkpoint import loading as checkpoint
    calls = []
    monkeypatch.setattr(checkpoint, 'convert_to_backbone',
                        lambda *a, **k: calls.append(1))
    m, other = target(), target()
    m.load_state_dict(other.state_dict(), strict=True)
    assert calls == []
    for k, v in other.state_dict().items():
        assert torch.equal(m.state_dict()[k], v), k


def test_one_cls_token_without_evidence_asks_for_the_format():
    with pytest.raises(CheckpointError, match="cannot tell where the cls token sits.*"
                       "ckpt_format='shufflemamba'"):
        target().load_state_dict(published(), strict=True)


def test_a_training_file_naming_vim_is_read_as_vim_even_with_the_modules_shapes():
    """A Vim file has the shapes of a cls-first module's own layout (cls_token (1, 1, D),
    pos_embed (1, N + 1, D)): its args.model decides, not the shapes."""
    sd = {k: v for k, v in published().items() if not k.startswith('head.')}
    ckpt = dict(model=sd, model_ema=None,
                args=argparse.Namespace(model='vim_tiny_patch16_224_bimambav2_midclstok'))
    with pytest.raises(CheckpointError, match="a 'vim' checkpoint's cls token sits in the "
                       'middle of the sequence; with_cls_token=True puts it first'):
        target(img_size=64, with_cls_token=True).load_state_dict(ckpt, strict=True)
    via_hook = target(img_size=64, num_registers=1)
    via_hook.load_state_dict(ckpt, strict=True)
    via_plugin = target(img_size=64, num_registers=1)
    load_pretrained_backbone(via_plugin, ckpt)
    ours = via_plugin.state_dict()
    for k, v in via_hook.state_dict().items():
        torch.testing.assert_close(v, ours[k], rtol=0, atol=0, msg=k)
    # the patch positions around Vim's middle token (grid 4x4: at 8) are kept in order
    torch.testing.assert_close(via_hook.pos_embed[0], torch.cat(
        [sd['pos_embed'][0, :8], sd['pos_embed'][0, 9:]]), rtol=0, atol=0)


def test_a_training_file_that_reads_two_ways_says_so_through_load_state_dict():
    a, b = published(seed=1), published(seed=2)
    ckpt = dict(model=a, state_dict=b, args=argparse.Namespace(model='mambar_base_patch16_224'))
    with pytest.raises(CheckpointError, match='^loading into ShuffleMamba: the checkpoint holds '
                       'two different sets of weights'):
        target().load_state_dict(ckpt, strict=True)


def test_a_classifier_reads_its_own_training_file_whole_with_its_head(tmp_path):
    """The official layout is the timm classifier's own: a training file naming a
    cls-first model loads as it is, head included (not converted to a backbone)."""
    import timm
    kw = dict(arch=ARCH, img_size=64, num_classes=10)
    src = timm.create_model('shufflemamba_m_patch16_224', **kw)
    ckpt = dict(model=src.state_dict(), model_ema=None,
                args=argparse.Namespace(model='shufflemamba_m_patch16_224'))
    torch.save(ckpt, tmp_path / 'clf.pth')
    for load in (lambda m: m.load_state_dict(ckpt, strict=True),
                 lambda m: load_checkpoint(m, str(tmp_path / 'clf.pth'), strict=True)):
        enable_mmengine_checkpoints()
        m = timm.create_model('shufflemamba_m_patch16_224', **kw)
        load(m)
        for k, v in src.state_dict().items():
            assert torch.equal(m.state_dict()[k], v), k


def test_a_state_dict_with_stray_values_is_left_to_torch_and_extra_state_loads():
    """Only a dict with a checkpoint's entries (model, state_dict, meta, args, ...) is
    read as a whole checkpoint: a stray non-tensor value is torch's unexpected key
    (strictness stays the caller's), and a non-tensor extra state loads as it is."""
    m = target()
    result = m.load_state_dict(dict(m.state_dict(), note='x'), strict=False)
    assert result.unexpected_keys == ['note']

    class WithExtra(ShuffleMamba):

        def get_extra_state(self):
            return {'steps': 3}

        def set_extra_state(self, state):
            self.loaded_extra = state

    m = WithExtra(arch=ARCH, img_size=64, kernel='torch')
    m.load_state_dict(m.state_dict(), strict=True)
    assert m.loaded_extra == {'steps': 3}


def test_another_width_is_left_to_the_loaders_report():
    sd = published()
    sd = {k: v for k, v in sd.items() if not k.startswith('head.')}
    with pytest.raises(RuntimeError, match='size mismatch'):
        ShuffleMamba(arch=dict(embed_dims=48, num_layers=2), img_size=64,
                     with_cls_token=True, kernel='torch').load_state_dict(sd)


def run_fresh(code: str) -> None:
    """Run ``code`` in a fresh interpreter (process-wide state); it prints OK."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, '-c', code + 'print("OK")\n'], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0 and 'OK' in run.stdout, run.stderr[-2000:]


def test_importing_the_package_changes_nothing_process_wide():
    """Only mmplugin_shufflemamba.compat (or the tools) opt into the allow-list and the
    local-file loader for MMEngine."""
    run_fresh(
        'import torch, argparse\n'
        'from mmengine.runner.checkpoint import CheckpointLoader\n'
        'from mmengine.logging.history_buffer import HistoryBuffer\n'
        'local = CheckpointLoader._schemes[""]\n'
        'import mmplugin_shufflemamba, mmplugin_shufflemamba.datasets\n'
        'allowed = torch.serialization.get_safe_globals()\n'
        'assert argparse.Namespace not in allowed and HistoryBuffer not in allowed\n'
        'assert CheckpointLoader._schemes[""] is local\n'
        'import mmplugin_shufflemamba.compat\n'
        'assert argparse.Namespace in torch.serialization.get_safe_globals()\n'
        'assert CheckpointLoader._schemes[""] is not local\n')


def test_plugin_reads_leave_the_allow_list_as_they_found_it(tmp_path):
    """A read by the plugin's safe loader neither leaks its allow-list into a process
    that did not opt in nor removes it from one that did (torch's own ``safe_globals``
    context removes its globals on exit): after ``compat``, a plain ``torch.load`` of an
    official training file keeps working whatever the plugin loaded in between."""
    path = tmp_path / 'checkpoint.pth'
    torch.save({'model': published(), 'model_ema': None,
                'args': argparse.Namespace(model='mambar_base_patch16_224')}, path)
    run_fresh(
        'import argparse, torch\n'
        'from mmplugin_shufflemamba.checkpoint.safe_load import safe_torch_load\n'
        f'path = {str(path)!r}\n'
        'assert safe_torch_load(path)["args"].model == "mambar_base_patch16_224"\n'
        'assert argparse.Namespace not in torch.serialization.get_safe_globals()\n'
        'import mmplugin_shufflemamba.compat\n'
        'before = list(torch.serialization.get_safe_globals())\n'
        'safe_torch_load(path)\n'
        'assert set(torch.serialization.get_safe_globals()) == set(before)\n'
        'assert torch.load(path)["args"].model == "mambar_base_patch16_224"\n')


def test_allow_list_entries_added_during_a_read_are_kept():
    """What another library allows while the plugin's context is open stays allowed;
    what the context added is gone (a process that never opted in)."""
    from mmplugin_shufflemamba.checkpoint.safe_load import checkpoint_safe_globals

    class Other:
        pass

    before = list(torch.serialization.get_safe_globals())
    try:
        with checkpoint_safe_globals():
            torch.serialization.add_safe_globals([Other])
        after = set(torch.serialization.get_safe_globals())
        assert Other in after and after - {Other} == set(before)
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(before)


@pytest.mark.parametrize('file_norm,model_norm,fix', [
    ('LN', 'RMSNorm', "norm_cfg=dict(type='LN', eps=1e-5)"),
    ('RMSNorm', 'LN', "norm_cfg=dict(type='RMSNorm', eps=1e-5)")])
def test_a_published_file_of_the_other_norm_is_refused_even_non_strict(
        tmp_path, file_norm, model_norm, fix):
    """Non-strict loading (MMEngine's load_checkpoint default, PretrainedInit) would
    only log the norm biases as missing or unexpected and leave LayerNorms with their
    initial biases: the pre-hook refuses it with the norm_cfg to set."""
    enable_mmengine_checkpoints()
    torch.manual_seed(0)
    src = ShuffleMamba(arch=ARCH, img_size=64, with_cls_token=True, kernel='torch',
                       norm_cfg=dict(type=file_norm))
    path = str(tmp_path / 'checkpoint.pth')
    torch.save(dict(model=src.state_dict(), model_ema=None,
                    args=argparse.Namespace(model='mambar_tiny_patch16_224')), path)
    with pytest.raises(CheckpointError, match=r'norm mismatch.*set ' + fix.replace(
            '(', r'\(').replace(')', r'\)')):
        load_checkpoint(target(norm_cfg=dict(type=model_norm)), path, strict=False)
    load_checkpoint(target(norm_cfg=dict(type=file_norm)), path, strict=False)
    # the module's own layout too (a converted file, a segmentor's backbone) ...
    own = ShuffleMamba(arch=ARCH, img_size=64, kernel='torch', norm_cfg=dict(type=file_norm))
    with pytest.raises(CheckpointError, match='norm mismatch'):
        target(img_size=64, norm_cfg=dict(type=model_norm)).load_state_dict(
            own.state_dict(), strict=False)
    later = {k: v for k, v in own.state_dict().items() if not k.startswith('layers.0.')}
    with pytest.raises(CheckpointError, match='norm mismatch'):  # (any block tells)
        target(img_size=64, norm_cfg=dict(type=model_norm)).load_state_dict(
            later, strict=False)
    # ... but a state dict without block norms says nothing of them: it loads
    part = {k: v for k, v in own.state_dict().items() if k.startswith('patch_embed.')}
    result = target(img_size=64, norm_cfg=dict(type=model_norm)).load_state_dict(
        part, strict=False)
    assert not result.unexpected_keys and 'layers.0.norm.weight' in result.missing_keys


@pytest.mark.parametrize('kind', ['raw', 'ema', 'bare'])
def test_testing_a_file_without_ema_weights_does_not_claim_to_test_ema(kind):
    """tools/test.py under a config with mmpretrain's EMAHook: a file without EMA weights
    (a training checkpoint without them, or a bare state dict) is evaluated as it is,
    and the hook does not log 'Start testing on EMA model'."""
    from types import SimpleNamespace

    from mmpretrain.engine.hooks import EMAHook

    from mmplugin_shufflemamba.checkpoint.runner import (BackboneLayoutHook,
                                                         EvaluateFileWeightsHook)
    model = target(img_size=64)
    ema = EMAHook(momentum=0.01)
    runner = SimpleNamespace(model=model, hooks=[ema], _load_from='weights.pth',
                             _resume=False)
    ema.before_run(runner)
    weights = {k: v + 1 for k, v in model.state_dict().items()}
    checkpoint = dict(weights) if kind == 'bare' else dict(state_dict=dict(weights))
    if kind == 'ema':
        checkpoint['ema_state_dict'] = {'module.' + k: v for k, v in weights.items()}
    with captured_log() as lines:
        EvaluateFileWeightsHook().after_load_checkpoint(runner, checkpoint)
        BackboneLayoutHook().after_load_checkpoint(runner, checkpoint)
    assert ema.evaluate_on_ema is (kind == 'ema')
    noted = "weights.pth has no EMA weights (no 'ema_state_dict'): EMAHook does not swap"
    assert sum(noted in line for line in lines) == (0 if kind == 'ema' else 1), lines
    # the hook reads the file's weights as MMEngine's loader will (a bare state dict as
    # its 'state_dict' entry): its EMA copy starts from them
    ema.after_load_checkpoint(runner, checkpoint)
    for k, v in ema.ema_model.module.state_dict().items():
        torch.testing.assert_close(v, weights[k], rtol=0, atol=0, msg=k)


@pytest.mark.parametrize('mode, what', [('load', 'load_from'), ('test', 'the checkpoint'),
                                        ('resume', '--resume / load_from')])
def test_an_empty_or_placeholder_load_from_is_named_as_such(mode, what):
    """The fit check of the tools names the setting that gave the file, not init_cfg."""
    from mmplugin_shufflemamba.checkpoint import check_checkpoint_fit
    model = target(img_size=64)
    with pytest.raises(CheckpointError) as e:
        check_checkpoint_fit(model, '', mode=mode)
    assert str(e.value) == f'{what} is empty: give the checkpoint file to load.'
    with pytest.raises(CheckpointError) as e:
        check_checkpoint_fit(model, 'path/to/iter_160000.pth', mode=mode)
    assert str(e.value) == (f"{what}='path/to/iter_160000.pth' is the documented "
                            'placeholder, not a file: set it to your checkpoint.')
