"""Short videos: one window of the training length, decoded through the static KV cache.

The condition tokens (plus any given code prefix) are prefilled in one batched forward that fills
the cache; then one token per step is fed at its absolute position, and only the last position's
logits are computed (the head is the largest matrix for a 16k vocabulary).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from tats.gpt.conditioning import Cond
from tats.gpt.model import GPT
from tats.sampling.filtering import sample_next

__all__ = ["SamplingOptions", "generate_tokens", "kv_cache", "precision", "sample_short"]


@dataclass
class SamplingOptions:
    """How the next token is drawn (see :func:`tats.sampling.filtering.sample_next`)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False
    generator: torch.Generator | None = None
    release_compat: bool = False

    def draw(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits (B, V)`` -> tokens ``(B,)``."""
        return sample_next(
            logits, self.temperature, self.top_k, self.top_p, self.greedy, self.generator, self.release_compat
        )


def precision(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The one place sampling precision is chosen: autocast to ``dtype`` (e.g. bf16), or fp32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def kv_cache(gpt: GPT, batch_size: int, dtype: torch.dtype | None = None) -> Iterator[GPT]:
    """Allocate the GPT's KV cache (``block_size`` long) for the duration of a ``with`` block."""
    gpt.set_kv_cache(batch_size, dtype=dtype if dtype is not None else gpt.pos_emb.dtype)
    try:
        yield gpt
    finally:
        gpt.clear_kv_cache()


def generate_tokens(
    gpt: GPT,
    prefix: torch.Tensor,
    n_new: int,
    options: SamplingOptions,
    progress: bool = False,
    desc: str = "tokens",
) -> torch.Tensor:
    """Continue ``prefix (B, P)`` (placed at window positions ``0..P-1``) by ``n_new`` tokens.

    The KV cache must be allocated (:func:`kv_cache`) for batch B; it is overwritten from position
    0, so one allocation serves every window of a long video. Returns the new ids ``(B, n_new)``.
    """
    B, P = prefix.shape
    if n_new <= 0:
        return prefix.new_empty(B, 0)
    if P + n_new - 1 > gpt.block_size:
        raise ValueError(
            f"{P} prefix + {n_new} new tokens need a window of {P + n_new - 1} > block_size {gpt.block_size}"
        )
    positions = torch.arange(gpt.block_size, device=prefix.device)
    out = prefix.new_empty(B, n_new)
    logits = gpt(prefix, input_pos=positions[:P], last_only=True)[:, -1]  # (B, V)
    for i in tqdm(range(n_new), desc=desc, disable=not progress, leave=False):
        token = options.draw(logits)  # (B,)
        out[:, i] = token
        if i + 1 < n_new:
            logits = gpt(token[:, None], input_pos=positions[P + i : P + i + 1], last_only=True)[:, -1]
    return out


@torch.inference_mode()
def sample_short(
    model,
    batch_size: int,
    cond: Cond = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    greedy: bool = False,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    progress: bool = False,
    release_compat: bool = False,
    prefix_codes: torch.Tensor | None = None,
    return_ids: bool = False,
) -> torch.Tensor:
    """Sample one training-length clip of VQGAN codes.

    Args:
        model: a :class:`tats.gpt.load.VideoTransformer` (``.transformer``, ``.config``).
        batch_size: B.
        cond: the condition (None, a class id or ``(B,)`` ids, caption(s) or BPE ids, audio codes).
        temperature, top_k, top_p, greedy, release_compat: see :mod:`tats.sampling.filtering`.
        generator: a ``torch.Generator`` on the model's device, for reproducible draws.
        dtype: autocast dtype (e.g. ``torch.bfloat16`` on GPU); None = float32.
        prefix_codes: ``(B, k, h, w)`` known first latent frames to continue (video prediction).
        return_ids: return the raw token ids ``(B, t*h*w)`` (still shifted by ``n_cond_vocab``).

    Returns:
        codes ``(B, t, h, w)`` with ``clamp(id - n_cond_vocab, 0, n_codes - 1)`` applied, the given
        prefix included.
    """
    config = model.config
    gpt = model.transformer
    device = gpt.pos_emb.device
    prefix = model.cond_tokens(cond, batch_size, device)  # (B, n_cond)
    n_known = 0
    if prefix_codes is not None:
        known = model.codes_to_ids(prefix_codes.to(device))  # (B, k*h*w)
        n_known = known.shape[1]
        prefix = torch.cat([prefix, known], dim=1)
    n_new = config.n_latent_tokens - n_known
    options = SamplingOptions(temperature, top_k, top_p, greedy, generator, release_compat)
    with precision(device, dtype), kv_cache(gpt, batch_size, dtype):
        new = generate_tokens(gpt, prefix, n_new, options, progress, desc="short sample")
    ids = torch.cat([prefix[:, config.n_cond_tokens :], new], dim=1)  # (B, t*h*w)
    return ids if return_ids else model.ids_to_codes(ids, config.latent_shape)
