"""Long videos with the temporal (and optionally spatial) sliding window.

Temporal rule (the release's fast path): the first ``temporal_sample_pos`` (= p) latent frames are a
short sample; every further latent frame is sampled after the condition and the previous p latent
frames, in a window that restarts at position 0. Spatial rule (``sample_resolution`` larger than the
trained h x w; the release sampled only at the trained size): each token is drawn from a trained-size
crop centred on it. docs/sampling.md has both rules in full.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
from tqdm.auto import tqdm

from tats.gpt.conditioning import Cond
from tats.sampling.core import SamplingOptions, generate_tokens, kv_cache, precision
from tats.sampling.guidance import check_guidance, guide_logits, is_guided
from tats.sampling.masked import sample_long_masked

__all__ = ["context_frames", "sample_long", "spatial_origin"]


def context_frames(frame: int, temporal_sample_pos: int) -> range:
    """Latent frames that condition ``frame``: ``max(0, frame - p) .. frame - 1``, in window order.

    Frames before ``p`` belong to the first short sample and see every earlier frame.
    """
    return range(max(0, frame - temporal_sample_pos), frame)


def spatial_origin(y: int, x: int, grid: Sequence[int], window: Sequence[int]) -> tuple[int, int]:
    """Top-left ``(oy, ox)`` of the trained-size crop used for token ``(y, x)`` of a larger grid."""
    (H, W), (h, w) = grid, window
    return min(max(y - h // 2, 0), H - h), min(max(x - w // 2, 0), W - w)


def _check_window(config, temporal_sample_pos: int) -> None:
    t = config.latent_shape[0]
    if not 1 <= temporal_sample_pos < t:
        raise ValueError(
            f"temporal_sample_pos must lie in [1, {t - 1}] for a model trained on {t} latent frames, "
            f"got {temporal_sample_pos}"
        )


@torch.inference_mode()
def sample_long(
    model,
    n_latent_frames: int,
    batch_size: int,
    cond: Cond = None,
    temporal_sample_pos: int = 1,
    options: SamplingOptions | None = None,
    progress: bool = False,
    sample_resolution: Union[None, int, Sequence[int]] = None,
    prefix_codes: torch.Tensor | None = None,
    top_k_init: int | None = None,
    top_p_init: float | None = None,
    return_ids: bool = False,
    **sampling: Any,
) -> torch.Tensor:
    """Sample ``n_latent_frames`` latent frames with the sliding window.

    Args:
        model: a :class:`tats.gpt.video_transformer.VideoTransformer`.
        n_latent_frames: length of the result in latent frames (pixel frames = this x dt).
        batch_size: B.
        cond: the condition, as for :func:`tats.sampling.sample_short`.
        temporal_sample_pos: p, the number of previous latent frames each new frame sees
            (``1 <= p < t_train``).
        options, sampling: how tokens are drawn and in which precision, as for
            :func:`tats.sampling.sample_short`.
        sample_resolution: latent (H, W) (or one int) of the result; None = the trained (h, w).
        prefix_codes: ``(B, k, H, W)`` known first latent frames (video prediction).
        top_k_init, top_p_init: override top_k / top_p for the first p frames (when given).
        return_ids: return raw ids ``(B, n, H, W)`` (shifted by ``n_cond_vocab``) instead of codes.

    Returns:
        codes ``(B, n_latent_frames, H, W)``.
    """
    options = SamplingOptions.of(options, **sampling)
    config = model.config
    p = temporal_sample_pos
    _check_window(config, p)
    if getattr(model, "objective", "autoregressive") == "masked":
        return sample_long_masked(model, n_latent_frames, batch_size, cond, p, options, progress,
                                  prefix_codes, top_k_init, top_p_init, return_ids,
                                  sample_resolution=sample_resolution)
    check_guidance(options, config)
    gpt = model.transformer
    device = gpt.pos_emb.device
    _, h, w = config.latent_shape
    if sample_resolution is None:
        H, W = h, w
    elif isinstance(sample_resolution, int):
        H = W = sample_resolution
    else:
        H, W = sample_resolution
    if H < h or W < w:
        raise ValueError(f"sample_resolution {(H, W)} is smaller than the trained latent size {(h, w)}")
    cond_ids = model.cond_tokens(cond, batch_size, device)  # (B, n_cond)
    if is_guided(options):  # (2B, n_cond): then the null condition; the windows below keep both halves
        cond_ids = torch.cat([cond_ids, torch.full_like(cond_ids, config.null_id)])
    ids = torch.zeros(batch_size, n_latent_frames, H, W, dtype=torch.long, device=device)
    n_known = 0
    if prefix_codes is not None:
        n_known = min(prefix_codes.shape[1], n_latent_frames)
        ids[:, :n_known] = model.codes_to_ids(prefix_codes[:, :n_known].to(device)).view(
            batch_size, n_known, H, W
        )
    init_options = SamplingOptions.of(
        options,
        top_k=options.top_k if top_k_init is None else top_k_init,
        top_p=options.top_p if top_p_init is None else top_p_init,
    )
    with precision(device, options.dtype), kv_cache(gpt, cond_ids.shape[0], options.dtype, options):
        if (H, W) == (h, w):
            _temporal_only(gpt, ids, cond_ids, p, n_known, options, init_options, progress)
        else:
            _spatial_window(gpt, ids, cond_ids, p, n_known, (h, w), options, init_options, progress)
    return ids if return_ids else (ids - config.n_cond_vocab).clamp(0, config.n_codes - 1)


def _windows(cond_ids: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The prefix ``[condition, tokens]`` ``(B, P)``, and with guidance (``cond_ids`` of 2B rows) its
    null-condition twin (else None)."""
    B = tokens.shape[0]
    prefix = torch.cat([cond_ids[:B], tokens], dim=1)
    return prefix, (torch.cat([cond_ids[B:], tokens], dim=1) if cond_ids.shape[0] > B else None)


