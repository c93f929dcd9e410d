"""The backbone's Pretrained loader refuses weights holding NaN / inf (a diverged run's
checkpoint), says how many tensors and which, and loads them only when asked."""
import argparse
import logging

import pytest
import torch
from mmengine.logging import MMLogger

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.checkpoint import (CheckpointError, check_finite,
                                              load_into_backbone,
                                              load_pretrained_backbone,
                                              nonfinite_tensors,
                                              read_backbone_weights)

from helpers.official_reference import make_official_state_dict


def backbone(**init):
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=3), img_size=64, patch_size=16,
                     out_indices=(0, 1, 2),
                     init_cfg=dict(type='Pretrained', **init) if init else None)
    return m


def save(path, sd, ema=None):
    torch.save(dict(model=sd, model_ema=ema, epoch=1,
                    args=argparse.Namespace(model='mambar_base_patch16_224')), path)
    return str(path)


def poisoned(n_nan=None, inf_keys=()):
    """An official state dict with NaN in ``n_nan`` tensors (all floating ones by
    default) and inf in ``inf_keys``."""
    sd = make_official_state_dict(seed=1)
    floats = [k for k, v in sd.items() if v.is_floating_point()]
    for k in floats[:len(floats) if n_nan is None else n_nan]:
        sd[k] = sd[k].clone()
        sd[k].view(-1)[0] = float('nan')
    for k in inf_keys:
        sd[k] = sd[k].clone()
        sd[k].view(-1)[-1] = float('inf')
    return sd


def test_nonfinite_tensors_names_nan_and_inf():
    sd = dict(a=torch.tensor([1.0, float('nan')]), b=torch.tensor([float('inf')]),
              c=torch.tensor([float('nan'), float('-inf')]), d=torch.ones(2),
              i=torch.tensor([1, 2]), e=torch.empty(0))
    assert nonfinite_tensors(sd) == dict(a='NaN', b='inf', c='NaN and inf')


def test_pretrained_with_nan_is_refused(tmp_path):
    sd = poisoned()
    path = save(tmp_path / 'diverged.pth', sd)
    m = backbone(checkpoint=path)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        m.init_weights()
    msg = str(e.value)
    floats = sum(v.is_floating_point() for v in sd.values())
    assert f'{floats} of {len(sd)} tensors hold NaN/inf values' in msg, msg
    assert 'diverged.pth' in msg and "entry 'model'" in msg
    assert 'patch_embed.proj.weight (NaN)' in msg or 'cls_token (NaN)' in msg, msg
    assert 'more' in msg and 'diverged' in msg and 'allow_nonfinite=True' in msg
    assert 'Loaded' not in msg
    # nothing was loaded
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_single_inf_tensor_is_enough(tmp_path):
    path = save(tmp_path / 'inf.pth', poisoned(0, inf_keys=['layers.1.mixer.A_log']))
    with pytest.raises(CheckpointError, match=r'1 of \d+ tensors hold NaN/inf values: '
                       r'layers\.1\.mixer\.A_log \(inf\)'):
        load_pretrained_backbone(backbone(), path)
    with pytest.raises(CheckpointError, match='NaN/inf'):
        read_backbone_weights(path)


class _Records(logging.Handler):

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_allow_nonfinite_loads_and_warns(tmp_path):
    path = save(tmp_path / 'diverged.pth', poisoned(2))
    m = backbone(checkpoint=path, allow_nonfinite=True)
    logger = MMLogger.get_current_instance()
    records = _Records()
    logger.addHandler(records)
    try:
        m.init_weights()  # the init_cfg key reaches the loader
    finally:
        logger.removeHandler(records)
    assert sum('loading 2 tensors with NaN/inf values as asked (allow_nonfinite=True)' in r
               for r in records.lines) == 1, records.lines  # said once, not per stage
    assert sum(not bool(torch.isfinite(v).all()) for v in m.state_dict().values()) == 2


def test_ema_weights_are_checked_on_their_own(tmp_path):
    """The raw weights diverged, the EMA ones did not: use_ema=True loads."""
    path = save(tmp_path / 'ema.pth', poisoned(), ema=make_official_state_dict(seed=2))
    with pytest.raises(CheckpointError, match='NaN/inf'):
        load_pretrained_backbone(backbone(), path)
    assert load_pretrained_backbone(backbone(), path, use_ema=True)['entry'] == 'model_ema'


def test_load_into_backbone_checks_converted_weights():
    m = backbone()
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    sd['pos_embed'][0, 0, 0] = float('nan')
    summary = dict(dropped=[], format='mmplugin')
    with pytest.raises(CheckpointError, match=r"<converted>: 1 of \d+ tensors hold NaN/inf "
                       r'values: pos_embed \(NaN\)'):
        load_into_backbone(m, sd, summary, '<converted>')
    assert load_into_backbone(m, sd, summary, '<converted>', allow_nonfinite=True)['loaded']


def test_check_finite_passes_finite_state_dicts():
    assert check_finite(make_official_state_dict(seed=3)) == {}


def test_convert_tool_refuses_nan_and_names_its_flag(tmp_path):
    from helpers.tools_convert import convert_main
    path = save(tmp_path / 'diverged.pth', poisoned(2))
    out = tmp_path / 'out.pth'
    with pytest.raises(CheckpointError, match=r'2 of \d+ tensors hold NaN/inf.*'
                       r'--allow-nonfinite loads it anyway'):
        convert_main([path, str(out)])
    assert not out.exists()
    convert_main([path, str(out), '--allow-nonfinite'])
    converted = torch.load(str(out), weights_only=False)['state_dict']
    assert sum(not bool(torch.isfinite(v).all()) for v in converted.values()
               if v.is_floating_point()) == 2


