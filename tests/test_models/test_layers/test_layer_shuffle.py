import math

import pytest
import torch
import torch.nn as nn

from mmplugin_shufflemamba import ShuffleMamba
from mmplugin_shufflemamba.models.layers import (LayerShuffle, inverse_permutation,
                                                 permute_tokens, sample_permutation,
                                                 shuffle_probs, shuffled_call)


class TokenwiseMixer(nn.Module):
    """Acts on every token independently: a shuffle must be invisible through it."""

    def __init__(self, dims):
        super().__init__()
        self.fc = nn.Linear(dims, dims)

    def forward(self, x):
        return torch.tanh(self.fc(x)) * 0.5


def tiny(**kw):
    cfg = dict(arch=dict(embed_dims=32, num_layers=5), img_size=64, patch_size=8,
               out_indices=(1, 4))
    cfg.update(kw)
    m = ShuffleMamba(**cfg)
    m.init_weights()
    return m


def test_schedule_is_linspace_from_zero():
    assert shuffle_probs(0.5, 5) == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5])
    assert tiny(shuffle_rate=0.6).layer_shuffle.probs == pytest.approx(
        torch.linspace(0, 0.6, 5).tolist())
    with pytest.raises(ValueError, match='shuffle_rate'):
        shuffle_probs(1.5, 4)


def test_inverse_is_exact():
    x = torch.randn(3, 50, 7)
    perm = torch.randperm(50)
    (y, ) = permute_tokens(perm, x)
    (back, ) = permute_tokens(inverse_permutation(perm), y)
    assert torch.equal(back, x)
    assert torch.equal(perm[inverse_permutation(perm)], torch.arange(50))


def test_one_permutation_shared_by_batch_and_residual():
    hidden, residual = torch.randn(4, 20, 3), torch.randn(4, 20, 3)
    perm = torch.randperm(20)
    seen = {}

    def fn(h, r):
        seen['h'], seen['r'] = h, r
        return h * 2, r + 1

    out_h, out_r = shuffled_call(fn, perm, hidden, residual)
    assert torch.equal(seen['h'], hidden[:, perm])
    assert torch.equal(seen['r'], residual[:, perm])
    assert torch.equal(out_h, hidden * 2) and torch.equal(out_r, residual + 1)
    # residual None (first block) passes through
    out_h, out_r = shuffled_call(lambda h, r: (h, r), perm, hidden, None)
    assert out_r is None and torch.equal(out_h, hidden)


def test_shuffle_invisible_with_tokenwise_mixer():
    model = tiny(shuffle_rate=1.0)
    for layer in model.layers:
        layer.mixer = TokenwiseMixer(32)
    x = torch.randn(2, 3, 64, 48)
    model.eval()
    ref = model(x)
    model.train()
    torch.manual_seed(3)
    perms = model.layer_shuffle(model.embed(x)[0].shape[1])
    assert sum(p is not None for p in perms) >= 3  # really shuffles in training
    out = model(x)
    for a, b in zip(out, ref):
        assert torch.equal(a, b)


def test_shuffle_changes_real_mamba_in_training_only():
    model = tiny(shuffle_rate=1.0)
    plain = tiny(shuffle_rate=0.0)
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 64, 64)
    model.train()
    plain.train()
    torch.manual_seed(0)
    shuffled = model(x)
    unshuffled = plain(x)
    assert not torch.allclose(shuffled[-1], unshuffled[-1], atol=1e-4)
    model.eval()
    plain.eval()
    for a, b in zip(model(x), plain(x)):
        assert torch.equal(a, b)
    assert all(p is None for p in model.layer_shuffle(64))


@pytest.mark.parametrize('schedule', ['linear', 'constant'])
def test_per_block_frequencies_match_schedule(schedule):
    layer = LayerShuffle(0.8, 5, schedule=schedule).train()
    n = 3000
    counts = torch.zeros(5)
    torch.manual_seed(1)
    for _ in range(n):
        for i, p in enumerate(layer(10)):
            if p is not None:
                counts[i] += 1
                assert sorted(p.tolist()) == list(range(10))
    assert counts[0] == 0
    for c, p in zip(counts[1:], layer.probs[1:]):
        sigma = math.sqrt(n * p * (1 - p)) + 1e-9
        assert abs(c - n * p) < 4.5 * sigma, (c, n * p)


def test_sample_permutation_uniform():
    g = torch.Generator().manual_seed(0)
    first = torch.zeros(4)
    for _ in range(4000):
        first[sample_permutation(1.0, 4, generator=g)[0]] += 1
    assert ((first / 4000 - 0.25).abs() < 0.03).all()
    assert sample_permutation(0.0, 4) is None


