"""FSQ and LFQ: ids, round trips, grids, straight-through gradients, usage statistics, the LFQ entropy
penalty and autocast. Expected values come from the papers' rules, computed here independently."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from tats.vqgan.quantizers import FSQ, LFQ, code_usage

FSQ_LEVELS = [[8, 5, 5, 5], [7, 5, 5, 5, 5]]
LFQ_BITS = [4, 10, 18]
LN2 = math.log(2)


def _line(vectors: torch.Tensor) -> torch.Tensor:
    """``(n, D)`` latent vectors -> ``z (1, D, 1, 1, n)``."""
    return vectors.t().reshape(1, vectors.shape[1], 1, 1, -1).contiguous()


def _mixed_radix(code: int, levels: list[int]) -> list[int]:
    """Level indices of an FSQ id, channel 0 least significant."""
    out = []
    for n in levels:
        out.append(code % n)
        code //= n
    return out


def _fsq_rule(levels: list[int], eps: float = 1e-3) -> tuple[list[float], list[float], list[float]]:
    """``half_l, offset, shift`` per channel from the FSQ paper's bound."""
    half_l = [(n - 1) * (1 - eps) / 2 for n in levels]
    offset = [0.5 if n % 2 == 0 else 0.0 for n in levels]
    shift = [math.atanh(o / h) for o, h in zip(offset, half_l)]
    return half_l, offset, shift


def _fsq_latents(levels: list[int], ids: list[int]) -> torch.Tensor:
    """A latent that lands on code ``ids[i]`` at position i: per channel aim the bound at a quarter level
    inside the wanted integer (the outermost integers themselves are never reached) and invert tanh."""
    half_l, offset, shift = _fsq_rule(levels)
    rows = []
    for code in ids:
        row = []
        for k, i in enumerate(_mixed_radix(code, levels)):
            v = i - levels[k] // 2
            target = v - 0.25 * (v > 0) + 0.25 * (v < 0)
            row.append(math.atanh((target + offset[k]) / half_l[k]) - shift[k])
        rows.append(row)
    return _line(torch.tensor(rows, dtype=torch.float32))


def _lfq_latents(bits: int, ids: list[int], scale: float = 1.0) -> torch.Tensor:
    """``scale * (±1 vector)`` of each id: bit k of the id (k = 0 least significant) set -> channel k > 0."""
    rows = [[scale if (code >> k) & 1 else -scale for k in range(bits)] for code in ids]
    return _line(torch.tensor(rows, dtype=torch.float32))


def _hand_usage(ids: list[int], n_codes: int) -> tuple[float, float]:
    counts = Counter(ids)
    probs = [c / len(ids) for c in counts.values()]
    return math.exp(-sum(p * math.log(p) for p in probs)), len(counts) / n_codes


def _make(kind: str, arg):
    return FSQ(arg) if kind == "fsq" else LFQ(arg)


CASES = [("fsq", levels) for levels in FSQ_LEVELS] + [("lfq", bits) for bits in LFQ_BITS]
CASE_IDS = [f"fsq{'-'.join(map(str, levels))}" for levels in FSQ_LEVELS] + [f"lfq{b}" for b in LFQ_BITS]


# --------------------------------------------------------------------------------------- both
@pytest.mark.parametrize("kind,arg", CASES, ids=CASE_IDS)
def test_codes_in_range_and_lookup_of_codes_is_the_embedding(kind, arg):
    q = _make(kind, arg)
    expected_codes = math.prod(arg) if kind == "fsq" else 2 ** arg
    expected_dim = len(arg) if kind == "fsq" else arg
    assert (q.n_codes, q.embedding_dim) == (expected_codes, expected_dim)
    assert list(q.parameters()) == [] and q.state_dict() == {}
    z = torch.randn(2, q.embedding_dim, 3, 4, 5, generator=torch.Generator().manual_seed(0)) * 2
    out = q(z)
    codes = q.codes(z)
    assert codes.dtype == torch.long and codes.shape == (2, 3, 4, 5)
    assert int(codes.min()) >= 0 and int(codes.max()) < q.n_codes
    assert torch.equal(out["encodings"], codes)
    assert out["embeddings"].shape == z.shape and out["embeddings"].dtype == torch.float32
    assert torch.equal(q.lookup(codes), out["embeddings"])  # bit for bit
    assert q.lookup(codes).dtype == torch.float32