def test_timm_classifier_load_pretrained_refuses_nan(tmp_path):
    from mmplugin_shufflemamba.models.classifiers import ShuffleMambaClassifier
    path = save(tmp_path / 'diverged.pth', poisoned(1))
    model = ShuffleMambaClassifier(num_classes=10, arch=dict(embed_dims=32, num_layers=3),
                                   img_size=64, with_cls_token=True)
    with pytest.raises(CheckpointError, match='NaN/inf'):
        model.load_pretrained(path)
    model.load_pretrained(path, allow_nonfinite=True)
    assert sum(not bool(torch.isfinite(v).all()) for v in model.state_dict().values()
               if v.is_floating_point()) == 1
    import timm  # the refusal's "allow_nonfinite=True" works through create_model too
    kw = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=10,
              arch=dict(embed_dims=32, num_layers=3), img_size=64)
    with pytest.raises(CheckpointError, match='allow_nonfinite=True loads it anyway'):
        timm.create_model('shufflemamba_m_patch16_224', **kw)
    model = timm.create_model('shufflemamba_m_patch16_224', allow_nonfinite=True, **kw)
    assert sum(not bool(torch.isfinite(v).all()) for v in model.state_dict().values()
               if v.is_floating_point()) == 1


def test_videomamba_out_proj_doubles_exactly_past_the_fp16_maximum(tmp_path):
    """A VideoMamba file's out_proj doubles in the conversion: a finite fp16 value near
    the fp16 maximum is doubled in float32, exactly, not made inf."""
    sd = {k: v.half() for k, v in make_official_state_dict(seed=1).items()}
    sd['layers.1.mixer.out_proj.weight'][0, 0] = 40000.0
    path = str(tmp_path / 'videomamba.pth')
    torch.save(dict(model=sd, args=argparse.Namespace(model='videomamba_middle')), path)
    m = backbone()
    load_pretrained_backbone(m, path)
    assert m.layers[1].mixer.out_proj.weight[0, 0] == 80000.0
    ref = sd['layers.0.mixer.out_proj.weight'].float() * 2
    assert torch.equal(m.layers[0].mixer.out_proj.weight, ref)


def test_a_weight_past_the_models_dtype_is_refused_with_the_cast_to_make(tmp_path):
    """The same file into a float16 model: the doubled 80000 does not fit float16. Refused
    (not loaded as inf), naming the fix; the float32 load above is the control."""
    sd = {k: v.half() for k, v in make_official_state_dict(seed=1).items()}
    sd['layers.1.mixer.out_proj.weight'][0, 0] = 40000.0
    path = str(tmp_path / 'videomamba.pth')
    torch.save(dict(model=sd, args=argparse.Namespace(model='videomamba_middle')), path)
    m = backbone().half()
    with pytest.raises(CheckpointError, match=r'layers\.1\.mixer\.out_proj\.weight \(inf\)'
                       r".*exceed the range of the model's own dtype.*Keep the model in float32"):
        load_pretrained_backbone(m, path)
    m = backbone().half()
    load_pretrained_backbone(m, path, allow_nonfinite=True)  # as asked: loaded, logged
    assert torch.isinf(m.layers[1].mixer.out_proj.weight[0, 0])


def at96():
    return ShuffleMamba(arch=dict(embed_dims=32, num_layers=3), img_size=96, patch_size=16,
                        out_indices=(0, 1, 2))


@pytest.mark.parametrize('prefix', ['', 'module.'])
def test_what_the_conversion_makes_non_finite_is_refused_or_warned_about(tmp_path, prefix):
    """An fp16 position embedding resized to another grid (bicubic overshoots) past the
    fp16 maximum: finite in the file, inf after the conversion. Refused saying so, also
    when the file's keys carry a wrapper prefix; with allow_nonfinite the warning names
    it (the file itself held no NaN / inf to warn about when read)."""
    from helpers.logs import captured_log
    sd = {k: v.half() for k, v in make_official_state_dict(seed=1).items()}
    pos = sd['pos_embed']
    checker = (torch.arange(pos.shape[1] - 1) % 2 * 2 - 1).to(pos.dtype) * 65000
    sd['pos_embed'] = torch.cat([pos[:, :1], checker[None, :, None].expand(
        1, -1, pos.shape[2])], dim=1)
    sd = {prefix + k: v for k, v in sd.items()}
    path = str(tmp_path / 'fp16.pth')
    torch.save(dict(model=sd, args=argparse.Namespace(model='shufflemamba_middle')), path)
    with pytest.raises(CheckpointError, match=r'pos_embed \(inf\)'
                       r".*The file's values are finite: the conversion .* made them "
                       r'overflow.*Cast the checkpoint to float32') as e:
        load_pretrained_backbone(at96(), path)
    assert 'diverged' not in str(e.value)
    m = at96()
    with captured_log() as lines:
        load_pretrained_backbone(m, path, allow_nonfinite=True)
    assert sum("loading 1 tensors with NaN/inf values as asked (allow_nonfinite=True): "
               "['pos_embed']" in line for line in lines) == 1, lines
    assert not bool(torch.isfinite(m.pos_embed).all())