def test_with_cp_same_outputs_and_grads():
    ref = tiny(shuffle_rate=1.0, drop_path_rate=0.3)
    cp_model = tiny(shuffle_rate=1.0, drop_path_rate=0.3, with_cp=True)
    cp_model.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    results = []
    for m in (ref, cp_model):
        m.train()
        xi = x.clone().requires_grad_()
        torch.manual_seed(123)
        outs = m(xi)
        loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
        loss.backward()
        results.append((outs, xi.grad, {n: p.grad for n, p in m.named_parameters()}))
    (o1, gx1, g1), (o2, gx2, g2) = results
    for a, b in zip(o1, o2):
        assert torch.equal(a, b)
    torch.testing.assert_close(gx1, gx2, atol=1e-6, rtol=1e-5)
    for n in g1:
        torch.testing.assert_close(g1[n], g2[n], atol=1e-6, rtol=1e-5, msg=n)


# ---------------------------------------------------------------- on-device draw
from mmplugin_shufflemamba.models.layers.layer_shuffle import (  # noqa: E402
    SHUFFLE_DRAWS, restrict_permutation, sample_permutation_on_device)


def test_device_draw_is_a_permutation_with_the_right_frequency():
    torch.manual_seed(0)
    n, prob, draws = 10, 0.3, 3000
    identity = torch.arange(n)
    shuffled = 0
    for _ in range(draws):
        perm = sample_permutation_on_device(prob, n, torch.device('cpu'))
        assert perm.dtype == torch.long and torch.equal(perm.sort().values, identity)
        shuffled += int(not torch.equal(perm, identity))
    # P(a random permutation of 10 is the identity) = 1/10! is negligible.
    assert abs(shuffled / draws - prob) < 0.03, shuffled / draws


def test_device_draw_moves_only_the_movable_positions():
    torch.manual_seed(1)
    movable = torch.tensor([0, 2, 3, 5, 6, 8])
    fixed = torch.tensor([1, 4, 7])
    for _ in range(50):
        perm = sample_permutation_on_device(1.0, 9, None, movable)
        assert torch.equal(perm[fixed], fixed)
        assert torch.equal(perm[movable].sort().values, movable)


def test_restrict_permutation_keeps_the_visit_order_of_the_movable_tokens():
    perm = torch.tensor([4, 0, 3, 1, 2])
    movable = torch.tensor([1, 2, 3, 4])  # position 0 (a cls token) stays
    out = restrict_permutation(perm, movable)
    assert out.tolist() == [0, 4, 3, 1, 2]


def test_layer_shuffle_device_mode():
    ls = LayerShuffle(0.5, 4, draw='device')
    ls.train()
    perms = ls(7, torch.device('cpu'))
    assert perms[0] is None  # p_0 = 0: nothing to draw
    assert all(isinstance(p, torch.Tensor) and p.shape == (7, ) for p in perms[1:])
    ls.eval()
    assert ls(7) == [None] * 4
    with pytest.raises(ValueError, match="draw \\(shuffle_draw\\) must be one of"):
        LayerShuffle(0.5, 4, draw='gpu')


@pytest.mark.parametrize('draw', SHUFFLE_DRAWS)
def test_skipped_blocks_draw_nothing(draw):
    """Frozen blocks (skip=k) get None and consume no random numbers: the blocks after
    them draw exactly what a stack of the remaining blocks with the same schedule draws."""
    ls = LayerShuffle(1.0, 5, draw=draw).train()
    torch.manual_seed(3)
    skipped = ls(11, torch.device('cpu'), torch.arange(1, 11), skip=2)
    assert skipped[:2] == [None, None]
    tail = LayerShuffle(1.0, 5, draw=draw).train()
    tail.probs = tail.probs[2:]
    torch.manual_seed(3)
    expected = tail(11, torch.device('cpu'), torch.arange(1, 11))
    drawn = [p for p in skipped[2:] if p is not None]
    assert len(skipped) == 5 and drawn and [p is None for p in skipped[2:]] == [
        p is None for p in expected]
    assert all(torch.equal(a, b) for a, b in zip(drawn, [p for p in expected if p is not None]))
    assert all(int(p[0]) == 0 for p in drawn)  # position 0 is not movable


def test_device_mode_shuffled_call_is_exact():
    """A branch-free identity gather leaves a token-wise function's result unchanged."""
    x = torch.randn(2, 9, 4)
    fn = lambda h, r: (h * 2, r)  # noqa: E731
    ident = sample_permutation_on_device(0.0, 9, None)
    out, _ = shuffled_call(fn, ident, x, None)
    assert torch.equal(out, x * 2)