@pytest.mark.parametrize("kind,arg", CASES, ids=CASE_IDS)
def test_ids_round_trip(kind, arg):
    """Every id (a random sample of a large vocabulary) is reached and maps back to itself.

    LFQ: ``codes(lookup(ids)) == ids``, the ±1 vectors are latents of their own codes. FSQ: ``lookup``
    gives the grid values after the tanh bound, not latents (the encoder's latent of the level ``v`` is
    ``atanh(...)`` of it, and ``codes`` of a grid value need not be its id: for L = 8,
    ``round(f(0.5)) = 1``, not 2), so its round trip runs through a latent built from the rule's inverse:
    ``codes(z(ids)) == ids`` and ``lookup(ids)`` equals the forward's embeddings of that latent."""
    q = _make(kind, arg)
    if q.n_codes <= 5000:
        ids = torch.arange(q.n_codes)  # every id: a bijection
    else:
        ids = torch.randint(0, q.n_codes, (4096,), generator=torch.Generator().manual_seed(1))
    ids = ids.view(1, 1, 1, -1)
    if kind == "lfq":
        assert torch.equal(q.codes(q.lookup(ids)), ids)
    else:
        z = _fsq_latents(arg, ids.view(-1).tolist())
        assert torch.equal(q.codes(z), ids)
        assert torch.equal(q(z)["embeddings"], q.lookup(ids))
    if q.n_codes <= 5000:  # and distinct ids give distinct vectors
        vectors = q.lookup(ids).reshape(q.embedding_dim, -1).t()
        assert torch.unique(vectors, dim=0).shape[0] == q.n_codes


@pytest.mark.parametrize("kind,arg", CASES, ids=CASE_IDS)
def test_usage_and_perplexity_of_known_codes(kind, arg):
    q = _make(kind, arg)
    rng = torch.Generator().manual_seed(2)
    distinct = torch.randperm(min(q.n_codes, 1 << 16), generator=rng)[:7].tolist()
    ids = [distinct[0]] * 5 + [distinct[1]] * 3 + distinct[2:] + [distinct[2]]  # 7 codes, uneven
    z = _fsq_latents(arg, ids) if kind == "fsq" else _lfq_latents(arg, ids, scale=0.5)
    out = q(z)
    assert out["encodings"].view(-1).tolist() == ids  # the construction reached exactly these codes
    perplexity, usage = _hand_usage(ids, q.n_codes)
    assert math.isclose(float(out["perplexity"]), perplexity, rel_tol=1e-5)
    assert math.isclose(float(out["usage"]), usage, rel_tol=1e-6)
    assert math.isclose(float(out["usage"]), 7 / q.n_codes, rel_tol=1e-6)


@pytest.mark.parametrize("n_codes", [100, 1 << 30])  # the (n_codes,) table and the sort-based count
def test_code_usage_by_hand(n_codes):
    ids = [3, 3, 3, 7, 7, 50, 99, 99, 99, 99]
    perplexity, usage = code_usage(torch.tensor(ids).view(1, 2, 5), n_codes)
    expected_perplexity, expected_usage = _hand_usage(ids, n_codes)
    assert math.isclose(float(perplexity), expected_perplexity, rel_tol=1e-6)
    assert math.isclose(float(usage), expected_usage, rel_tol=1e-6)
    assert math.isclose(expected_usage, 4 / n_codes)


