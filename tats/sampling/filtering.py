"""Logit filtering and next-token sampling (the release, "Sampling").

Order: ``logits / temperature``, then top-k, then top-p (nucleus), then a multinomial draw; greedy
takes the argmax. ``release_compat=True`` (``--release_filtering``) keeps the release's rule that
``top_k=None`` disables top-p as well. With top-k the draw works on the k survivors only
(:func:`sample_next`; on the CPU :func:`draw_filtered_cpu`), the same distribution as
:func:`filter_logits` on the whole vocabulary. docs/sampling.md has the rules and why they agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["DrawRule", "draw_filtered_cpu", "draw_full_with_uniform", "draw_with_uniform", "filter_logits",
           "sample_next", "top_k_top_p_probs"]


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set filtered-out logits to ``-inf``; ``logits (..., V)`` -> same shape (a new tensor).

    ``top_k``: keep the k largest (ties with the k-th value are kept); None or 0 disables.
    ``top_p``: keep the smallest descending prefix whose probability mass reaches ``p`` (the token
    that crosses ``p`` is kept); None or >= 1 disables.
    """
    logits = logits.clone()
    vocab = logits.shape[-1]
    if top_k:
        k = min(max(int(top_k), 1), vocab)
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (..., 1)
        logits.masked_fill_(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        remove = cum > top_p
        # Shift right: the first token past the threshold stays, and position 0 always stays.
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits.masked_fill_(remove.scatter(-1, sorted_idx, remove), float("-inf"))
    return logits


def _top_p_mask(sorted_logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Boolean ``remove`` mask for logits sorted descending: cumulative probability past ``top_p``,
    shifted right so the first token past the threshold (and position 0) stays."""
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = torch.zeros_like(cum, dtype=torch.bool)
    remove[..., 1:] = cum[..., :-1] > top_p
    return remove


def top_k_top_p_probs(
    logits: torch.Tensor, top_k: int, top_p: float | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The filtered distribution restricted to the top-k survivors.

    ``logits (B, V)`` (temperature already applied) -> ``(probs (B, k), token ids (B, k))`` sorted
    by descending logit, probabilities 0 for tokens top-p removes; or None when a tie at the k-th
    value reaches outside the k (the caller then filters the full vocabulary).
    """
    k = min(max(int(top_k), 1), logits.shape[-1])
    values, ids = torch.topk(logits, k, dim=-1)  # (B, k), descending
    # Every one of the k is >= the k-th value, so more such tokens means a tie outside the k.
    if k < logits.shape[-1] and bool((logits >= values[..., -1:]).sum(-1).gt(k).any()):
        return None
    if top_p is not None and top_p < 1.0:
        values = values.masked_fill(_top_p_mask(values, top_p), float("-inf"))
    return values.softmax(dim=-1), ids


def _inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row of ``probs (B, n)`` (unnormalised, >= 0) by inverting its cumulative sum;
    returns ``(B,)`` positions. Zero-probability positions are never drawn."""
    u = torch.rand(probs.shape[0], generator=generator, device=probs.device, dtype=probs.dtype)
    return _inverse_cdf_with(probs, u).squeeze(-1)


def draw_filtered_cpu(
    logits: torch.Tensor, top_k: int | None, top_p: float | None, generator: torch.Generator | None = None
) -> torch.Tensor | None:
    """Top-k / top-p draw for float32 CPU ``logits (B, V)`` (temperature applied) -> tokens ``(B,)``.

    The distribution of :func:`filter_logits` followed by softmax: the k largest values
    (``np.partition``) sorted descending, top-p on those, one inverse-CDF draw among them, and the
    drawn value mapped back to a token id. Returns None when the k-th value is tied with tokens
    outside the k (the caller then filters the whole vocabulary, which keeps such ties).
    """
    a = logits.detach().numpy()
    B, V = a.shape
    k = min(max(int(top_k), 1), V) if top_k else V
    if k < V:
        part = np.partition(a, V - k, axis=1)  # part[:, V-k] is the k-th largest; larger ones after it
        kth = part[:, V - k : V - k + 1]
        if (part[:, : V - k] == kth).any():
            return None
        top = part[:, V - k :]
    else:
        top = a
    values = torch.from_numpy(np.sort(top, axis=1)[:, ::-1].copy())  # (B, k) descending
    if top_p is not None and top_p < 1.0:
        values = values.masked_fill(_top_p_mask(values, top_p), float("-inf"))
    rank = _inverse_cdf((values - values[:, :1]).exp(), generator)  # (B,)
    drawn = values.gather(1, rank[:, None]).numpy()  # (B, 1) the drawn logit values
    # Tokens holding the drawn value; `ahead` of them in the sorted row are the drawn value's
    # earlier copies, so a tie is resolved uniformly by the same uniform number.
    ahead = (rank - torch.searchsorted(-values, -torch.from_numpy(drawn), right=False).squeeze(-1)).numpy()
    equal = a == drawn
    tokens = equal.argmax(axis=1)
    for i in np.flatnonzero(ahead > 0):  # exact ties: rare
        tokens[i] = np.flatnonzero(equal[i])[ahead[i]]
    return torch.from_numpy(tokens)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    release_compat: bool = False,
) -> torch.Tensor:
    """Draw one token per row: ``logits (B, V)`` -> LongTensor ``(B,)``.

    ``greedy`` returns the argmax (filters and temperature cannot change it). Sampling runs in
    float32 whatever the logits' dtype, so bf16 decoding draws from the same distribution.
    """
    if greedy:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
    logits = logits.float() if temperature == 1.0 else logits.float() / temperature
    if release_compat and top_k is None:
        top_p = None  # the release filters only when top_k is given: top_p is ignored too
    if logits.device.type == "cpu" and (top_k or (top_p is not None and top_p < 1.0)):
        tokens = draw_filtered_cpu(logits, top_k, top_p, generator)
        if tokens is not None:
            return tokens
    elif top_k:
        survivors = top_k_top_p_probs(logits, top_k, top_p)
        if survivors is not None:  # the fast path: a draw among the k survivors
            probs, ids = survivors
            choice = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            return ids.gather(-1, choice).squeeze(-1)
    if top_k or (top_p is not None and top_p < 1.0):
        logits = filter_logits(logits, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ------------------------------------------------------------------- draws from given uniforms
@dataclass(frozen=True)
class DrawRule:
    """How one token is drawn, as plain constants (a compiled decoding step is specialised on them).

    ``top_k`` 0 and ``top_p`` >= 1 disable those filters; :meth:`of` applies the release's rule that
    ``top_k=None`` disables top-p too when ``release_compat`` is set.
    """

    greedy: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    @classmethod
    def of(cls, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
           greedy: bool = False, release_compat: bool = False) -> DrawRule:
        if not greedy and temperature <= 0:
            raise ValueError(f"temperature must be > 0 (use greedy=True for argmax), got {temperature}")
        if release_compat and top_k is None:
            top_p = None
        return cls(bool(greedy), float(temperature), int(top_k or 0), 1.0 if top_p is None else float(top_p))


def _inverse_cdf_with(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Position ``(B, 1)`` drawn in each row of ``probs (B, n)`` (unnormalised, >= 0) by ``u (B,)`` in
    [0, 1). right=True steps over zero-probability positions; the minimum (the first position holding
    the total) guards u rounding up to the total."""
    cdf = probs.cumsum(-1)
    pos = torch.searchsorted(cdf, u[:, None].to(cdf.dtype) * cdf[:, -1:], right=True)
    return torch.minimum(pos, cdf.argmax(-1, keepdim=True))


def draw_with_uniform(logits: torch.Tensor, u: torch.Tensor, rule: DrawRule,
                      exact_ties: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The draw of :func:`sample_next` in plain tensor ops, from given uniforms (compilable, no host sync).

    ``logits (B, V)`` float32, ``u (B,)`` in [0, 1) -> ``(tokens (B,), tied (B,) bool)``. With top-k
    the draw works on the k largest logits (``torch.topk``, sorted), top-p on those, then one
    inverse-CDF draw; ``tied`` marks rows whose k-th logit is tied with tokens outside the k, which
    the full filter would keep: those rows must be redrawn with :func:`draw_full_with_uniform`.
    ``exact_ties`` does that here for every row and selects (no host sync, a full-vocabulary sort per
    step: for GPUs, where a sort is cheap and a sync is not).
    """
    if rule.greedy:
        return logits.argmax(-1), torch.zeros_like(logits[:, 0], dtype=torch.bool)
    x = logits if rule.temperature == 1.0 else logits / rule.temperature
    vocab = x.shape[-1]
    tied = torch.zeros_like(x[:, 0], dtype=torch.bool)
    ids = None
    if 0 < rule.top_k < vocab:
        values, ids = torch.topk(x, rule.top_k, dim=-1)  # (B, k), descending
        tied = (x >= values[:, -1:]).sum(-1) > rule.top_k
    elif rule.top_p < 1.0:
        values, ids = torch.sort(x, dim=-1, descending=True)  # (B, V)
    else:
        values = x  # no filter: the vocabulary in id order
    if rule.top_p < 1.0:
        values = values.masked_fill(_top_p_mask(values, rule.top_p), float("-inf"))
    probs = (values - values.amax(-1, keepdim=True)).exp()
    pos = _inverse_cdf_with(probs, u)  # (B, 1)
    tokens = (pos if ids is None else ids.gather(1, pos)).squeeze(1)
    if exact_ties and 0 < rule.top_k < vocab:
        tokens = torch.where(tied, draw_full_with_uniform(logits, u, rule), tokens)
        tied = torch.zeros_like(tied)
    return tokens, tied


def draw_full_with_uniform(logits: torch.Tensor, u: torch.Tensor, rule: DrawRule) -> torch.Tensor:
    """The full-vocabulary filter (:func:`filter_logits`) and an inverse-CDF draw by ``u``: the rows
    :func:`draw_with_uniform` marks as tied. ``logits (B, V)``, ``u (B,)`` -> tokens ``(B,)``."""
    x = logits.float() if rule.temperature == 1.0 else logits.float() / rule.temperature
    x = filter_logits(x, rule.top_k or None, rule.top_p if rule.top_p < 1.0 else None)
    return _inverse_cdf_with((x - x.amax(-1, keepdim=True)).exp(), u).squeeze(1)
