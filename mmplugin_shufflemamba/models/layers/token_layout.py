"""Where the extra (cls / register) tokens of a ShuffleMamba sequence sit among the
patches (``kind``): ``'none'`` (the patches alone); ``'front'`` (one cls token first, its
position embedding first in ``pos_embed``: official plain classifiers, VideoMamba);
``'registers'`` (R registers spread evenly, :func:`~.pos_embed.register_layout`, their
position embedding in ``pos_embed_cls``: Mamba-Reg; with R = 1 the register sits at
``N // 2``, Vim's middle cls token).
"""
import functools
from typing import Optional, Tuple

import torch

from .pos_embed import register_layout

TOKEN_KINDS = ('none', 'front', 'registers')


def _positions(kind: str, num_extra: int, num_patches: int
               ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """(patch positions, extra-token positions, token order or None); cached, and
    computed afresh under ``torch.compile`` (dynamo traces it into constants)."""
    if isinstance(num_patches, torch.Tensor):  # a size under torch.jit.trace (FLOPs)
        num_patches = int(num_patches)
    if torch.compiler.is_compiling():
        return _compute_positions(kind, num_extra, num_patches)
    return _cached_positions(kind, num_extra, num_patches)


def _compute_positions(kind, num_extra, num_patches):
    if kind == 'registers':
        token_idx, patch_pos = register_layout(num_patches, num_extra)
        return patch_pos, torch.argsort(token_idx)[num_patches:], token_idx
    if kind == 'front':
        return torch.arange(1, num_patches + 1), torch.zeros(1, dtype=torch.long), None
    return torch.arange(num_patches), torch.zeros(0, dtype=torch.long), None


_cached_positions = functools.lru_cache(maxsize=64)(_compute_positions)


class TokenLayout:
    """Where ``num_extra`` extra tokens sit in a sequence of patches.

    Args:
        kind (str): one of :data:`TOKEN_KINDS`.
        num_extra (int): 0 for 'none', 1 for 'front', R >= 1 for 'registers'.
    """

    def __init__(self, kind: str = 'none', num_extra: int = 0):
        if kind not in TOKEN_KINDS:
            raise ValueError(f'token layout kind must be one of {TOKEN_KINDS}, got {kind!r}')
        if not {'none': num_extra == 0, 'front': num_extra == 1,
                'registers': num_extra >= 1}[kind]:
            raise ValueError(f"a '{kind}' token layout cannot hold {num_extra} tokens")
        self.kind, self.num_extra = kind, int(num_extra)

    @classmethod
    def from_args(cls, with_cls_token: bool, num_registers: int) -> 'TokenLayout':
        """The layout of ``ShuffleMamba(with_cls_token=..., num_registers=...)``."""
        if with_cls_token:
            return cls('front', 1)
        return cls('registers', num_registers) if num_registers else cls()

    def positions(self, num_patches: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Sequence positions of the patches (row-major, (N, )) and of the extra tokens
        ((T, )) in a sequence of ``num_patches`` patches. Shared, read-only tensors."""
        patch_pos, extra_pos, _ = _positions(self.kind, self.num_extra, num_patches)
        return patch_pos, extra_pos

    def movable(self, num_patches: int, extra_moves: bool) -> Optional[torch.Tensor]:
        """The positions SLWS may move: all (None) when the extra tokens are shuffled
        with the patches (or there are none), else the patch positions."""
        if extra_moves or self.num_extra == 0:
            return None
        return self.positions(num_patches)[0]

    def insert(self, patches: torch.Tensor, extra: Optional[torch.Tensor]) -> torch.Tensor:
        """(B, N, D) patches and (B, T, D) extra tokens -> the (B, N + T, D) sequence."""
        if self.num_extra == 0:
            return patches
        if self.kind == 'front':
            return torch.cat([extra, patches], dim=1)
        token_idx = _positions(self.kind, self.num_extra, patches.shape[1])[2]
        return torch.cat([patches, extra], dim=1)[:, token_idx.to(patches.device)]

    def patches(self, seq: torch.Tensor, num_patches: int) -> torch.Tensor:
        """The (B, N, C) patch tokens of a (B, N + T, C) sequence, in row-major order."""
        if seq.shape[1] == num_patches:
            return seq
        return seq.index_select(1, self.positions(num_patches)[0].to(seq.device))

    def extra(self, seq: torch.Tensor) -> torch.Tensor:
        """The (B, T, C) extra tokens of a (B, N + T, C) sequence."""
        num_patches = seq.shape[1] - self.num_extra
        if self.kind == 'front':
            return seq[:, :1]
        return seq.index_select(1, self.positions(num_patches)[1].to(seq.device))

    def cls_feature_dims(self, embed_dims: int, cls_reduce: int = 1) -> int:
        """Width of the classification feature: a front cls token's ``embed_dims``; the
        R registers (or Vim's middle token) each reduced to ``embed_dims // cls_reduce``
        and concatenated; 0 without extra tokens."""
        if self.kind == 'front':
            return embed_dims
        return self.num_extra * (embed_dims // cls_reduce)

    def __repr__(self) -> str:
        return f'TokenLayout({self.kind!r}, {self.num_extra})'


def to_map(tokens: torch.Tensor, grid: Tuple[int, int]) -> torch.Tensor:
    """(B, h * w, C) row-major patch tokens -> (B, C, h, w) map."""
    B = tokens.shape[0]
    return tokens.reshape(B, grid[0], grid[1], -1).permute(0, 3, 1, 2).contiguous()


__all__ = ['TOKEN_KINDS', 'TokenLayout', 'to_map']