@pytest.mark.parametrize("kind,arg", CASES, ids=CASE_IDS)
def test_autocast_bf16_dtype_follows_input_and_codes_match_fp32(kind, arg):
    q = _make(kind, arg)
    z = torch.randn(2, q.embedding_dim, 2, 3, 3, generator=torch.Generator().manual_seed(3)) * 2
    ref = q(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = q(z)
        out16 = q(z.bfloat16())
    assert out32["embeddings"].dtype == torch.float32
    assert torch.equal(out32["encodings"], ref["encodings"])
    assert torch.equal(out32["embeddings"], ref["embeddings"])
    assert out16["embeddings"].dtype == torch.bfloat16
    ref16 = q(z.bfloat16().float())  # the fp32 run on the same (rounded) numbers
    assert torch.equal(out16["encodings"], ref16["encodings"])
    assert torch.equal(out16["embeddings"], ref16["embeddings"].bfloat16())
    for key in ("commitment_loss", "perplexity", "usage"):
        assert out16[key].dtype == torch.float32


# --------------------------------------------------------------------------------------- FSQ
@pytest.mark.parametrize("levels", FSQ_LEVELS)
def test_fsq_id_is_mixed_radix_channel_0_least_significant(levels):
    q = FSQ(levels)
    basis = [math.prod(levels[:k]) for k in range(len(levels))]
    picks = [[n - 1 for n in levels], [0] * len(levels), [(k * 3) % n for k, n in enumerate(levels)]]
    ids = [sum(i * b for i, b in zip(idx, basis)) for idx in picks]
    assert ids[0] == q.n_codes - 1 and ids[1] == 0
    assert q(_fsq_latents(levels, ids))["encodings"].view(-1).tolist() == ids
    # saturated latents reach the outermost levels: all -inf-ish -> id 0, all +inf-ish -> the last id
    z = torch.tensor([-50.0, 50.0]).repeat(len(levels), 1).t()  # (2, D)
    assert q.codes(_line(z)).view(-1).tolist() == [0, q.n_codes - 1]
    # lookup of a level index i in a channel of L levels is (i - L//2) / (L//2)
    values = q.lookup(torch.tensor(ids[2]).view(1, 1, 1, 1)).view(-1).tolist()
    expected = [(i - n // 2) / (n // 2) for i, n in zip(picks[2], levels)]
    assert values == pytest.approx(expected, abs=0)


@pytest.mark.parametrize("levels", FSQ_LEVELS)
def test_fsq_values_lie_on_the_grid(levels):
    q = FSQ(levels)
    z = torch.randn(3, len(levels), 4, 5, 6, generator=torch.Generator().manual_seed(4)) * 3
    emb = q(z)["embeddings"]
    for k, n in enumerate(levels):
        scaled = emb[:, k] * (n // 2)  # integers -L//2 .. L-1-L//2 (for even L: -L/2 .. L/2-1)
        assert torch.equal(scaled, scaled.round())
        assert int(scaled.min()) >= -(n // 2) and int(scaled.max()) <= n - 1 - n // 2
        # every level is used by a wide enough batch
        assert scaled.unique().numel() == n
    assert float(q(z)["commitment_loss"]) == 0.0


@pytest.mark.parametrize("levels", FSQ_LEVELS)
def test_fsq_straight_through_gradient_is_the_bounds(levels):
    q = FSQ(levels)
    z = torch.randn(2, len(levels), 2, 3, 4, generator=torch.Generator().manual_seed(5)).requires_grad_()
    q(z)["embeddings"].sum().backward()
    # reference: autograd of f(z) / (L//2), the rule's bound without rounding, in float64
    def channels(values):
        return torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1, 1)

    half_l, offset, shift = (channels(v) for v in _fsq_rule(levels))
    half_width = channels([n // 2 for n in levels])
    z64 = z.detach().double().requires_grad_()
    ((torch.tanh(z64 + shift) * half_l - offset) / half_width).sum().backward()
    assert torch.isfinite(z.grad).all() and (z.grad != 0).all()
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-5, atol=1e-7)


def test_fsq_rejects_two_level_channels():
    with pytest.raises(ValueError):
        FSQ([2, 5])


# --------------------------------------------------------------------------------------- LFQ
@pytest.mark.parametrize("bits", LFQ_BITS)
def test_lfq_id_is_binary_channel_0_least_significant_and_zero_is_positive(bits):
    q = LFQ(bits)
    z = torch.zeros(3, bits)
    z[1, 0] = -1.0  # only bit 0 cleared
    z[2] = -torch.rand(bits) - 0.1
    z[2, bits - 1] = 0.0  # only the top bit set (0 counts as positive)
    ids = q.codes(_line(z)).view(-1).tolist()
    assert ids == [2 ** bits - 1, 2 ** bits - 2, 2 ** (bits - 1)]
    vectors = q.lookup(torch.tensor(ids).view(1, 1, 1, 3)).view(bits, 3).t()  # (3, D)
    assert vectors[1].tolist() == [-1.0] + [1.0] * (bits - 1)


@pytest.mark.parametrize("bits", LFQ_BITS)
def test_lfq_straight_through_gradient_is_the_identity(bits):
    q = LFQ(bits)
    z = torch.randn(2, bits, 2, 3, 3, generator=torch.Generator().manual_seed(6)).requires_grad_()
    out = q(z)
    assert set(out["embeddings"].unique().tolist()) <= {-1.0, 1.0}
    out["embeddings"].sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))
    z.grad = None
    q(z)["commitment_loss"].backward()
    assert torch.isfinite(z.grad).all() and (z.grad != 0).any()


def _binary_entropy(p: float) -> float:
    return -sum(x * math.log(x) for x in (p, 1 - p) if x > 0)


@pytest.mark.parametrize("bits", LFQ_BITS)
@pytest.mark.parametrize("scale", [0.3, 10.0])
@pytest.mark.parametrize("gamma", [1.0, 0.5])
def test_lfq_entropy_penalty_of_a_uniform_batch(bits, scale, gamma):
    """z = scale * c for every code c once (or, for 18 bits, a balanced sample of codes): p(c'|z) is a
    product over bits with P(bit agrees) = sigmoid(4 scale / T), so the per-sample entropy is
    bits * h(sigmoid(4 scale)); the batch mean is uniform, entropy bits * ln 2 (exact) and every mean bit
    probability is 1/2 (factorised). Penalty = bits * h(sigmoid(4 scale)) - gamma * bits * ln 2; for a
    confident scale that is the minimum, -gamma * bits * ln 2."""
    q = LFQ(bits, entropy_weight=0.1, commitment_weight=0.25, diversity_gamma=gamma)
    if bits <= 10:
        ids = list(range(2 ** bits))
    else:  # a sample and its complements: every bit is +1 exactly half of the time
        half = torch.randint(0, 2 ** bits, (2048,), generator=torch.Generator().manual_seed(7)).tolist()
        ids = half + [(2 ** bits - 1) ^ code for code in half]
    out = q(_lfq_latents(bits, ids, scale=scale))
    sample_entropy = bits * _binary_entropy(1 / (1 + math.exp(-4 * scale)))
    expected = sample_entropy - gamma * bits * LN2
    assert math.isclose(float(out["entropy_loss"]), expected, rel_tol=1e-5, abs_tol=1e-5)
    if scale == 10.0:
        assert math.isclose(float(out["entropy_loss"]), -gamma * bits * LN2, rel_tol=1e-5)
    commitment = 0.25 * (scale - 1) ** 2 + 0.1 * expected
    assert math.isclose(float(out["commitment_loss"]), commitment, rel_tol=1e-5, abs_tol=1e-5)


def _lfq_loss_by_hand(z: torch.Tensor, bits: int, gamma: float, temperature: float) -> torch.Tensor:
    """The paper's loss from an explicit softmax over all 2**bits codes (float64)."""
    flat = z.permute(0, 2, 3, 4, 1).reshape(-1, bits)
    codes = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=bits)), dtype=flat.dtype)  # (K, D)
    p = torch.softmax(-torch.cdist(flat, codes) ** 2 / temperature, dim=-1)  # (N, K)
    sample_entropy = -(p * p.log()).sum(-1).mean()
    mean = p.mean(0)
    entropy = sample_entropy - gamma * -(mean * mean.log()).sum()
    signs = torch.where(flat >= 0, 1.0, -1.0).to(flat.dtype)
    return 0.25 * ((flat - signs) ** 2).mean() + 0.1 * entropy, entropy


