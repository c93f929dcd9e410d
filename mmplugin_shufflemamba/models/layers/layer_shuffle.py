"""Stochastic layer-wise shuffle (SLWS): in training, block ``l`` of ``L`` shuffles its
token sequence with probability ``linspace(0, P, L)[l]`` (one permutation per forward,
shared by the batch, applied to the block input and residual and inverted after the
block); never in eval. The paper's Table 5 ablation also has a 'constant' schedule,
``[0] + [P] * (L - 1)``. The 'host' and 'device' draws: docs/backbone.md#slws.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from .arg_checks import check_choice, check_real


#: How the probabilities grow with depth: 'linear' (the paper's layer-dependent SLWS)
#: or 'constant' (the paper's Table 5 ablation, every block but the first).
SHUFFLE_SCHEDULES = ('linear', 'constant')


def shuffle_probs(shuffle_rate: float, num_layers: int,
                  schedule: str = 'linear') -> List[float]:
    """Per-block shuffle probabilities: 'linear' ``linspace(0, shuffle_rate,
    num_layers)`` (the default) or 'constant' ``[0] + [shuffle_rate] * (num_layers -
    1)`` (the official code's commented alternative: the first block never shuffles)."""
    shuffle_rate = check_real('shuffle_rate', shuffle_rate, 0.0, 1.0,
                              hint='the shuffle probability of the last block; 0 '
                              'disables it')
    schedule = check_choice('shuffle_schedule', schedule, SHUFFLE_SCHEDULES)
    if schedule == 'constant':
        return [0.0] + [shuffle_rate] * (num_layers - 1)
    # (on the CPU whatever the default device, e.g. a model built under 'meta')
    return [float(p) for p in torch.linspace(0, shuffle_rate, num_layers, device='cpu')]


def sample_permutation(prob: float, num_tokens: int, device: torch.device = None,
                       generator: Optional[torch.Generator] = None
                       ) -> Optional[torch.Tensor]:
    """A random permutation of ``range(num_tokens)`` with probability ``prob``, else
    None (one block's host draw)."""
    if prob <= 0.0 or torch.rand((), generator=generator).item() >= prob:
        return None
    perm = torch.randperm(num_tokens, generator=generator)
    return perm.to(device) if device is not None else perm


def sample_permutation_on_device(prob: float, num_tokens: int,
                                 device: torch.device = None,
                                 movable: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One block's draw on ``device`` without a host synchronisation: a random
    permutation (of the ``movable`` positions only) with probability ``prob``, else the
    identity; always a LongTensor on ``device``."""
    identity = torch.arange(num_tokens, device=device)
    if movable is None:
        perm = torch.randperm(num_tokens, device=device)
    else:
        movable = movable.to(device)
        perm = identity.clone()
        perm[movable] = movable[torch.randperm(movable.numel(), device=device)]
    keep = torch.rand((), device=device) >= prob
    return torch.where(keep, identity, perm)


def restrict_permutation(perm: torch.Tensor, movable: torch.Tensor) -> torch.Tensor:
    """The permutation ``perm`` of the whole sequence restricted to the ``movable``
    positions (in the order ``perm`` visits them); the other positions stay fixed."""
    num_tokens = perm.numel()
    is_movable = torch.zeros(num_tokens, dtype=torch.bool, device=perm.device)
    is_movable[movable] = True
    out = torch.arange(num_tokens, device=perm.device)
    out[movable] = perm[is_movable[perm]]
    return out


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """The permutation ``inv`` with ``x[perm][inv] == x`` (``argsort(perm)``)."""
    return torch.argsort(perm)


def permute_tokens(perm: torch.Tensor,
                   *tensors: Optional[torch.Tensor]) -> Tuple[Optional[torch.Tensor], ...]:
    """Reorder the token axis (dim 1) of every (B, L, C) tensor by ``perm``; None
    entries (the first block's residual) pass through."""
    return tuple(None if t is None else t.index_select(1, perm) for t in tensors)


def shuffled_call(fn, perm: Optional[torch.Tensor], hidden: torch.Tensor,
                  residual: Optional[torch.Tensor], *args, **kwargs):
    """``fn(hidden, residual, ...) -> (hidden, residual)`` on the sequence permuted by
    ``perm`` (None: unshuffled), both outputs restored by the inverse permutation."""
    if perm is None:
        return fn(hidden, residual, *args, **kwargs)
    hidden, residual = permute_tokens(perm, hidden, residual)
    hidden, residual = fn(hidden, residual, *args, **kwargs)
    return permute_tokens(inverse_permutation(perm), hidden, residual)


SHUFFLE_DRAWS = ('host', 'device')


class LayerShuffle(nn.Module):
    """Draws the per-block permutations of SLWS for a stack of blocks.

    Args:
        shuffle_rate (float): the probability ``P`` of the last block; setting the
            attribute later (e.g. from a hook) recomputes ``probs`` with the same
            schedule.
        num_layers (int): number of blocks.
        draw (str): 'host' (decided on the CPU; None for a block that does not
            shuffle) or 'device' (a permutation, maybe the identity, for every block
            with ``p_l > 0``). Defaults to 'host'.
        schedule (str): 'linear' (``linspace(0, P, L)``) or 'constant'
            (``[0] + [P] * (L - 1)``), see :func:`shuffle_probs`. Defaults to 'linear'.
    """

    def __init__(self, shuffle_rate: float, num_layers: int, draw: str = 'host',
                 schedule: str = 'linear'):
        super().__init__()
        self.draw = check_choice('draw (shuffle_draw)', draw, SHUFFLE_DRAWS)
        self.num_layers = num_layers
        self._set(shuffle_rate, schedule)

    def _set(self, shuffle_rate: float, schedule: str) -> None:
        """``probs`` for this rate and schedule (both checked by :func:`shuffle_probs`)."""
        self.probs = shuffle_probs(shuffle_rate, self.num_layers, schedule)
        self._shuffle_rate, self._schedule = float(shuffle_rate), schedule

    @property
    def shuffle_rate(self) -> float:
        return self._shuffle_rate

    @shuffle_rate.setter
    def shuffle_rate(self, value: float) -> None:
        self._set(value, self._schedule)

    @property
    def schedule(self) -> str:
        """'linear' or 'constant'; setting it recomputes ``probs`` with the same P."""
        return self._schedule

    @schedule.setter
    def schedule(self, value: str) -> None:
        self._set(self._shuffle_rate, value)

    def forward(self, num_tokens: int, device: torch.device = None,
                movable: Optional[torch.Tensor] = None,
                skip: int = 0) -> List[Optional[torch.Tensor]]:
        """A permutation or None per block (all None in eval) of ``num_tokens`` tokens
        on ``device``; only the ``movable`` positions move (default: all). The first
        ``skip`` blocks (frozen ones) draw nothing: None."""
        if not self.training:
            return [None] * len(self.probs)
        probs = self.probs[skip:]
        if self.draw == 'device':
            perms = [None if p <= 0.0 else
                     sample_permutation_on_device(p, num_tokens, device, movable)
                     for p in probs]
        else:
            perms = [sample_permutation(p, num_tokens, device) for p in probs]
            if movable is not None and movable.numel() < num_tokens:
                movable = movable.to(device)
                perms = [None if perm is None else restrict_permutation(perm, movable)
                         for perm in perms]
        return [None] * (len(self.probs) - len(probs)) + perms

    def extra_repr(self) -> str:
        return (f'shuffle_rate={self.shuffle_rate}, num_layers={self.num_layers}, '
                f'draw={self.draw!r}, schedule={self.schedule!r}')


__all__: Sequence[str] = [
    'shuffle_probs', 'sample_permutation', 'sample_permutation_on_device',
    'restrict_permutation', 'inverse_permutation', 'permute_tokens', 'shuffled_call',
    'LayerShuffle', 'SHUFFLE_DRAWS', 'SHUFFLE_SCHEDULES'
]
