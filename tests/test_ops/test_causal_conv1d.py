import pytest
import torch
import torch.nn.functional as F

from mmplugin_shufflemamba.ops import causal_conv1d, causal_conv1d_ref


def naive_causal_conv(x, w, b):
    Bsz, D, L = x.shape
    K = w.shape[1]
    out = torch.zeros_like(x)
    for t in range(L):
        for k in range(K):
            src = t - (K - 1) + k
            if src >= 0:
                out[:, :, t] += w[:, k] * x[:, :, src]
    return out + b[:, None]


def test_matches_naive_and_is_causal():
    x = torch.randn(2, 5, 13)
    w, b = torch.randn(5, 4), torch.randn(5)
    out = causal_conv1d_ref(x, w, b)
    torch.testing.assert_close(out, naive_causal_conv(x, w, b), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, 'silu'), F.silu(out))
    x2 = x.clone()
    x2[..., 7:] = 0
    torch.testing.assert_close(causal_conv1d_ref(x2, w, b)[..., :7], out[..., :7])


def test_dispatch_errors():
    x, w = torch.randn(1, 2, 5), torch.randn(2, 4)
    with pytest.raises(RuntimeError, match="kernel='cuda'"):
        causal_conv1d(x, w, kernel='cuda')
    with pytest.raises(ValueError, match='activation'):
        causal_conv1d_ref(x, w, activation='relu')


def test_reverse_is_anticausal_flip():
    x = torch.randn(2, 5, 13)
    w, b = torch.randn(5, 4), torch.randn(5)
    ref = causal_conv1d_ref(x.flip(-1), w, b, 'silu').flip(-1)
    torch.testing.assert_close(causal_conv1d_ref(x, w, b, 'silu', reverse=True), ref)