@pytest.mark.parametrize("chunk_elements", [16, 1 << 24])  # one row per chunk, and all rows at once
def test_lfq_exact_entropy_and_gradient_match_an_explicit_softmax(chunk_elements):
    bits, gamma, temperature = 4, 0.7, 0.5
    q = LFQ(bits, diversity_gamma=gamma, temperature=temperature, chunk_elements=chunk_elements)
    z = (torch.randn(2, bits, 3, 4, 4, generator=torch.Generator().manual_seed(8)) * 0.4).requires_grad_()
    out = q(z)
    out["commitment_loss"].backward()
    out = {key: value.detach() for key, value in out.items()}
    z64 = z.detach().double().requires_grad_()
    loss, entropy = _lfq_loss_by_hand(z64, bits, gamma, temperature)
    loss.backward()
    assert math.isclose(float(out["entropy_loss"]), float(entropy.detach()), rel_tol=1e-5, abs_tol=1e-6)
    assert math.isclose(float(out["commitment_loss"]), float(loss.detach()), rel_tol=1e-5, abs_tol=1e-6)
    torch.testing.assert_close(z.grad.double(), z64.grad, rtol=1e-4, atol=1e-7)


def test_lfq_factorised_batch_entropy_bounds_the_exact_one():
    bits = 4
    z = torch.randn(1, bits, 2, 8, 8, generator=torch.Generator().manual_seed(9)) * 0.5
    flat = z.permute(0, 2, 3, 4, 1).reshape(-1, bits)
    exact_sample, exact_batch = LFQ(bits).entropy_terms(flat)
    fact_sample, fact_batch = LFQ(bits, exact_entropy_max_bits=0).entropy_terms(flat)
    torch.testing.assert_close(fact_sample, exact_sample)  # the per-sample entropy is exact in both
    assert float(fact_batch) >= float(exact_batch) > 0  # subadditivity: sum of marginals >= joint
    mean1 = torch.sigmoid(4 * flat.double()).mean(0).tolist()  # by hand: per-bit entropies of the means
    assert math.isclose(float(fact_batch), sum(_binary_entropy(m) for m in mean1), rel_tol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind,arg", CASES + [("lfq", 24)], ids=CASE_IDS + ["lfq24"])
def test_cuda_forward_and_backward_never_sync(kind, arg):
    q = _make(kind, arg).cuda()
    z = torch.randn(2, q.embedding_dim, 2, 4, 4, device="cuda", requires_grad=True)
    q(z)  # warm-up (allocations)
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = q(z)
        (out["embeddings"].float().sum() + out["commitment_loss"]).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(out["encodings"].cpu(), q.cpu().codes(z.detach().cpu()))
