"""Logit filtering rules: temperature, then top-k, then top-p; the release's top_k=None quirk."""

from __future__ import annotations

import math

import pytest
import torch

from tats.sampling import filter_logits, sample_next
from tats.sampling.filtering import top_k_top_p_probs
from tests.numerics import assert_close_to_scale

pytestmark = pytest.mark.usefixtures("one_thread")

PROBS = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5 (1), 0.3 (3), 0.15 (2), 0.05 (0)
LOGITS = PROBS.log()


def kept(logits: torch.Tensor) -> list[int]:
    return torch.isfinite(logits[0]).nonzero().flatten().tolist()


def test_top_k():
    assert kept(filter_logits(LOGITS, top_k=2)) == [1, 3]
    assert kept(filter_logits(LOGITS, top_k=0)) == [0, 1, 2, 3]  # 0 disables
    assert kept(filter_logits(LOGITS, top_k=None)) == [0, 1, 2, 3]
    assert kept(filter_logits(LOGITS, top_k=100)) == [0, 1, 2, 3]  # clamped to the vocabulary
    ties = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert kept(filter_logits(ties, top_k=1)) == [1, 2]  # ties with the k-th value stay
    out = filter_logits(LOGITS, top_k=2)
    assert torch.equal(out[0, [1, 3]], LOGITS[0, [1, 3]]) and math.isinf(out[0, 0]) and out[0, 0] < 0


def test_top_p_keeps_first_token_past_threshold():
    # cumulative: 0.5, 0.8, 0.95, 1.0
    assert kept(filter_logits(LOGITS, top_p=0.7)) == [1, 3]  # 0.3 crosses 0.7 and is kept
    # At exactly p = 0.5 the float32 softmax decides (0.5 or 0.5 + 1 ulp, by SIMD width): test either side
    assert kept(filter_logits(LOGITS, top_p=0.5001)) == [1, 3]  # 0.5 does not pass it: 0.3 is the first past
    assert kept(filter_logits(LOGITS, top_p=0.4999)) == [1]  # 0.5 itself is the first past
    assert kept(filter_logits(LOGITS, top_p=0.9)) == [1, 2, 3]
    assert kept(filter_logits(LOGITS, top_p=0.1)) == [1]  # at least one token
    assert kept(filter_logits(LOGITS, top_p=1.0)) == [0, 1, 2, 3]
    assert kept(filter_logits(LOGITS, top_p=None)) == [0, 1, 2, 3]


def test_top_k_then_top_p_renormalises():
    # after top-k=3 the mass is 0.95: probabilities 0.526, 0.316, 0.158 -> cumulative 0.526, 0.842
    assert kept(filter_logits(LOGITS, top_k=3, top_p=0.8)) == [1, 3]
    assert kept(filter_logits(LOGITS, top_k=3, top_p=0.85)) == [1, 2, 3]
    rows = torch.cat([LOGITS, LOGITS.flip(-1)])  # filtering is per row
    out = filter_logits(rows, top_k=2)
    assert kept(out[1:]) == [0, 2]


def draws(logits, n=400, **kw) -> set[int]:
    g = torch.Generator().manual_seed(0)
    return set(sample_next(logits.expand(n, -1), generator=g, **kw).tolist())


def test_temperature_applies_before_top_p():
    # T=4 flattens 0.5/0.3/0.15/0.05 to about 0.31/0.27/0.23/0.18: top-p 0.7 then keeps three.
    assert draws(LOGITS, top_k=0, top_p=0.7) == {1, 3}
    assert draws(LOGITS, temperature=4.0, top_k=0, top_p=0.7) == {1, 2, 3}


def test_release_compat_top_k_none_disables_top_p():
    assert draws(LOGITS, top_p=0.6, top_k=None, release_compat=True) == {0, 1, 2, 3}
    assert draws(LOGITS, top_p=0.6, top_k=0, release_compat=True) == {1, 3}  # 0 disables top-k only
    assert draws(LOGITS, top_p=0.6, top_k=None, release_compat=False) == {1, 3}
    assert draws(LOGITS, top_k=1, release_compat=True) == {1}


