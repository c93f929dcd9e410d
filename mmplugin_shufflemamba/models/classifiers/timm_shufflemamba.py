"""ShuffleMamba ImageNet classifiers in timm's model registry.

``import mmplugin_shufflemamba`` registers::

    shufflemamba_m_patch16_224        32 x 576,  LayerNorm, one cls token in front
    shufflemamba_b_patch16_224        24 x 768,  RMSNorm,   one cls token in front
    shufflemamba_l1_patch16_224       40 x 1024, RMSNorm,   one cls token in front
    shufflemamba_reg_b_patch16_224    24 x 768,  RMSNorm,   12 registers, cls_reduce 4
    shufflemamba_reg_l2_patch16_224   48 x 1024, RMSNorm,   16 registers, cls_reduce 8

so that DeiT-style training scripts build them with ``timm.create_model(name,
num_classes=..., drop_path_rate=..., shuffle_rate=..., img_size=...)``. The model *is*
the encoder (:class:`~..backbones.encoder.ShuffleMambaEncoder` with its classification
tokens) plus a linear ``head``: its state dict is exactly the official checkpoint layout (keys and
shapes, ``head.*`` included), so what such a script saves under ``model`` loads into the
dense configs with ``init_cfg=dict(type='Pretrained', checkpoint=...)``.

No ShuffleMamba weights were ever released: ``pretrained=True`` needs a local file,
``pretrained_cfg_overlay=dict(file=PATH)`` (read with this package's loader: official,
timm-script, mmpretrain and MMEngine files, raw or EMA weights, position embedding
resized), or use ``checkpoint_path=PATH`` for a file of exactly this model.
"""
from typing import Any, Dict, Optional

import torch
import torch.nn as nn
from mmengine.model.weight_init import trunc_normal_

from ..backbones.encoder import ShuffleMambaEncoder
from ..backbones.shuffle_mamba_checks import reject_args, token_layout
from ..layers.arg_checks import check_int

try:
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    from timm.models import build_model_with_cfg, register_model
    HAS_TIMM = True
