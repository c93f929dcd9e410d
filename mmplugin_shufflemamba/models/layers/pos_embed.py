"""Position embedding resizing and register-token placement."""
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .arg_checks import check_choice, check_int

#: ``F.interpolate`` modes that resize a 2-D grid.
INTERPOLATE_MODES = ('bicubic', 'bilinear', 'nearest', 'nearest-exact', 'area')


class PatchEmbed(nn.Module):
    """Non-overlapping patch embedding (key layout ``patch_embed.proj.*``).

    Args:
        in_channels (int): input channels.
        embed_dims (int): output width D.
        patch_size (int): patch side p.
    """

    def __init__(self, in_channels: int, embed_dims: int, patch_size: int):
        super().__init__()
        check_int('in_channels', in_channels, 1)
        check_int('embed_dims', embed_dims, 1)
        check_int('patch_size', patch_size, 1)
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size=patch_size,
                              stride=patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(B, C, H, W), H and W multiples of p -> (B, H/p * W/p, D), (H/p, W/p)."""
        x = self.proj(x)
        grid = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), grid


def _check_grid(name: str, shape) -> Tuple[int, int]:
    """A (h, w) grid of sizes >= 1; an int means (n, n). Non-int sizes (0-dim tensors
    while tracing) pass unchecked."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape, shape)
    if isinstance(shape, (str, bytes)) or not hasattr(shape, '__len__') or len(shape) != 2:
        raise TypeError(f'{name} must be an int or a pair (h, w), got {shape!r}')
    for i, v in enumerate(shape):
        if isinstance(v, (bool, float, str)):
            raise TypeError(f'{name}[{i}] must be an int, got {v!r}')
        if isinstance(v, int) and v < 1:
            raise ValueError(f'{name}[{i}] must be >= 1, got {v}')
    return tuple(shape)


def resize_pos_embed(pos_embed: torch.Tensor,
                     src_shape: Tuple[int, int],
                     dst_shape: Tuple[int, int],
                     mode: str = 'bicubic') -> torch.Tensor:
    """Resize a patch-grid position embedding to (1, dst_h * dst_w, C).

    Args:
        pos_embed (Tensor): (1, src_h * src_w, C), patch tokens only, row-major.
        src_shape (tuple[int, int]): (src_h, src_w).
        dst_shape (tuple[int, int]): (dst_h, dst_w).
        mode (str): one of :data:`INTERPOLATE_MODES`. Defaults to 'bicubic'.
    """
    src_h, src_w = _check_grid('src_shape', src_shape)
    dst_shape = _check_grid('dst_shape', dst_shape)
    check_choice('mode', mode, INTERPOLATE_MODES)
    if pos_embed.dim() != 3 or pos_embed.shape[1] != src_h * src_w:
        raise ValueError(
            f'pos_embed of shape {tuple(pos_embed.shape)} does not hold a '
            f'{src_h}x{src_w} patch grid (expected (1, {src_h * src_w}, C)).')
    if (src_h, src_w) == tuple(dst_shape):
        return pos_embed
    C = pos_embed.shape[2]
    grid = pos_embed.reshape(1, src_h, src_w, C).permute(0, 3, 1, 2)
    # At least float32 (half-precision interpolation is inexact), float64 kept.
    grid = grid.to(torch.promote_types(grid.dtype, torch.float32))
    grid = F.interpolate(grid, size=tuple(dst_shape), mode=mode,
                         **({} if mode in ('nearest', 'nearest-exact', 'area') else
                            dict(align_corners=False)))
    return grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)


def register_layout(num_patches: int, num_registers: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where registers sit in the sequence (Mamba-Reg's even spacing): with
    ``S = num_patches // (num_registers + 1)``, ``S patches, reg 0, S patches, reg 1,
    ..., reg R-1, remaining patches``.

    Returns:
        tuple[Tensor, Tensor]: ``token_idx`` (N + R, ``seq = cat([patches,
        registers])[:, token_idx]``) and ``patch_pos`` (N, the sequence position of
        every row-major patch). :class:`~.token_layout.TokenLayout` caches them.
    """
    check_int('num_patches', num_patches, 1)
    check_int('num_registers', num_registers, 0)
    seg = num_patches // (num_registers + 1)
    order = []
    for r in range(num_registers):
        order.extend(range(r * seg, (r + 1) * seg))
        order.append(num_patches + r)
    order.extend(range(num_registers * seg, num_patches))
    token_idx = torch.tensor(order, dtype=torch.long)
    patch_pos = torch.argsort(token_idx)[:num_patches]
    return token_idx, patch_pos
