"""PatchGAN discriminators of the VQGAN: a 2D one on single frames and a 3D one on clips.

Layout (the release, "Discriminators"; keys ``model0..model{n+1}`` as in its state dict): ``model0`` =
conv(k4, s2, p2) + LeakyReLU(0.2); ``model1..model{n-1}`` = conv(k4, s2, p2, channels doubling, at
most 512) + norm + LeakyReLU; ``model{n}`` = conv(k4, s1, p2) + norm + LeakyReLU; ``model{n+1}`` =
conv(k4, s1, p2) to 1 channel. The release's norm is BatchNorm (``norm_type="batch"``); ``"group"``
(GroupNorm 32) is for experiments and not checkpoint-compatible. :class:`Conv2d` / :class:`Conv3d`
keep ``nn.Conv*``'s parameters and keys and work around a PyTorch CPU bug under bf16
(:func:`pad_small_dims`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tats.vqgan.modules import make_norm


def _cpu_bf16(x: torch.Tensor) -> bool:
    """Whether a convolution of ``x`` runs in bf16 on the CPU (a bf16 tensor, or a bf16 CPU autocast)."""
    if x.device.type != "cpu":
        return False
    return x.dtype == torch.bfloat16 or (
        torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    )


def pad_small_dims(
    x: torch.Tensor, kernel_size: tuple[int, ...], padding: tuple[int, ...]
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Zero-pad explicitly every spatial/temporal dim of ``x (B, C, *dims)`` that is smaller than its
    kernel; returns ``(x, padding left to the convolution)`` (0 for the dims padded here).

    Why: PyTorch 2.14's CPU (oneDNN) bf16 convolution computes a wrong WEIGHT gradient (relative error
    about 1, often inf or NaN; the input gradient is right) when a padded dim of the input is smaller
    than the kernel, e.g. the video discriminator's k=4 convolutions on 2 or 3 frames (16-frame clips,
    ``--disc_layers 3``: ``model3`` sees 3 frames). Padding those dims beforehand and convolving them
    without padding is the same function and gives the right gradient (relative error 0.004 against
    fp32, bf16 rounding). ``tests/vqgan/test_vqgan_model.py`` checks both.
    """
    small = [size < k and p > 0 for size, k, p in zip(x.shape[2:], kernel_size, padding)]
    if not any(small):
        return x, padding
    pads: list[int] = []
    for is_small, p in zip(reversed(small), reversed(padding)):  # F.pad takes the last dim first
        pads += [p, p] if is_small else [0, 0]
    return F.pad(x, pads), tuple(0 if is_small else p for is_small, p in zip(small, padding))


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` (same parameters and keys) with the bf16 CPU work-around of :func:`pad_small_dims`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if self.padding_mode == "zeros" and _cpu_bf16(input):
            input, padding = pad_small_dims(input, self.kernel_size, self.padding)
            return F.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` (same parameters and keys) with the bf16 CPU work-around of :func:`pad_small_dims`."""

    def _conv_forward(self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        if self.padding_mode == "zeros" and _cpu_bf16(input):
            input, padding = pad_small_dims(input, self.kernel_size, self.padding)
            return F.conv3d(input, weight, bias, self.stride, padding, self.dilation, self.groups)
        return super()._conv_forward(input, weight, bias)


class _NLayerDiscriminator(nn.Module):
    dims = 2

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm_type: str = "batch") -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"--disc_layers must be >= 1, got {n_layers}")
        conv = Conv2d if self.dims == 2 else Conv3d
        self.n_layers = n_layers

        def act() -> nn.Module:
            return nn.LeakyReLU(0.2)

        blocks: list[nn.Sequential] = [nn.Sequential(conv(in_channels, ndf, 4, stride=2, padding=2), act())]
        width = ndf
        for i in range(1, n_layers + 1):
            prev, width = width, min(width * 2, 512)
            stride = 2 if i < n_layers else 1  # the last normalised block keeps the resolution
            blocks.append(nn.Sequential(conv(prev, width, 4, stride=stride, padding=2),
                                        make_norm(width, norm_type, dims=self.dims), act()))
        blocks.append(nn.Sequential(conv(width, 1, 4, stride=1, padding=2)))
        for i, block in enumerate(blocks):
            self.add_module(f"model{i}", block)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns ``(logits, features)``: ``features`` holds the output of every block
        ``model0..model{n+1}``, the logits last (feature-matching losses drop that last entry)."""
        features = []
        for i in range(self.n_layers + 2):
            x = getattr(self, f"model{i}")(x)
            features.append(x)
        return x, features


class NLayerDiscriminator2D(_NLayerDiscriminator):
    """Frame discriminator: ``(B, C, H, W) -> logits (B, 1, h, w)`` plus per-block features."""

    dims = 2


class NLayerDiscriminator3D(_NLayerDiscriminator):
    """Clip discriminator: ``(B, C, T, H, W) -> logits (B, 1, t, h, w)`` plus per-block features."""

    dims = 3
