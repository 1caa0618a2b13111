"""Per-video reconstruction / prediction metrics: PSNR, SSIM and LPIPS.

Inputs are videos ``(B, C, T, H, W)``, either float in ``[-0.5, 0.5]`` (the model layout, data range
1) or uint8 in ``[0, 255]`` (data range 255). Each metric is computed per frame and averaged over the
frames of a video, giving one value per video ``(B,)``. Float videos are compared after shifting to
``[0, 1]``, so uint8 and float versions of the same videos give the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


def _as_float(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Both videos as float64 in [0, range] with that range (1 for float input, 255 for uint8)."""
    if x.shape != y.shape or x.dim() != 5:
        raise ValueError(
            f"expected two (B, C, T, H, W) videos of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    if (x.dtype == torch.uint8) != (y.dtype == torch.uint8):
        raise ValueError(
            f"mixed dtypes {x.dtype} and {y.dtype}: pass both uint8 or both float in [-0.5, 0.5]"
        )
    if x.dtype == torch.uint8:
        return x.double(), y.double(), 255.0
    # float videos are shifted to [0, 1]: SSIM's luminance term is not shift-invariant and is defined
    # for non-negative intensities (PSNR is unaffected)
    return x.double() + 0.5, y.double() + 0.5, 1.0


def psnr(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """PSNR in dB per video: ``10 log10(range^2 / MSE)`` of each frame, averaged over frames -> (B,).

    Identical frames would give +inf; the MSE is floored at ``eps`` (range-1 units) instead, so equal
    videos score ``10 log10(1 / eps)`` = 100 dB by default.
    """
    x, y, rng = _as_float(x, y)
    mse = (x - y).pow(2).mean(dim=(1, 3, 4)) / rng**2  # (B, T) in range-1 units
    return (10 * torch.log10(1.0 / mse.clamp_min(eps))).mean(dim=1).float()


def _gaussian_window(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)  # (size, size)


def ssim(
    x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03
) -> torch.Tensor:
    """SSIM (Wang et al. 2004) per video -> (B,).

    Gaussian window 11 / sigma 1.5, valid positions only (no padding), each channel of each frame
    separately, constants ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``; the SSIM map is averaged over space and
    channels per frame, then over frames. Frames must be at least ``window`` pixels on each side.
    """
    x, y, rng = _as_float(x, y)
    b, c, t, h, w = x.shape
    if h < window or w < window:
        raise ValueError(f"SSIM window {window} is larger than the frames ({h}x{w})")
    xf = rearrange(x, "b c t h w -> (b t c) 1 h w")
    yf = rearrange(y, "b c t h w -> (b t c) 1 h w")
    kernel = _gaussian_window(window, sigma, x.device)[None, None]  # (1, 1, k, k)

    def blur(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel)

    mu_x, mu_y = blur(xf), blur(yf)
    var_x = blur(xf * xf) - mu_x**2
    var_y = blur(yf * yf) - mu_y**2
    cov = blur(xf * yf) - mu_x * mu_y
    c1, c2 = (k1 * rng) ** 2, (k2 * rng) ** 2
    smap = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    per = rearrange(smap.mean(dim=(1, 2, 3)), "(b t c) -> b t c", b=b, t=t, c=c)
    return per.mean(dim=(1, 2)).float()


def lpips_video(
    x: torch.Tensor, y: torch.Tensor, model: nn.Module, frames_per_batch: int = 64
) -> torch.Tensor:
    """LPIPS per video (mean over frames) -> (B,) on the model's device. Videos are mapped to [-1, 1].

    ``model``: an :class:`tats.metrics.lpips.LPIPS` (use ``LPIPS.pretrained()``) on any device; the
    videos may live elsewhere (e.g. uint8 on the CPU): ``frames_per_batch`` frames at a time are moved
    to the model's device, which runs without TF32 (:func:`tats.precision.no_tf32`).
    Grey videos (C = 1) are repeated to three channels.
    """
    from tats.precision import no_tf32

    if x.shape != y.shape or x.dim() != 5:
        raise ValueError(
            f"expected two (B, C, T, H, W) videos of equal shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    anchor = next(iter(model.parameters()), None)
    if anchor is None:
        anchor = next(iter(model.buffers()), None)
    device = anchor.device if anchor is not None else x.device

    def to_unit(frames: torch.Tensor) -> torch.Tensor:  # (n, C, H, W) -> float (n, 3, H, W) in [-1, 1]
        v = frames.to(device)
        v = v.float() / 127.5 - 1 if v.dtype == torch.uint8 else v.float() * 2
        return v.expand(-1, 3, -1, -1) if v.shape[1] == 1 else v

    b, _, t = x.shape[:3]
    xf = rearrange(x, "b c t h w -> (b t) c h w")  # input dtype and device until each chunk is moved
    yf = rearrange(y, "b c t h w -> (b t) c h w")
    with torch.no_grad(), no_tf32():
        d = torch.cat(
            [
                model(to_unit(xf[i : i + frames_per_batch]), to_unit(yf[i : i + frames_per_batch])).flatten()
                for i in range(0, len(xf), frames_per_batch)
            ]
        )
    return d.view(b, t).mean(dim=1)
