"""Codebook-free quantisers with the :class:`tats.vqgan.codebook.Codebook` interface: FSQ and LFQ.

FSQ (Finite Scalar Quantization, Mentzer et al. 2023, https://arxiv.org/abs/2309.15505) bounds each
latent channel with tanh and rounds it to a few levels; LFQ (Lookup-Free Quantization, MAGVIT-v2, Yu et
al. 2023, https://arxiv.org/abs/2310.05737) takes the sign of each channel and adds an entropy penalty
that makes each code confident and the batch use many codes. Neither has a learned codebook, so neither
needs EMA statistics, restarts or a distance search; a code id is an integer read off the channels. All
the math runs in fp32 with autocast off, as in the codebook: bf16 would move values across rounding edges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from tats.precision import autocast_off

FSQ_EPS = 1e-3  # the paper's shrink of the tanh bound, so the outermost levels are reached but not passed
DENSE_COUNT_MAX_CODES = 1 << 20  # above this the usage statistics count by sorting, not by a (n_codes,) table
PROB_FLOOR = 1e-12  # log() floor in the entropy penalty: keeps its gradient finite where a probability is 0


def code_usage(ids: torch.Tensor, n_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(perplexity, usage)`` of a batch of code ids (any shape, values in ``[0, n_codes)``).

    ``perplexity = exp(-sum_c p_c log p_c)`` with ``p`` this batch's code histogram; ``usage`` = fraction
    of the vocabulary that occurs. For ``n_codes <= 2**20`` the histogram is a ``(n_codes,)`` table
    (``index_add_``, which is ``bincount(minlength=n_codes)`` without CUDA bincount's read of the min
    and max to the host); above, the ids are sorted and each run of equal ids is counted, a table of
    ``N = ids.numel()`` entries at most. Neither reads anything back to the host.
    """
    flat = ids.reshape(-1)
    n = flat.numel()
    ones = torch.ones(n, device=flat.device)
    with torch.no_grad():
        if n_codes <= DENSE_COUNT_MAX_CODES:
            counts = torch.zeros(n_codes, device=flat.device).index_add_(0, flat, ones)  # (n_codes,)
            distinct = (counts > 0).sum()
        else:
            sorted_ids = flat.sort().values  # (N,)
            first = torch.ones(n, dtype=torch.bool, device=flat.device)  # True where a new id starts
            first[1:] = sorted_ids[1:] != sorted_ids[:-1]
            counts = torch.zeros(n, device=flat.device).index_add_(0, first.cumsum(0) - 1, ones)  # (N,)
            distinct = first.sum()
        probs = counts / max(n, 1)
        perplexity = torch.exp(-torch.xlogy(probs, probs).sum())  # 0 log 0 = 0
        usage = distinct.float() / n_codes
    return perplexity, usage


