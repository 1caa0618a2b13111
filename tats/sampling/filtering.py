"""Logit filtering and next-token sampling (REFERENCE.md, "Sampling").

Order: ``logits / temperature``, then top-k, then top-p (nucleus), then a multinomial draw; greedy
takes the argmax. Top-p sorts descending and drops tokens whose cumulative softmax probability
exceeds ``p``, always keeping the first token past the threshold (and so at least one).

Release quirk (``release_compat=True``, the CLI default so published settings reproduce): the
release's sampler runs the filter only when ``top_k`` is given, so ``top_k=None`` disables top-p as
well, while ``top_k=0`` disables only top-k. With ``release_compat=False`` the two are independent:
``top_k`` None/0 skips top-k, ``top_p`` None or >= 1 skips top-p.
"""

from __future__ import annotations

import torch

__all__ = ["filter_logits", "sample_next"]


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
    logits = logits.float() / temperature
    if release_compat and top_k is None:
        pass  # the release filters only when top_k is given: top_p is ignored too
    elif top_k or (top_p is not None and top_p < 1.0):
        logits = filter_logits(logits, top_k, top_p)
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