def test_greedy_and_reproducible_draws():
    logits = torch.randn(5, 11)
    assert torch.equal(sample_next(logits, greedy=True, top_k=3), logits.argmax(-1))
    a = sample_next(logits, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (5,) and a.dtype == torch.long
    assert draws(torch.tensor([[0.0, 0.0, -1e9]])) == {0, 1}
    counts = torch.bincount(sample_next(LOGITS.expand(4000, -1), generator=torch.Generator().manual_seed(1)),
                            minlength=4) / 4000
    torch.testing.assert_close(counts, PROBS[0], atol=0.03, rtol=0)


@pytest.mark.parametrize("top_k,top_p", [(1, None), (7, None), (40, 0.8), (40, 0.3), (500, 0.95), (40, 1.0)])
def test_top_k_fast_path_is_the_full_vocabulary_rule(top_k, top_p):
    """The draw among the k survivors uses exactly the distribution of the full-vocabulary filter."""
    logits = torch.randn(6, 500, generator=torch.Generator().manual_seed(top_k)) * 3
    probs, ids = top_k_top_p_probs(logits, top_k, top_p)
    assert probs.shape == ids.shape == (6, min(top_k, 500))
    fast = torch.zeros_like(logits).scatter(-1, ids, probs)  # back to (B, V)
    full = filter_logits(logits, top_k, top_p).softmax(-1)
    assert torch.equal(fast > 0, full > 0)  # the same kept set
    assert_close_to_scale(fast, full, max_ulps=16)
    # the draws land in the kept set, and the fast draw's frequencies follow the same probabilities
    g = torch.Generator().manual_seed(0)
    rows = logits[:1].expand(4000, -1)
    tokens = sample_next(rows, top_k=top_k, top_p=top_p, generator=g)
    assert bool((full[0, tokens] > 0).all())
    counts = torch.bincount(tokens, minlength=500) / 4000
    torch.testing.assert_close(counts, full[0], atol=0.03, rtol=0)


def test_top_k_fast_path_ties_fall_back_to_the_full_rule():
    ties = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert top_k_top_p_probs(ties, 1) is None  # the release keeps both tied tokens
    assert draws(ties, top_k=1) == {1, 2}
    assert top_k_top_p_probs(ties, 3) is not None
    assert draws(LOGITS, top_k=3, top_p=0.8) == {1, 3}


def test_cpu_draw_resolves_exact_ties_uniformly():
    """Tokens with equal logits inside the kept set are drawn equally often (not the first one)."""
    from tats.sampling.filtering import draw_filtered_cpu

    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0, 2.0]]).expand(30000, -1).contiguous()
    tokens = draw_filtered_cpu(logits, 4, None, torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=6) / 30000
    torch.testing.assert_close(counts, filter_logits(logits[:1], 4).softmax(-1)[0], atol=0.01, rtol=0)
    assert draw_filtered_cpu(torch.tensor([[1.0, 2.0, 2.0, 0.0]]), 1, None) is None  # tie at the k-th


@pytest.mark.parametrize("top_k,top_p", [(None, 0.6), (64, 0.9), (1000, 1.0)])
def test_cpu_draw_follows_the_full_filter(top_k, top_p):
    logits = torch.randn(1, 1000, generator=torch.Generator().manual_seed(5)) * 4
    full = filter_logits(logits, top_k, top_p).softmax(-1)[0]
    g = torch.Generator().manual_seed(2)
    tokens = sample_next(logits.expand(20000, -1), top_k=top_k, top_p=top_p, generator=g)
    counts = torch.bincount(tokens, minlength=1000) / 20000
    assert bool((full[tokens] > 0).all())
    torch.testing.assert_close(counts, full, atol=0.012, rtol=0)