class FSQ(nn.Module):
    """Finite Scalar Quantization over ``levels[k]`` levels in channel ``k``.

    Per channel with ``L`` levels (paper, Sec. 3 and its appendix code): ``half_l = (L - 1)(1 - eps) / 2``,
    ``offset = 0.5`` for even ``L`` else 0, ``shift = atanh(offset / half_l)``, the bound
    ``f(z) = tanh(z + shift) * half_l - offset`` (0 maps to 0; for even ``L`` the integers reached are
    ``-L/2 .. L/2 - 1``, for odd ``L`` they are ``-(L-1)/2 .. (L-1)/2``), then ``round`` with a
    straight-through gradient and a division by ``half_width = L // 2``: values in ``[-1, 1]``.

    Code id: the mixed-radix integer of the level indices ``i_k = round(f(z_k)) + L_k // 2`` in
    ``[0, L_k)``, channel 0 least significant: ``id = sum_k i_k * prod_{j<k} L_j``.

    ``lookup`` returns grid values (what the decoder sees), not encoder latents: unlike the codebook's,
    ``codes(lookup(ids))`` need not give ``ids`` back (for ``L = 8``, ``round(f(0.5)) = 1``, not 2).

    ``embedding_dim = len(levels)`` latent channels; ``n_codes = prod(levels)``. No parameters;
    ``commitment_loss`` is 0. Every level count must be at least 3: with ``L = 2`` the even-level shift
    ``atanh(0.5 / half_l)`` has an argument above 1 (use :class:`LFQ` for one bit per channel).
    """

    def __init__(self, levels: Sequence[int], eps: float = FSQ_EPS) -> None:
        super().__init__()
        levels = [int(n) for n in levels]
        if not levels or min(levels) < 3:
            raise ValueError(f"FSQ needs one or more channels of at least 3 levels each, got {levels}")
        if max(levels) - 1 >= 1 / eps:  # the shrink (L - 1) eps / 2 would reach half a level
            raise ValueError(f"a level count of {max(levels)} needs eps < 1 / {max(levels) - 1}")
        self.levels = tuple(levels)
        self.eps = eps
        self.embedding_dim = len(levels)
        self.n_codes = math.prod(levels)
        basis = [math.prod(levels[:k]) for k in range(len(levels))]  # channel 0 least significant
        # integer buffers: they follow .to(device) but no dtype cast (.half()) can round them
        self.register_buffer("_levels", torch.tensor(levels), persistent=False)
        self.register_buffer("_basis", torch.tensor(basis), persistent=False)

    def bound(self, z: torch.Tensor) -> torch.Tensor:
        """The paper's bound ``f``, channels last: ``z (..., D)`` fp32 -> ``(..., D)`` in level units,
        before rounding (differentiable; its rounding is the quantised level)."""
        levels = self._levels.float()
        half_l = (levels - 1) * (1 - self.eps) / 2
        offset = (self._levels % 2 == 0).float() * 0.5
        shift = torch.atanh(offset / half_l)
        return torch.tanh(z + shift) * half_l - offset

    def _ids(self, rounded: torch.Tensor) -> torch.Tensor:
        """Rounded levels ``(..., D)`` (integer-valued floats) -> code ids ``(...)`` long."""
        index = rounded.long() + self._levels // 2  # (..., D) level index in [0, L)
        # only a NaN latent rounds outside the grid; clamping keeps its id valid (its loss is NaN anyway)
        index = torch.minimum(index.clamp_min(0), self._levels - 1)
        return (index * self._basis).sum(-1)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Code ids without gradients: ``z (B, D, t, h, w) -> LongTensor (B, t, h, w)``."""
        with autocast_off(z.device.type), torch.no_grad():
            levels = self.bound(rearrange(z.float(), "b d t h w -> b t h w d"))
            return self._ids(torch.round(levels))

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, t, h, w)`` -> grid values ``(B, D, t, h, w)`` (fp32), ``(i_k - L//2) / (L//2)``."""
        index = torch.div(codes[..., None], self._basis, rounding_mode="floor") % self._levels  # (B,t,h,w,D)
        half_width = (self._levels // 2).float()
        values = (index - self._levels // 2).float() / half_width
        return rearrange(values, "b t h w d -> b d t h w")

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``z (B, D, t, h, w)`` -> the codebook's dict (``embeddings`` in ``z``'s dtype)."""
        in_dtype = z.dtype
        if z.shape[1] != self.embedding_dim:
            raise ValueError(f"FSQ over {self.embedding_dim} channels got z of shape {tuple(z.shape)}")
        with autocast_off(z.device.type):
            z = z.float()
            bounded = self.bound(rearrange(z, "b d t h w -> b t h w d"))  # (B, t, h, w, D)
            rounded = torch.round(bounded.detach())
            ids = self._ids(rounded)  # (B, t, h, w)
            # straight-through, written so the value is exactly the rounded level (x - x == 0 in IEEE)
            # while the gradient is the bound's: lookup(codes(z)) then equals these values bit for bit
            levels_st = rounded + (bounded - bounded.detach())
            quantized = levels_st / (self._levels // 2).float()
            perplexity, usage = code_usage(ids, self.n_codes)
        return dict(
            embeddings=rearrange(quantized, "b t h w d -> b d t h w").to(in_dtype),
            encodings=ids,
            commitment_loss=z.new_zeros(()),  # FSQ needs no commitment: the grid is fixed
            perplexity=perplexity,
            usage=usage,
        )


class LFQ(nn.Module):
    """Lookup-Free Quantization: ``bits`` channels, each quantised to ``-1``/``+1`` by its sign.

    ``q_k = +1 if z_k >= 0 else -1`` (0 goes to +1), straight-through. Code id: ``sum_k [q_k > 0] 2**k``
    (channel 0 least significant); ``lookup`` maps an id back to its ``±1`` vector. ``n_codes = 2**bits``.

    Loss (``commitment_loss``, added by the VQGAN like the codebook's):
    ``commitment_weight * mean((z - sg(q))**2) + entropy_weight * entropy_loss`` with the paper's
    entropy penalty ``entropy_loss = mean_n H(p(.|z_n)) - diversity_gamma * H(mean_n p(.|z_n))`` over the
    ``N = B t h w`` latent vectors, where ``p(c|z) = softmax_c(-||z - c||^2 / T) = softmax_c(2 z.c / T)``
    over the ``±1`` codes ``c`` (``||c||^2 = bits`` for all of them). ``entropy_loss`` (unweighted) is
    also returned for logging. Its minimum, ``-diversity_gamma * bits * ln 2``, is reached when every
    vector is confidently one code and the batch uses all codes equally.

    How it is computed: ``p(c|z)`` factorises exactly into independent bits, ``P(c_k = +1) =
    sigmoid(4 z_k / T)``, so the per-sample entropy is always the exact sum of per-bit entropies. The
    batch-mean distribution is a mixture and does not factorise: for ``bits <= exact_entropy_max_bits``
    (default 14, 16384 codes) its entropy is exact, the ``(N, 2**bits)`` probabilities computed
    ``chunk_elements`` at a time (recomputed chunk by chunk in the backward pass, so memory stays
    bounded); above, it is the sum of the per-bit entropies of the mean bit probabilities, an upper
    bound of the exact batch entropy (subadditivity), so the factorised penalty is a lower bound of the
    exact one. The batch is this rank's: nothing is averaged over DDP ranks.
    """

    def __init__(
        self,
        bits: int,
        entropy_weight: float = 0.1,
        commitment_weight: float = 0.25,
        diversity_gamma: float = 1.0,
        *,
        temperature: float = 1.0,
        exact_entropy_max_bits: int = 14,
        chunk_elements: int = 1 << 24,
    ) -> None:
        super().__init__()
        if not 1 <= bits <= 62:
            raise ValueError(f"LFQ needs 1 to 62 bits (int64 code ids), got {bits}")
        self.bits = bits
        self.embedding_dim = bits
        self.n_codes = 1 << bits
        self.entropy_weight = entropy_weight
        self.commitment_weight = commitment_weight
        self.diversity_gamma = diversity_gamma
        self.temperature = temperature
        self.exact_entropy_max_bits = exact_entropy_max_bits
        self.chunk_elements = chunk_elements
        self.register_buffer("_powers", torch.tensor([1 << k for k in range(bits)]), persistent=False)

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """Code ids: ``z (B, D, t, h, w) -> LongTensor (B, t, h, w)``."""
        with torch.no_grad():
            return ((z.detach() >= 0).long() * self._powers[:, None, None, None]).sum(1)

    def _signs(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids ``(...)`` -> their ``±1`` vectors ``(..., D)`` fp32."""
        return ((ids[..., None] & self._powers) != 0).float() * 2 - 1

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes (B, t, h, w)`` -> ``±1`` vectors ``(B, D, t, h, w)`` (fp32)."""
        return rearrange(self._signs(codes), "b t h w d -> b d t h w")

    # ----------------------------------------------------------------------------------- entropy
    def _batch_entropy_exact(self, flat: torch.Tensor) -> torch.Tensor:
        """``H(mean_n p(.|z_n))`` over all ``2**bits`` codes; ``flat (N, D)`` fp32 -> scalar."""
        all_codes = self._signs(torch.arange(self.n_codes, device=flat.device))  # (K, D)
        rows = max(1, self.chunk_elements // self.n_codes)

        def prob_sum(chunk: torch.Tensor) -> torch.Tensor:  # (c, D) -> (K,) summed softmax
            logits = (2 / self.temperature) * chunk @ all_codes.t()  # (c, K)
            return logits.softmax(dim=-1).sum(0)

        recompute = torch.is_grad_enabled() and flat.requires_grad
        total = flat.new_zeros(self.n_codes)
        for start in range(0, flat.shape[0], rows):
            chunk = flat[start:start + rows]
            # checkpoint: the backward pass recomputes one chunk's (c, K) softmax at a time
            part = checkpoint(prob_sum, chunk, use_reentrant=False) if recompute else prob_sum(chunk)
            total = total + part
        mean = total / flat.shape[0]  # (K,)
        return -(mean * mean.clamp_min(PROB_FLOOR).log()).sum()

    def entropy_terms(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean per-sample entropy, batch entropy)`` in nats for ``flat (N, D)`` fp32 latents."""
        logit = 4 * flat / self.temperature  # (N, D): log-odds of bit k being +1
        p1 = torch.sigmoid(logit)
        # per-bit binary entropy from log-sigmoids (finite gradients even when a bit is certain)
        per_bit = -(p1 * F.logsigmoid(logit) + (1 - p1) * F.logsigmoid(-logit))  # (N, D)
        sample_entropy = per_bit.sum(-1).mean()
        if self.bits <= self.exact_entropy_max_bits:
            return sample_entropy, self._batch_entropy_exact(flat)
        mean1 = p1.mean(0)  # (D,) mean probability of each bit being +1
        batch_entropy = -(mean1 * mean1.clamp_min(PROB_FLOOR).log()
                          + (1 - mean1) * (1 - mean1).clamp_min(PROB_FLOOR).log()).sum()
        return sample_entropy, batch_entropy

    # ----------------------------------------------------------------------------------- forward
    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """``z (B, D, t, h, w)`` -> the codebook's dict (``embeddings`` in ``z``'s dtype), plus
        ``entropy_loss`` (scalar, unweighted penalty)."""
        in_dtype = z.dtype
        if z.shape[1] != self.embedding_dim:
            raise ValueError(f"LFQ over {self.embedding_dim} bits got z of shape {tuple(z.shape)}")
        with autocast_off(z.device.type):
            z = z.float()
            ids = self.codes(z)  # (B, t, h, w)
            signs = torch.where(z.detach() >= 0, 1.0, -1.0)  # (B, D, t, h, w)
            # straight-through with the value exactly ±1 (x - x == 0) and the identity's gradient
            quantized = signs + (z - z.detach())
            sample_entropy, batch_entropy = self.entropy_terms(rearrange(z, "b d t h w -> (b t h w) d"))
            entropy_loss = sample_entropy - self.diversity_gamma * batch_entropy
            commitment_loss = (self.commitment_weight * F.mse_loss(z, signs)
                               + self.entropy_weight * entropy_loss)
            perplexity, usage = code_usage(ids, self.n_codes)
        return dict(
            embeddings=quantized.to(in_dtype),
            encodings=ids,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            usage=usage,
            entropy_loss=entropy_loss,
        )