except ImportError:  # pragma: no cover - timm is a declared dependency
    HAS_TIMM = False

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
    """A ShuffleMamba ImageNet classifier with timm's conventions.

    Args:
        num_classes (int): classes of ``head``; 0 gives no head (features only).
            Defaults to 1000.
        in_chans (int): input channels (timm's name of ``in_channels``).
            Defaults to 3.
        drop_rate (float): dropout after the position embedding, as the official
            models (which have no head dropout). Defaults to 0.
        with_cls_token (bool): one cls token in front (plain models).
        num_registers (int): R register tokens (Reg models); one of the two.
        cls_reduce (int): the registers' reduction (Reg models). Defaults to 1.
        shuffle_cls (bool): whether SLWS moves the classification tokens.
            Defaults to True.
        **kwargs: the encoder's arguments (``arch``, ``img_size``, ``patch_size``,
            ``embed_dims``, ``num_layers``, ``drop_path_rate``, ``shuffle_rate``,
            ``norm_cfg``, ``kernel``, ...), see :class:`~..backbones.encoder.
            ShuffleMambaEncoder`, except ``init_cfg`` and ``final_norm``
            (:meth:`load_pretrained` loads weights; the final norm is always built).
    """

    #: the head is loaded separately by :meth:`load_pretrained`
    NOT_PRETRAINED = ('head', )
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
                 shuffle_cls: bool = True, **kwargs):
        reject_args('ShuffleMambaClassifier', kwargs, self.DENSE_ONLY_ARGS)
        check_int('num_classes', num_classes, 0, hint='0 gives no head (features only)')
        check_int('in_chans', in_chans, 1, hint='image channels, 3 for RGB')
        tokens = token_layout(with_cls_token, num_registers)
        if not tokens.num_extra:
            raise ValueError('a classifier needs classification tokens: with_cls_token=True '
                             '(plain models) or num_registers=R (Reg models).')
        super().__init__(in_channels=in_chans, drop_rate=drop_rate, tokens=tokens,
                         cls_reduce=cls_reduce, shuffle_cls=shuffle_cls, final_norm=True,
                         **kwargs)
        self.num_classes = int(num_classes)
        self.num_features = self.cls_feature_dims
        self.head = nn.Linear(self.num_features, self.num_classes) \
            if self.num_classes > 0 else nn.Identity()
        self.reset_parameters()
        self._init_head()

    def _init_head(self) -> None:
        # Official classifiers: trunc_normal(0.02) weights, zero bias.
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=0.02)
            nn.init.zeros_(self.head.bias)

    # -------------------------------------------------------------- timm interface
    @torch.jit.ignore
    def no_weight_decay(self):
        """The parameters marked ``_no_weight_decay`` that timm's optimizer factory would
        decay: the position embeddings and cls / register tokens (timm exempts every 1-D
        parameter itself: norms, biases, D). The blocks' ``A_log`` / ``A_b_log`` are
        marked too (as in mamba-ssm) but left out, as in the official recipe: its timm
        does not read the mark, so they are decayed."""
        return {name for name, p in self.named_parameters()
                if getattr(p, '_no_weight_decay', False) and p.ndim > 1
                and not name.startswith('layers.')}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        """Parameter groups for timm's layer-wise lr decay: the embeddings, one group
        per block, the final norm (and Reg's neck) with the last block."""
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
            raise ValueError("ShuffleMamba classifiers pool their classification tokens "
                             "(global_pool='token'); other pooling is not supported.")
        self.num_classes = check_int('num_classes', num_classes, 0,
                                     hint='0 gives no head (features only)')
        self.head = nn.Linear(self.num_features, self.num_classes) \
            if self.num_classes > 0 else nn.Identity()
        self._init_head()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> the final-normed token sequence (B, L, D), cls / register
        tokens included (SLWS in training)."""
        return self.forward_tokens(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens from :meth:`forward_features` -> classification feature -> logits."""
        x = self.cls_feature(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def load_pretrained(self, checkpoint: str, use_ema: bool = False,
                        ckpt_format: str = 'auto',
                        allow_nonfinite: bool = False) -> Dict[str, object]:
        """Load an ImageNet checkpoint with this package's loader: the backbone part
        strictly (position embedding resized to ``img_size``), the head when the
        checkpoint has one of this shape (else the head keeps its initialisation and
        the log says so). Weights holding NaN / inf are refused unless
        ``allow_nonfinite``."""
        from mmengine.logging import print_log

        from ...checkpoint import load_backbone_state, read_backbone_weights
        sd, entry, fmt = read_backbone_weights(checkpoint, use_ema=use_ema,
                                               ckpt_format=ckpt_format,
                                               allow_nonfinite=allow_nonfinite)
        summary = load_backbone_state(self, sd, entry, fmt, checkpoint, allow_nonfinite)
        head = {k[len('head.'):]: v for k, v in sd.items() if k.startswith('head.')}
        own = self.head.state_dict()
        if head and own and all(k in head and head[k].shape == v.shape
                                for k, v in own.items()):
            self.head.load_state_dict({k: head[k] for k in own})
            print_log(f'Loaded the classifier head of {checkpoint}', logger='current')
        else:
            print_log(f'{checkpoint}: head not loaded (checkpoint head '
                      f'{ {k: tuple(v.shape) for k, v in head.items()} }, model head '
                      f'{ {k: tuple(v.shape) for k, v in own.items()} }); it keeps its '
                      'initialisation', logger='current')
        return summary


def _default_cfg(name: str, **kwargs) -> Dict[str, Any]:
    return dict(
        url='', file=None, num_classes=1000, input_size=(3, 224, 224), pool_size=None,
        crop_pct=0.875, interpolation='bicubic', fixed_input_size=False,
        mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD,
        first_conv='patch_embed.proj', classifier='head', custom_load=True,
        architecture=name, license='apache-2.0', **kwargs)


def _create(name: str, pretrained: bool = False, **kwargs) -> ShuffleMambaClassifier:
    pretrained_cfg = kwargs.pop('pretrained_cfg', None) or _default_cfg(name)
    overlay = kwargs.pop('pretrained_cfg_overlay', None)
    cache_dir = kwargs.pop('cache_dir', None)
    device, dtype = kwargs.pop('device', None), kwargs.pop('dtype', None)
    if pretrained and not (overlay and (overlay.get('file') or overlay.get('state_dict'))):
        raise RuntimeError(
            f'{name}: no ShuffleMamba ImageNet weights were ever released, so '
            'pretrained=True needs your own checkpoint: '
            "pretrained_cfg_overlay=dict(file='PATH') (any layout this package reads), "
            "or checkpoint_path='PATH' for a file of exactly this model. Pretrain one "
            'with configs/pretrain (see README).')
    if overlay and overlay.get('file'):
        # timm (1.0.31) resets custom_load to False when an overlay supplies a weight
        # source, and its generic loader then drops a head of another num_classes and
        # fails on a resized pos_embed or any other layout: keep this package's loader.
        overlay = dict(overlay, custom_load=overlay.get('custom_load', True))
    model = build_model_with_cfg(ShuffleMambaClassifier, name, pretrained,
                                 pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=overlay, cache_dir=cache_dir,
                                 **dict(TIMM_ARCHS[name], **kwargs))
    if device is not None or dtype is not None:
        model = model.to(device=device, dtype=dtype)
    return model


if HAS_TIMM:
    def _register(name: str):
        def factory(pretrained: bool = False, **kwargs) -> ShuffleMambaClassifier:
            return _create(name, pretrained, **kwargs)
        factory.__name__ = name
        factory.__qualname__ = name
        factory.__module__ = __name__
        factory.__doc__ = f'ShuffleMamba classifier {name}: {TIMM_ARCHS[name]}.'
        return register_model(factory)

    for _name in TIMM_ARCHS:
        globals()[_name] = _register(_name)

__all__ = ['ShuffleMambaClassifier', 'TIMM_ARCHS'] + list(TIMM_ARCHS)