def _temporal_only(gpt, ids, cond_ids, p, n_known, options, init_options, progress) -> None:
    """Fill ``ids (B, n, h, w)`` in place from frame ``n_known`` on (trained spatial size)."""
    B, n = ids.shape[:2]
    flat = ids.view(B, -1)  # (B, n*h*w), shares storage with ids
    hw = ids.shape[2] * ids.shape[3]
    first = min(p, n)
    if n_known < first:  # the first p frames: one short sample after the known ones
        prefix, uncond = _windows(cond_ids, flat[:, : n_known * hw])
        flat[:, n_known * hw : first * hw] = generate_tokens(
            gpt, prefix, (first - n_known) * hw, init_options, progress, desc="first frames",
            uncond_prefix=uncond,
        )
    for f in tqdm(range(max(first, n_known), n), desc="long sample", disable=not progress):
        ctx = context_frames(f, p)
        prefix, uncond = _windows(cond_ids, flat[:, ctx.start * hw : ctx.stop * hw])
        flat[:, f * hw : (f + 1) * hw] = generate_tokens(gpt, prefix, hw, options, uncond_prefix=uncond)


def _spatial_window(gpt, ids, cond_ids, p, n_known, window, options, init_options, progress) -> None:
    """Fill ``ids (B, n, H, W)`` token by token with trained-size crops (see docs/sampling.md)."""
    B, n, H, W = ids.shape
    h, w = window
    n_cond = cond_ids.shape[1]
    guided = cond_ids.shape[0] > B  # 2B rows: conditional, then the null condition

    def both(x: torch.Tensor) -> torch.Tensor:  # the token rows of both halves of a guided batch
        return torch.cat([x, x]) if guided else x

    positions = torch.arange(gpt.block_size, device=ids.device)
    for f in tqdm(range(n_known, n), desc="long sample", disable=not progress):
        ctx = context_frames(f, p)
        opts = init_options if f < p else options
        origin, length = None, 0  # crop of the cached window and how many tokens it holds
        for y in range(H):
            for x in range(W):
                oy, ox = spatial_origin(y, x, (H, W), (h, w))
                k = (y - oy) * w + (x - ox)  # the token's raster index inside the crop
                if (oy, ox) == origin and length == n_cond + len(ctx) * h * w + k:
                    # Same crop: only the previous token is new to the cache.
                    py, px = divmod(k - 1, w)
                    last = ids[:, f, oy + py, ox + px][:, None]  # (B, 1)
                    logits = gpt(both(last), input_pos=positions[length - 1 : length], last_only=True,
                                 kv_len=length)  # known here: no device read-back per token
                else:
                    past = ids[:, ctx.start : ctx.stop, oy : oy + h, ox : ox + w].reshape(B, -1)
                    cur = ids[:, f, oy : oy + h, ox : ox + w].reshape(B, -1)[:, :k]
                    window_ids = torch.cat([cond_ids, both(past), both(cur)], dim=1)  # (B or 2B, length)
                    length = window_ids.shape[1]
                    logits = gpt(window_ids, input_pos=positions[:length], last_only=True, kv_len=length)
                    origin = (oy, ox)
                logits = guide_logits(logits, opts.cfg_scale) if guided else logits
                ids[:, f, y, x] = opts.draw(logits[:, -1])
                length += 1
