"""Stochastic layer-wise shuffle (SLWS): a functional core and a thin module.

During training, block ``l`` of ``L`` shuffles its whole token sequence with probability
``p_l = l / (L - 1) * P`` (``torch.linspace(0, P, L)``). One permutation per forward is
shared by the whole batch and applied to both the block input and the residual stream;
the inverse permutation restores the original order of both outputs. In eval mode
nothing is ever shuffled.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn


def shuffle_probs(shuffle_rate: float, num_layers: int) -> List[float]:
    """Per-block shuffle probabilities ``linspace(0, shuffle_rate, num_layers)``."""
    if not 0.0 <= shuffle_rate <= 1.0:
        raise ValueError(f'shuffle_rate must be in [0, 1], got {shuffle_rate}')
    return [float(p) for p in torch.linspace(0, shuffle_rate, num_layers)]


def sample_permutation(prob: float,
                       num_tokens: int,
                       device: torch.device = None,
                       generator: Optional[torch.Generator] = None
                       ) -> Optional[torch.Tensor]:
    """Draw the shuffle decision of one block.

    Returns:
        Tensor | None: a permutation of ``range(num_tokens)`` (LongTensor) with
        probability ``prob``, else None.
    """
    if prob <= 0.0:
        return None
    draw = torch.rand((), generator=generator).item()
    if draw >= prob:
        return None
    perm = torch.randperm(num_tokens, generator=generator)
    return perm.to(device) if device is not None else perm


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """The permutation ``inv`` with ``x[perm][inv] == x`` (``argsort(perm)``)."""
    return torch.argsort(perm)


def permute_tokens(perm: torch.Tensor,
                   *tensors: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """Reorder the token axis (dim 1) of every (B, L, C) tensor by ``perm``.

    None entries pass through (the residual of the first block is None).
    """
    return tuple(None if t is None else t.index_select(1, perm) for t in tensors)


def shuffled_call(fn, perm: Optional[torch.Tensor], hidden: torch.Tensor,
                  residual: Optional[torch.Tensor], *args, **kwargs):
    """Run ``fn(hidden, residual, ...) -> (hidden, residual)`` on a shuffled sequence.

    With ``perm`` None this is ``fn(hidden, residual)``. Otherwise both inputs are
    permuted by ``perm``, ``fn`` runs, and both outputs are restored with the inverse
    permutation, so a token-wise ``fn`` gives exactly the unshuffled result.
    """
    if perm is None:
        return fn(hidden, residual, *args, **kwargs)
    hidden, residual = permute_tokens(perm, hidden, residual)
    hidden, residual = fn(hidden, residual, *args, **kwargs)
    return permute_tokens(inverse_permutation(perm), hidden, residual)


class LayerShuffle(nn.Module):
    """Draws the per-block permutations of SLWS for a stack of blocks.

    Args:
        shuffle_rate (float): the probability ``P`` of the last block.
        num_layers (int): number of blocks.
    """

    def __init__(self, shuffle_rate: float, num_layers: int):
        super().__init__()
        self.shuffle_rate = float(shuffle_rate)
        self.probs = shuffle_probs(shuffle_rate, num_layers)

    def forward(self, num_tokens: int, device: torch.device = None
                ) -> List[Optional[torch.Tensor]]:
        """One draw for every block: a permutation or None. All None in eval."""
        if not self.training:
            return [None] * len(self.probs)
        return [sample_permutation(p, num_tokens, device) for p in self.probs]

    def extra_repr(self) -> str:
        return f'shuffle_rate={self.shuffle_rate}, num_layers={len(self.probs)}'


__all__: Sequence[str] = [
    'shuffle_probs', 'sample_permutation', 'inverse_permutation', 'permute_tokens',
    'shuffled_call', 'LayerShuffle'
]
