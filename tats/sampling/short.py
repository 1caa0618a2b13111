"""Short videos: one window of the training length, through the static KV cache.

The condition tokens (plus any given code prefix) are prefilled, then the rest of the window is
decoded token by token (:func:`tats.sampling.core.generate_tokens`). A masked-token model is filled by
parallel decoding instead (:func:`tats.sampling.masked.sample_short_masked`).
"""

from __future__ import annotations

from typing import Any

import torch

from tats.gpt.conditioning import Cond
from tats.sampling.core import SamplingOptions, generate_tokens, kv_cache, precision
from tats.sampling.guidance import check_guidance, is_guided, with_null_rows
from tats.sampling.masked import sample_short_masked

__all__ = ["sample_short"]


@torch.inference_mode()
def sample_short(
    model,
    batch_size: int,
    cond: Cond = None,
    options: SamplingOptions | None = None,
    progress: bool = False,
    prefix_codes: torch.Tensor | None = None,
    return_ids: bool = False,
    **sampling: Any,
) -> torch.Tensor:
    """Sample one training-length clip of VQGAN codes.

    Args:
        model: a :class:`tats.gpt.video_transformer.VideoTransformer` (``.transformer``, ``.config``).
        batch_size: B.
        cond: the condition (None, a class id or ``(B,)`` ids, caption(s) or BPE ids, audio codes).
        options: how tokens are drawn and in which precision (:class:`~tats.sampling.core.SamplingOptions`);
            its fields may also be given as keywords (``temperature``, ``top_k``, ``top_p``, ``greedy``,
            ``generator``, ``dtype``, ``release_compat``, ``cfg_scale``; ``steps``, ``mask_temperature``
            for masked models), which override ``options``.
        prefix_codes: ``(B, k, h, w)`` known first latent frames to continue (video prediction).
        return_ids: return the raw token ids ``(B, t*h*w)`` (still shifted by ``n_cond_vocab``).

    Returns:
        codes ``(B, t, h, w)`` with ``clamp(id - n_cond_vocab, 0, n_codes - 1)`` applied, the given
        prefix included.
    """
    options = SamplingOptions.of(options, **sampling)
    if getattr(model, "objective", "autoregressive") == "masked":
        return sample_short_masked(model, batch_size, cond, options, progress, prefix_codes, return_ids)
    config = model.config
    check_guidance(options, config)
    gpt = model.transformer
    device = gpt.pos_emb.device
    prefix = model.cond_tokens(cond, batch_size, device)  # (B, n_cond)
    n_known = 0
    if prefix_codes is not None:
        known = model.codes_to_ids(prefix_codes.to(device))  # (B, k*h*w)
        n_known = known.shape[1]
        prefix = torch.cat([prefix, known], dim=1)
    n_new = config.n_latent_tokens - n_known
    guided = is_guided(options)
    uncond = with_null_rows(prefix, config)[batch_size:] if guided else None  # (B, P) null condition
    rows = 2 * batch_size if guided else batch_size
    with precision(device, options.dtype), kv_cache(gpt, rows, options.dtype, options):
        new = generate_tokens(gpt, prefix, n_new, options, progress, desc="short sample",
                              uncond_prefix=uncond)
    ids = torch.cat([prefix[:, config.n_cond_tokens :], new], dim=1)  # (B, t*h*w)
    return ids if return_ids else model.ids_to_codes(ids, config.latent_shape)
