"""Decode long code sequences with the VQGAN in bounded memory: the one decoding route of samples
(:meth:`tats.gpt.video_transformer.VideoTransformer.decode` calls :func:`decode_codes`).

Temporal chunks of ``chunk_size`` latent frames are decoded, each widened by ``overlap`` latent frames of
context on both sides, and only the chunk's own frames kept; with ``overlap`` covering the decoder's
temporal reach and per-position norms (batch norm in eval mode) this equals one whole decode. Windows
decoded alone differ near their ends (TATS issue 31, :func:`overlapping_window_difference`);
``blend=True`` cross-fades overlaps for group norm. docs/long_videos.md has the measurements.
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn

__all__ = ["decode_codes", "overlapping_window_difference", "temporal_radius"]


@torch.inference_mode()
def temporal_radius(vqgan: nn.Module, probe_frames: int = 16) -> int:
    """The decoder's temporal reach in latent frames, measured by a probe.

    Two decodes of a ``(1, probe_frames, 1, 1)`` code sequence that differ in the middle frame:
    the changed pixel frames span ``middle +- radius`` latent frames. Returns ``probe_frames``
    when the change reaches the probe's ends (e.g. group norm mixes the whole clip).
    """
    device = next(vqgan.parameters()).device
    n_codes = vqgan.config.n_codes
    dt = vqgan.config.downsample[0]
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, n_codes, (1, probe_frames, 1, 1), generator=g).to(device)
    other = codes.clone()
    mid = probe_frames // 2
    other[:, mid] = (codes[:, mid] + 1) % n_codes
    diff = (vqgan.decode(codes) - vqgan.decode(other)).abs().amax(dim=(0, 1, 3, 4))  # (T,)
    changed = (diff > 0).nonzero().flatten()
    if changed.numel() == 0:
        return 0
    lo, hi = int(changed[0]) // dt, int(changed[-1]) // dt
    if lo == 0 or hi == probe_frames - 1:
        return probe_frames
    return max(mid - lo, hi - mid)


@torch.inference_mode()
def decode_codes(
    vqgan: nn.Module,
    codes: torch.Tensor,
    chunk_size: int | None = None,
    overlap: int | None = None,
    out_device: Union[None, str, torch.device] = None,
    blend: bool = False,
) -> torch.Tensor:
    """Codes ``(B, t, h, w)`` -> video ``(B, C, t*dt, H, W)`` (no clamping).

    Args:
        vqgan: a :class:`tats.vqgan.model.VQGAN` (``.decode`` and ``.config.downsample``).
        codes: LongTensor ``(B, t, h, w)`` on the VQGAN's device.
        chunk_size: latent frames decoded per call; None (or ``>= t``) decodes everything at once.
        overlap: latent frames of context added on each side of a chunk and then dropped;
            None = :func:`temporal_radius` (exact for per-position norms).
        out_device: where the result is assembled (e.g. ``"cpu"`` to keep GPU memory bounded);
            None = the codes' device.
        blend: weigh every decoded frame of the widened chunks by its distance to its chunk's cut ends and
            average where chunks overlap, instead of keeping each chunk's own frames: no jump at chunk
            borders when chunks differ (group norm). Not exact for batch norm: keep it off there.
    """
    t = codes.shape[1]
    if chunk_size is None or chunk_size >= t:
        video = vqgan.decode(codes)
        return video if out_device is None else video.to(out_device)
    if overlap is None:
        overlap = temporal_radius(vqgan)
    if chunk_size < 1 or overlap < 0:
        raise ValueError(f"chunk_size must be >= 1 and overlap >= 0, got {chunk_size}, {overlap}")
    dt = vqgan.config.downsample[0]
    out: torch.Tensor | None = None
    weight = torch.zeros(t * dt, device=out_device or codes.device)
    for start in range(0, t, chunk_size):
        stop = min(start + chunk_size, t)
        a, b = max(0, start - overlap), min(t, stop + overlap)
        piece = vqgan.decode(codes[:, a:b])  # (B, C, (b-a)*dt, H, W)
        if out is None:  # allocated once the channel/spatial sizes are known
            B, C, _, H, W = piece.shape
            out = piece.new_zeros(B, C, t * dt, H, W, device=out_device or piece.device)
        if not blend:
            out[:, :, start * dt : stop * dt] = piece[:, :, (start - a) * dt : (stop - a) * dt]
            continue
        # distance (in frames, + 0.5) to the nearest end that was cut; the video's own ends are not cuts
        f = torch.arange(a * dt, b * dt, device=weight.device, dtype=torch.float32)
        left = f - a * dt + 0.5 if a > 0 else torch.full_like(f, float("inf"))
        right = b * dt - f - 0.5 if b < t else torch.full_like(f, float("inf"))
        w = torch.minimum(left, right).clamp(max=float(overlap * dt + 1))  # (b-a)*dt, flat inside the chunk
        out[:, :, a * dt : b * dt] += piece.to(out.device) * w.to(out.device).view(1, 1, -1, 1, 1)
        weight[a * dt : b * dt] += w
    if blend:
        out /= weight.to(out.device).view(1, 1, -1, 1, 1)
    return out


@torch.inference_mode()
def overlapping_window_difference(vqgan: nn.Module, codes: torch.Tensor, window: int, context: int = 0,
                                  stride: int = 1) -> dict[str, float]:
    """How much two decodes of overlapping windows of one code sequence disagree on their shared frames.

    Windows ``[s, s + window)`` latent frames for ``s = 0, stride, ...`` are decoded each on its own, with
    ``context`` latent frames more on each side (where they exist) that are decoded and dropped
    (``context=0``: each window alone, as the release decoded its clips). Returns the max and mean
    absolute difference, in uint8 levels of ``clamp(x, -0.5, 0.5)``, over every frame two windows share.
    """
    t, dt = codes.shape[1], vqgan.config.downsample[0]
    frames: dict[int, list[torch.Tensor]] = {}
    for s in range(0, t - window + 1, stride):
        a, b = max(0, s - context), min(t, s + window + context)
        video = (vqgan.decode(codes[:, a:b]).clamp(-0.5, 0.5) + 0.5) * 255  # (B, C, (b-a)*dt, H, W)
        for f in range(s * dt, (s + window) * dt):
            frames.setdefault(f, []).append(video[:, :, f - a * dt].float())
    diffs = [(x - y).abs() for shared in frames.values() for x, y in zip(shared, shared[1:])]
    if not diffs:
        raise ValueError(f"windows of {window} latent frames at stride {stride} share no frame in {t}")
    both = torch.stack(diffs)
    return dict(max=float(both.max()), mean=float(both.mean()), pairs=len(diffs))
