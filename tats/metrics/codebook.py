"""Codebook usage of a VQ model: how many codes a set of code grids uses, and how evenly."""

from __future__ import annotations

import torch


def code_perplexity(codes: torch.Tensor, n_codes: int) -> float:
    """Perplexity ``exp(H)`` of the histogram of ``codes`` (any shape, ints in ``[0, n_codes)``).

    Over ALL positions at once, unlike the codebook's per-batch value: between 1 (one code everywhere) and
    ``n_codes`` (every code equally often). Computed in fp64 (``0 log 0 = 0``).
    """
    counts = torch.bincount(codes.reshape(-1).long().cpu(), minlength=n_codes).double()  # (n_codes,)
    if counts.numel() > n_codes:
        raise ValueError(f"codes go up to {counts.numel() - 1}, beyond n_codes={n_codes}")
    probs = counts[counts > 0] / counts.sum()
    return float(torch.exp(-(probs * probs.log()).sum()))
