"""Decode long code sequences with the VQGAN in bounded memory: the one decoding route of samples
(:meth:`tats.gpt.video_transformer.VideoTransformer.decode` calls :func:`decode_codes`).

A long sample (e.g. 256 latent frames = 1024 pixel frames) does not fit through the 3D decoder at
once. We decode temporal chunks of ``chunk_size`` latent frames, each widened by ``overlap`` latent
frames of context on both sides (where they exist), and keep only the chunk's own ``chunk_size * dt``
pixel frames. Video ends are decoded with the same replicate padding as a whole decode.

Exactness: the decoder is convolutional in time, so a chunk equals the matching slice of a whole
decode when ``overlap`` covers the decoder's temporal receptive radius (in latent frames) and the
norm layers are per-position in eval mode (the released checkpoints use batch norm). With group
norm, statistics are taken over the whole clip, so chunks only approximate the whole decode (that
is also true of the release, which decoded each training-length window on its own).
"""

from __future__ import annotations

from typing import Union

import torch
import torch.nn as nn

__all__ = ["decode_codes", "temporal_radius"]


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
    for start in range(0, t, chunk_size):
        stop = min(start + chunk_size, t)
        a, b = max(0, start - overlap), min(t, stop + overlap)
        piece = vqgan.decode(codes[:, a:b])  # (B, C, (b-a)*dt, H, W)
        piece = piece[:, :, (start - a) * dt : (stop - a) * dt]
        if out is None:  # allocated once the channel/spatial sizes are known
            B, C, _, H, W = piece.shape
            out = piece.new_empty(B, C, t * dt, H, W, device=out_device or piece.device)
        out[:, :, start * dt : stop * dt] = piece
    return out
