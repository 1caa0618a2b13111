"""PatchGAN discriminators of the VQGAN: a 2D one on single frames and a 3D one on clips.

Layout (REFERENCE.md, "Discriminators"; keys ``model0..model{n+1}`` as in the release's state dict):
``model0`` = conv(k4, s2, p2) + LeakyReLU(0.2); ``model1..model{n-1}`` = conv(k4, s2, p2, channels
doubling, at most 512) + norm + LeakyReLU; ``model{n}`` = conv(k4, s1, p2) + norm + LeakyReLU;
``model{n+1}`` = conv(k4, s1, p2) to 1 channel.

The release's discriminators use BatchNorm (the default ``norm_type="batch"``; the reference layout
``vqgan_state_dict.tsv`` shows ``running_mean`` in them); ``"group"`` (GroupNorm 32) is offered for
experiments only and is not checkpoint-compatible with released files.
"""

from __future__ import annotations

import torch
from torch import nn

from tats.vqgan.modules import make_norm


class _NLayerDiscriminator(nn.Module):
    dims = 2

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, norm_type: str = "batch") -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"--disc_layers must be >= 1, got {n_layers}")
        conv = nn.Conv2d if self.dims == 2 else nn.Conv3d
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
