"""Hierarchical long videos (the release's TATS-hierarchical models): a sparse AR transformer samples every
s-th latent frame, then an interpolation transformer fills the s - 1 frames between each pair, so K
sparse frames give ``(K - 1) * s + 1`` latent frames. The interpolation model's two given ends are
prefilled once into the KV cache at their absolute positions (docs/sampling.md has the attention mask).
"""

from __future__ import annotations

from typing import Any

import torch
from tqdm.auto import tqdm

from tats.gpt.conditioning import Cond
from tats.sampling.core import SamplingOptions, generate_tokens, kv_cache, precision
from tats.sampling.long import sample_long

__all__ = ["interpolate_frames", "interpolation_layout", "sample_hierarchical"]


def interpolation_layout(config) -> tuple[int, int]:
    """``(s, n)`` of an interpolation transformer: frames per step and its ``n_unmasked``.

    Checks that the ends of its mask are exactly [condition + first frame] and [last frame
    minus its final token].
    """
    n = config.n_unmasked
    hw = config.tokens_per_frame
    nc = config.n_cond_tokens
    if n <= 0:
        raise ValueError("the interpolation transformer needs n_unmasked > 0 (its mask sees both ends)")
    if n != nc + hw - 1:
        raise ValueError(f"n_unmasked={n} should be n_cond_tokens + h*w - 1 = {nc + hw - 1}")
    t = config.latent_shape[0]
    if config.block_size != nc + t * hw - 1:
        raise ValueError(f"block_size={config.block_size} does not hold {t} latent frames of {hw} tokens")
    return t - 1, n


@torch.inference_mode()
def interpolate_frames(
    model,
    first: torch.Tensor,
    last: torch.Tensor,
    cond: Cond = None,
    options: SamplingOptions | None = None,
    **sampling: Any,
) -> torch.Tensor:
    """Fill the ``s - 1`` latent frames between ``first (B, h, w)`` and ``last (B, h, w)`` codes.

    ``options`` / ``sampling``: how tokens are drawn, as for :func:`tats.sampling.sample_short`.
    Returns codes ``(B, s - 1, h, w)``.
    """
    options = SamplingOptions.of(options, **sampling)
    config = model.config
    gpt = model.transformer
    device = gpt.pos_emb.device
    s, n = interpolation_layout(config)
    B = first.shape[0]
    block = gpt.block_size
    head = torch.cat([model.cond_tokens(cond, B, device), model.codes_to_ids(first.to(device))], dim=1)
    tail = model.codes_to_ids(last.to(device))[:, :-1]  # (B, n - 1): the final token is never an input
    # Tail first so the last prefilled position is n, whose logits predict the first missing token.
    ends = torch.cat([tail, head], dim=1)
    positions = torch.arange(block, device=device)
    ends_pos = torch.cat([positions[block - (n - 1) :], positions[: n + 1]])
    n_mid = block - 2 * n  # = (s - 1) * h * w tokens at positions n+1 .. block-n
    with precision(device, options.dtype), kv_cache(gpt, B, options.dtype, options):
        out = generate_tokens(gpt, ends, n_mid, options, prefix_pos=ends_pos, first_pos=n + 1)
    return model.ids_to_codes(out, (s - 1, *config.latent_shape[1:]))


@torch.inference_mode()
def sample_hierarchical(
    ar_model,
    interp_model,
    n_sparse_frames: int,
    batch_size: int,
    cond: Cond = None,
    temporal_sample_pos: int = 1,
    options: SamplingOptions | None = None,
    top_k_init: int | None = None,
    top_p_init: float | None = None,
    progress: bool = False,
    **sampling: Any,
) -> torch.Tensor:
    """Sparse frames from ``ar_model`` then interpolation -> codes ``(B, (K-1)*s + 1, h, w)``.

    ``n_sparse_frames`` = K latent frames of the AR model's sparse grid; s comes from the
    interpolation model (and must equal the AR model's ``sample_every_n_latent_frames`` when set).
    ``options`` / ``sampling``: how tokens are drawn, as for :func:`tats.sampling.sample_short`;
    ``top_k_init`` / ``top_p_init``: for the AR model's first frames (:func:`sample_long`).
    """
    options = SamplingOptions.of(options, **sampling)
    s, _ = interpolation_layout(interp_model.config)
    s_ar = ar_model.config.sample_every_n_latent_frames
    if s_ar and s_ar != s:
        raise ValueError(
            f"the AR model keeps every {s_ar}-th latent frame but the interpolation model fills {s}"
        )
    if tuple(ar_model.latent_shape[1:]) != tuple(interp_model.latent_shape[1:]):
        raise ValueError("AR and interpolation models have different latent frame sizes")
    # Within the AR model's training length the widest window is a plain short sample.
    t_ar = ar_model.latent_shape[0]
    p = t_ar - 1 if n_sparse_frames <= t_ar else temporal_sample_pos
    sparse = sample_long(ar_model, n_sparse_frames, batch_size, cond, temporal_sample_pos=p, options=options,
                         progress=progress, top_k_init=top_k_init, top_p_init=top_p_init)
    interp_cond = cond if interp_model.config.cond_type != "none" else None
    frames = [sparse[:, :1]]
    for k in tqdm(range(n_sparse_frames - 1), desc="interpolation", disable=not progress):
        frames.append(interpolate_frames(interp_model, sparse[:, k], sparse[:, k + 1], interp_cond, options))
        frames.append(sparse[:, k + 1 : k + 2])
    return torch.cat(frames, dim=1)