def test_setting_shuffle_rate_sets_the_schedule():
    """A hook may schedule P: the backbone's shuffle_rate is LayerShuffle's, and setting
    it redraws the per-block probabilities (checked as at build time)."""
    m = ShuffleMamba(arch=dict(embed_dims=32, num_layers=4), img_size=32, shuffle_rate=1.0)
    m.shuffle_rate = 0.0
    assert m.layer_shuffle.probs == [0.0] * 4 and 'shuffle_rate=0.0' in repr(m.layer_shuffle)
    assert m.train().draw_permutations(5) == [None] * 4
    m.shuffle_rate = 0.3
    assert m.shuffle_rate == 0.3 and m.layer_shuffle.probs == pytest.approx([0, 0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r'shuffle_rate must be in \[0, 1\], got 1.5'):
        m.shuffle_rate = 1.5
    assert m.shuffle_rate == 0.3


# ---------------------------------------------------------------- schedules (Table 5)
from mmplugin_shufflemamba.models.layers.layer_shuffle import SHUFFLE_SCHEDULES  # noqa: E402


def test_constant_schedule_skips_only_the_first_block():
    """The paper's 'Constant' rows: every block but the input one at P (the official
    code's commented ``[0.] + [shuffle_rate] * (depth - 1)``)."""
    assert SHUFFLE_SCHEDULES == ('linear', 'constant')
    assert shuffle_probs(0.4, 5, 'constant') == [0.0, 0.4, 0.4, 0.4, 0.4]
    assert shuffle_probs(0.1, 32, 'constant') == [0.0] + [0.1] * 31
    assert shuffle_probs(0.0, 4, 'constant') == [0.0] * 4  # Table 5's "Constant 0"
    assert shuffle_probs(0.3, 1, 'constant') == [0.0]
    ls = LayerShuffle(0.4, 5, schedule='constant')
    assert ls.schedule == 'constant' and ls.probs == [0.0, 0.4, 0.4, 0.4, 0.4]
    assert "schedule='constant'" in repr(ls)
    m = tiny(shuffle_rate=0.1, shuffle_schedule='constant')
    assert m.layer_shuffle.probs == [0.0, 0.1, 0.1, 0.1, 0.1]
    assert m.train().draw_permutations(65)[0] is None  # the first block never moves
    with pytest.raises(ValueError, match="shuffle_schedule must be one of"):
        shuffle_probs(0.5, 4, 'cosine')
    with pytest.raises(ValueError, match="shuffle_schedule must be one of"):
        tiny(shuffle_rate=0.5, shuffle_schedule='Constant')
    with pytest.raises(ValueError, match="shuffle_schedule must be one of"):
        LayerShuffle(0.5, 4, schedule='const')


@pytest.mark.parametrize('rate,layers', [(0.5, 32), (0.6, 24), (0.1, 48), (1.0, 5),
                                         (0.0, 3), (0.7, 1)])
def test_linear_default_is_bit_identical(rate, layers):
    """The default schedule is exactly the float32 linspace it always was."""
    want = [float(p) for p in torch.linspace(0, rate, layers)]
    assert shuffle_probs(rate, layers) == want
    assert shuffle_probs(rate, layers, 'linear') == want
    assert LayerShuffle(rate, layers).probs == want
    assert LayerShuffle(rate, layers).schedule == 'linear'
    m = ShuffleMamba(arch=dict(embed_dims=16, num_layers=layers), img_size=32,
                     shuffle_rate=rate)
    assert m.layer_shuffle.probs == want


def test_setting_shuffle_rate_keeps_the_schedule():
    ls = LayerShuffle(0.4, 5, schedule='constant')
    ls.shuffle_rate = 0.1
    assert ls.schedule == 'constant' and ls.probs == [0.0, 0.1, 0.1, 0.1, 0.1]
    m = tiny(shuffle_rate=0.4, shuffle_schedule='constant')
    m.shuffle_rate = 0.7
    assert m.layer_shuffle.schedule == 'constant'
    assert m.layer_shuffle.probs == [0.0, 0.7, 0.7, 0.7, 0.7]
    # and the other way round: a new schedule keeps P
    ls.schedule = 'linear'
    assert ls.shuffle_rate == 0.1 and ls.probs == shuffle_probs(0.1, 5)
    with pytest.raises(ValueError, match='shuffle_schedule must be one of'):
        ls.schedule = 'step'
    assert ls.schedule == 'linear' and ls.probs == shuffle_probs(0.1, 5)
