"""ShuffleMamba ImageNet classifiers in timm's model registry (``TIMM_ARCHS``), built
with ``timm.create_model(name, num_classes=..., ...)`` once ``mmplugin_shufflemamba`` is
imported. Their state dict is the official checkpoint layout (``head.*`` included); no
weights were released, so ``pretrained=True`` needs ``pretrained_cfg_overlay=dict(
file=PATH)`` (read with this package's loader). See docs/pretraining.md#timm.
"""
from typing import Any, Dict, Optional, Union

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, register_model

from ..backbones.encoder import ShuffleMambaEncoder
from ..backbones.official_init import official_init
from ..backbones.shuffle_mamba_checks import reject_args, token_layout
from ...errors import ArgumentValueError
from ..layers.arg_checks import check_choice, check_int

#: Factory name -> ShuffleMamba arguments of the official ImageNet models
#: (``models_shuffle.py`` / ``models_reg.py``).
TIMM_ARCHS: Dict[str, Dict[str, Any]] = {
    'shufflemamba_m_patch16_224': dict(
        arch='m', with_cls_token=True, norm_cfg=dict(type='LN', eps=1e-5)),
    'shufflemamba_b_patch16_224': dict(
        arch='b', with_cls_token=True, norm_cfg=dict(type='RMSNorm', eps=1e-5)),
    'shufflemamba_l1_patch16_224': dict(
        arch='l1', with_cls_token=True, norm_cfg=dict(type='RMSNorm', eps=1e-5)),
    'shufflemamba_reg_b_patch16_224': dict(
        arch='b', num_registers=12, cls_reduce=4, norm_cfg=dict(type='RMSNorm', eps=1e-5)),
    'shufflemamba_reg_l2_patch16_224': dict(
        arch='l2', num_registers=16, cls_reduce=8, norm_cfg=dict(type='RMSNorm', eps=1e-5)),
}


