"""Test helper: one (B, D, L) tensor in the memory layouts the CPU kernels accept."""
import torch


def as_layout(t, layout):
    """The same (B, D, L) values in channel-major, token-major or a strided layout."""
    if layout == 'channel':
        return t.contiguous()
    if layout == 'token':  # (B, L, D) memory, as the mixer's projections produce it
        return t.transpose(1, 2).contiguous().transpose(1, 2)
    # every other channel and time step of a larger token-major buffer
    big = torch.zeros(t.shape[0], 2 * t.shape[2], 2 * t.shape[1], dtype=t.dtype)
    big[:, ::2, ::2] = t.transpose(1, 2)
    return big[:, ::2, ::2].transpose(1, 2)
