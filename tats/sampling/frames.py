"""Video prediction: continue the first frames of real videos.

The observed pixel frames are encoded with the VQGAN into the prefix of latent frames that covers
them: ``k = ceil(n_observed / dt)`` latent frames. When ``n_observed`` is not a multiple of ``dt``
the clip is completed by repeating its last observed frame (the same replicate rule the VQGAN's
padding uses), so no unobserved frame leaks into the prefix. Examples with ``dt = 4``: BAIR
1 -> 15 frames uses a 1-latent-frame prefix; Kinetics 5 -> 11 a 2-latent-frame prefix.

The rest of the training window is sampled with the prefix as context (:func:`sample_short` with
``prefix_codes``); beyond the training length the temporal sliding window continues
(:func:`sample_long`, by default with the widest window ``t - 1``).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tats.gpt.conditioning import Cond
from tats.sampling.core import SamplingOptions
from tats.sampling.long import sample_long
from tats.sampling.short import sample_short

__all__ = ["encode_observed", "observed_latent_frames", "predict_frames"]


def observed_latent_frames(n_observed_frames: int, dt: int) -> int:
    """Latent frames covering ``n_observed_frames`` pixel frames: ``ceil(n / dt)``."""
    return math.ceil(n_observed_frames / dt)


@torch.inference_mode()
def encode_observed(model, video: torch.Tensor, n_observed_frames: int) -> torch.Tensor:
    """Encode the first ``n_observed_frames`` of ``video (B, C, T, H, W)`` -> codes ``(B, k, h, w)``."""
    vqgan = model.require_vqgan()
    if not 1 <= n_observed_frames <= video.shape[2]:
        raise ValueError(f"n_observed_frames must lie in [1, {video.shape[2]}], got {n_observed_frames}")
    dt = vqgan.config.downsample[0]
    k = observed_latent_frames(n_observed_frames, dt)
    clip = video[:, :, :n_observed_frames]
    pad = k * dt - n_observed_frames
    if pad:
        clip = torch.cat([clip, clip[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)  # (B, C, k*dt, H, W)
    return vqgan.encode(clip.to(model.device))


@torch.inference_mode()
def predict_frames(
    model,
    video: torch.Tensor,
    n_observed_frames: int,
    n_latent_frames: int | None = None,
    cond: Cond = None,
    temporal_sample_pos: int | None = None,
    options: SamplingOptions | None = None,
    progress: bool = False,
    **sampling: Any,
) -> torch.Tensor:
    """Continue real videos: codes ``(B, n_latent_frames, h, w)`` whose first latent frames encode
    the observed pixel frames.

    Args:
        model: a :class:`tats.gpt.video_transformer.VideoTransformer` with a dense (non-sparse) latent grid.
        video: ``(B, C, T, H, W)`` in [-0.5, 0.5]; only the first ``n_observed_frames`` are used.
        n_observed_frames: observed pixel frames (1 for BAIR, 5 for Kinetics).
        n_latent_frames: result length; None = the training length ``t``.
        cond: the condition, as for :func:`sample_short`.
        temporal_sample_pos: window for frames beyond ``t``; None = ``t - 1``.
        options, sampling: how tokens are drawn, as for :func:`sample_short`.
        progress: progress bars.
    """
    options = SamplingOptions.of(options, **sampling)
    if model.config.sample_every_n_latent_frames > 0:
        raise ValueError("predict_frames needs a dense transformer (sample_every_n_latent_frames = 0)")
    t = model.config.latent_shape[0]
    n = t if n_latent_frames is None else n_latent_frames
    prefix = encode_observed(model, video, n_observed_frames)  # (B, k, h, w)
    B, k = prefix.shape[:2]
    if k >= n:
        return prefix[:, :n]
    first = min(n, t)
    codes = sample_short(model, B, cond, options, progress, prefix_codes=prefix[:, :first])[:, :first]
    if n > t:
        p = t - 1 if temporal_sample_pos is None else temporal_sample_pos
        codes = sample_long(model, n, B, cond, p, options, progress, prefix_codes=codes)
    return codes