class ShuffleMambaClassifier(ShuffleMambaEncoder):
    """A ShuffleMamba ImageNet classifier (the encoder plus a linear ``head``) with
    timm's conventions.

    Args:
        num_classes (int): classes of ``head``; 0 gives no head. Defaults to 1000.
        in_chans (int): input channels (timm's ``in_channels``). Defaults to 3.
        drop_rate (float): dropout after the position embedding (the official models
            have no head dropout). Defaults to 0.
        with_cls_token (bool): one cls token in front (plain models).
            Defaults to False.
        num_registers (int): R register tokens (Reg models); one of the two.
            Defaults to 0.
        cls_reduce (int): the registers' reduction (Reg models). Defaults to 1.
        shuffle_cls (bool): whether SLWS moves the classification tokens.
            Defaults to True.
        weight_init (str): 'official': as the official model from scratch
            (:func:`~..backbones.official_init.official_init`, ``models_shuffle.py`` with
            a cls token, ``models_reg.py`` with registers); 'default': the backbone's
            own (docs/backbone.md, "Initialisation"). Defaults to 'official'.
        **kwargs: the encoder's arguments, see
            :class:`~..backbones.encoder.ShuffleMambaEncoder`, except ``init_cfg``
            (use :meth:`load_pretrained`) and ``final_norm`` (always built).
    """

    #: the head is loaded separately by :meth:`load_pretrained`
    NOT_PRETRAINED = ('head', )
    #: a classifier always reads its classification feature (as ``ShuffleMamba``'s
    #: ``out_cls=True``)
    out_cls = True
    #: arguments of the dense backbone, and what a classifier does instead
    DENSE_ONLY_ARGS = {
        'out_indices': 'a classifier returns logits (forward_features gives the tokens)',
        'out_type': 'a classifier returns logits (forward_features gives the tokens)',
        'out_cls': 'a classifier always pools its classification tokens',
        'final_norm': 'a classifier always applies its final norm',
        'init_cfg': 'load weights with load_pretrained() or timm\'s pretrained_cfg_overlay',
        'tokens': 'pass with_cls_token or num_registers',
        'in_channels': "timm's name is in_chans, not in_channels: pass in_chans=C",
    }

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, drop_rate: float = 0.0,
                 with_cls_token: bool = False, num_registers: int = 0, cls_reduce: int = 1,
                 shuffle_cls: bool = True, weight_init: str = 'official', **kwargs):
        reject_args(ShuffleMambaClassifier, kwargs, self.DENSE_ONLY_ARGS)
        check_int('num_classes', num_classes, 0, hint='0 gives no head (features only)')
        check_int('in_chans', in_chans, 1, hint='image channels, 3 for RGB')
        tokens = token_layout(with_cls_token, num_registers)
        if not tokens.num_extra:
            raise ArgumentValueError('a classifier needs classification tokens: '
                                     'with_cls_token=True (plain models) or num_registers=R '
                                     '(Reg models).')
        super().__init__(in_channels=in_chans, drop_rate=drop_rate, tokens=tokens,
                         cls_reduce=cls_reduce, shuffle_cls=shuffle_cls, final_norm=True,
                         **kwargs)
        self.num_features = self.cls_feature_dims
        self._build_head(num_classes, init=False)
        check_choice('weight_init', weight_init, ('official', 'default'))
        self.reset_parameters()
        if weight_init == 'official':
            official_init(self, 'reg' if num_registers else 'shufflemamba')
        self._init_head()

    def _build_head(self, num_classes: int, init: bool = True) -> None:
        self.num_classes = int(num_classes)
        self.head = nn.Linear(self.num_features, self.num_classes) \
            if self.num_classes > 0 else nn.Identity()
        if init:
            self._init_head()

    def _init_head(self) -> None:
        # Official classifiers: trunc_normal(0.02) weights, zero bias.
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    @torch.jit.ignore
    def no_weight_decay(self):
        """The marked ``_no_weight_decay`` parameters that timm would decay: position
        embeddings and cls / register tokens (timm exempts 1-D parameters itself). The
        blocks' ``A_log`` / ``A_b_log`` are left out, as in the official recipe."""
        return {name for name, p in self.named_parameters()
                if getattr(p, '_no_weight_decay', False) and p.ndim > 1
                and not name.startswith('layers.')}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """timm's layer-wise lr decay groups: embeddings, one per block, the final norm
        (and Reg's neck) with the last block."""
        return dict(
            stem=r'^cls_token|^pos_embed|^patch_embed',
            blocks=[(r'^layers\.(\d+)', None), (r'^norm_f|^neck|^norm_neck', (99999, ))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.with_cp = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool not in (None, 'token'):
            raise ArgumentValueError("ShuffleMamba classifiers pool their classification tokens "
                                     "(global_pool='token'); other pooling is not supported.")
        self._build_head(check_int('num_classes', num_classes, 0,
                                   hint='0 gives no head (features only)'))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> final-normed tokens (B, L, D) (:meth:`forward_tokens`)."""
        return self.forward_tokens(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens from :meth:`forward_features` -> classification feature -> logits."""
        x = self.cls_feature(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, checkpoint: Union[str, dict], use_ema: bool = False,
                        ckpt_format: str = 'auto',
                        allow_nonfinite: bool = False) -> Dict[str, object]:
        """Load an ImageNet checkpoint (a file, or a checkpoint / state dict in memory)
        with this package's loader: the backbone part strictly (position embedding
        resized), the head when the checkpoint has one of this shape (else logged).
        NaN / inf weights are refused unless ``allow_nonfinite``."""
        from mmengine.logging import print_log

        from ...checkpoint import load_backbone_state, read_weights
        from ...checkpoint.loading import loaded_message
        w = read_weights(checkpoint, use_ema=use_ema, ckpt_format=ckpt_format,
                         allow_nonfinite=allow_nonfinite)
        sd, checkpoint = w.state_dict, w.source
        summary = load_backbone_state(self, sd, w.entry, w.format, checkpoint,
                                      allow_nonfinite, w.grid, log=False)
        head = {k[len('head.'):]: v for k, v in sd.items() if k.startswith('head.')}
        own = self.head.state_dict()
        fits = bool(head and own) and all(k in head and head[k].shape == v.shape
                                          for k, v in own.items())
        if fits:
            self.head.load_state_dict({k: head[k] for k in own})
        loaded_head = ['head.' + k for k in own] if fits else []
        summary = dict(summary, dropped=[k for k in summary['dropped'] if k not in loaded_head])
        message = loaded_message(self, summary, checkpoint, loaded_head)
        if not fits:
            message += (f'; the head is not loaded (checkpoint head '
                        f'{ {k: tuple(v.shape) for k, v in head.items()} }, model head '
                        f'{ {k: tuple(v.shape) for k, v in own.items()} })')
        print_log(message, logger='current')
        return summary


def _create(name: str, pretrained: bool = False, **kwargs) -> ShuffleMambaClassifier:
    pretrained_cfg = kwargs.pop('pretrained_cfg', None) or dict(
        url='', file=None, num_classes=1000, input_size=(3, 224, 224), pool_size=None,
        # the recipes' test crops: 0.875 (DeiT's), 1.0 for Mamba-Reg's last stage
        crop_pct=1.0 if TIMM_ARCHS[name].get('num_registers') else 0.875,
        interpolation='bicubic', fixed_input_size=False,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv='patch_embed.proj', classifier='head', custom_load=True,
        architecture=name, license='apache-2.0')
    overlay, cache_dir, device, dtype = (kwargs.pop(k, None) for k in (
        'pretrained_cfg_overlay', 'cache_dir', 'device', 'dtype'))
    # The overlay's file or state dict is read by this package's loader (timm's resets
    # custom_load when an overlay gives weights, and its generic loader drops heads of
    # another num_classes than pretrained_cfg's and fails on resized pos_embed and the
    # other layouts).
    weights = next((overlay[k] for k in ('file', 'state_dict')
                    if overlay and overlay.get(k)), None)
    if pretrained and weights is None:
        raise RuntimeError(
            f'{name}: no ShuffleMamba ImageNet weights were ever released, so '
            'pretrained=True needs your own checkpoint: '
            "pretrained_cfg_overlay=dict(file='PATH') (any layout this package reads), "
            "or checkpoint_path='PATH' for a file of exactly this model (timm's loader, "
            'which takes the EMA weights of a file that has them). Pretrain one '
            'with configs/pretrain (see README).')
    for key, why in (('features_only', 'use the mmseg / mmdet backbones ShuffleMamba '
                      '(out_indices) or ShuffleMambaAdapter for feature maps'),
                     ('global_pool', "the classifiers pool their cls / register tokens "
                      "(global_pool='token' only)")):
        if kwargs.get(key) not in (None, False, 'token'):
            raise ArgumentValueError(f'{name}: {key}={kwargs[key]!r} is not supported: {why}.')
        kwargs.pop(key, None)
    load_kw = {k: kwargs.pop(k) for k in ('ckpt_format', 'use_ema', 'allow_nonfinite')
               if k in kwargs}
    if load_kw and not (pretrained and weights is not None):
        raise ArgumentValueError(f'{name}: {sorted(load_kw)} apply to the weights of '
                                 "pretrained=True, pretrained_cfg_overlay=dict(file='PATH') or "
                                 'dict(state_dict=...).')
    if overlay and 'state_dict' in overlay:  # (timm would keep a deep copy of it)
        overlay = {k: v for k, v in overlay.items() if k != 'state_dict'}
    model = build_model_with_cfg(ShuffleMambaClassifier, name, False,
                                 pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=overlay, cache_dir=cache_dir,
                                 **dict(TIMM_ARCHS[name], **kwargs))
    if pretrained:
        model.load_pretrained(weights, **load_kw)
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


def _register(name: str):
    def factory(pretrained: bool = False, **kwargs) -> ShuffleMambaClassifier:
        return _create(name, pretrained, **kwargs)
    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = __name__
    factory.__doc__ = f'ShuffleMamba classifier {name}: {TIMM_ARCHS[name]}.'
    return register_model(factory)


for _name in TIMM_ARCHS:
    globals()[_name] = _register(_name)

__all__ = ['ShuffleMambaClassifier', 'TIMM_ARCHS'] + list(TIMM_ARCHS)
