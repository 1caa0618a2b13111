"""The time-agnostic 3D VQGAN autoencoder (stage 1): encoder, 1x1x1 convs around a quantizer (the
release's EMA codebook, or FSQ / LFQ), decoder. Children are named as the release's state dict:
``encoder``, ``decoder``, ``pre_vq_conv``, ``post_vq_conv``, ``codebook``. Discriminators and losses
live in ``discriminators.py`` / ``losses.py``; this module holds only the autoencoder.
"""

from __future__ import annotations

import torch
from torch import nn

from tats.precision import no_tf32
from tats.vqgan.codebook import Codebook
from tats.vqgan.config import VQGANConfig
from tats.vqgan.modules import Decoder, Encoder, SamePadConv3d
from tats.vqgan.quantizers import FSQ, LFQ


def build_quantizer(config: VQGANConfig) -> nn.Module:
    """The release's EMA :class:`Codebook` (``quantizer="vq"``) or a codebook-free
    :class:`~tats.vqgan.quantizers.FSQ` / :class:`~tats.vqgan.quantizers.LFQ`; all map latents
    ``(B, D, t, h, w)`` to integer codes and back with the same interface."""
    if config.quantizer == "fsq":
        return FSQ(config.fsq_levels)
    if config.quantizer == "lfq":
        return LFQ(config.lfq_bits, entropy_weight=config.lfq_entropy_weight,
                   commitment_weight=config.lfq_commitment_weight, diversity_gamma=config.lfq_diversity_gamma)
    return Codebook(config.n_codes, config.embedding_dim, no_random_restart=config.no_random_restart,
                    restart_thres=config.restart_thres)


class VQGAN(nn.Module):
    """Video <-> code grid. Videos are ``(B, C, T, H, W)`` float in ``[-0.5, 0.5]``; codes are
    ``LongTensor (B, T/dt, H/dh, W/dw)`` with ``(dt, dh, dw) = config.downsample``.

    ``channels_last_3d=True`` converts the conv stack to ``torch.channels_last_3d`` memory format
    (may help cuDNN under bf16 on recent GPUs; on CPU it measured no faster, 0.23 vs 0.25-0.30 train
    steps/s, so it is off by default; measure with ``benchmarks/bench_vqgan.py --channels_last``).
    """

    def __init__(self, config: VQGANConfig, channels_last_3d: bool = False) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.encoder = Encoder(config.n_hiddens, config.downsample, config.image_channels,
                               config.norm_type, config.padding_type)
        self.decoder = Decoder(config.n_hiddens, config.downsample, config.image_channels, config.norm_type)
        width = self.encoder.out_channels
        self.pre_vq_conv = SamePadConv3d(width, config.embedding_dim, 1, padding_type=config.padding_type)
        self.post_vq_conv = SamePadConv3d(config.embedding_dim, width, 1)
        self.codebook = build_quantizer(config)  # named as the release's child: its state-dict keys
        self.channels_last_3d = channels_last_3d
        if channels_last_3d:
            self.to(memory_format=torch.channels_last_3d)

    def _check_video(self, video: torch.Tensor) -> None:
        if video.dim() != 5 or video.shape[1] != self.config.image_channels:
            raise ValueError(
                f"expected video (B, {self.config.image_channels}, T, H, W), got {tuple(video.shape)}"
            )
        for name, size, d in zip(("T", "H", "W"), video.shape[2:], self.config.downsample):
            if size % d != 0:
                raise ValueError(
                    f"video {name}={size} is not divisible by its downsample factor {d} "
                    f"(--downsample {' '.join(map(str, self.config.downsample))}); shape {tuple(video.shape)}"
                )

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last_3d else x

    def encode_latents(self, video: torch.Tensor) -> torch.Tensor:
        """Continuous pre-quantisation latents: ``(B, C, T, H, W) -> (B, D, t, h, w)``."""
        self._check_video(video)
        return self.pre_vq_conv(self.encoder(self._prep(video)))

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, C, T, H, W)`` in [-0.5, 0.5] -> codes ``LongTensor (B, t, h, w)``. Never updates the
        codebook statistics (unlike the release's encode in training mode). Runs without TF32
        (:func:`tats.precision.no_tf32`): GPU codes match the CPU's but for float32 rounding."""
        with no_tf32():
            return self.codebook.codes(self.encode_latents(video))

    def decode_latents(self, quantized: torch.Tensor) -> torch.Tensor:
        """Quantised latents ``(B, D, t, h, w)`` -> video ``(B, C, T, H, W)``."""
        return self.decoder(self.post_vq_conv(self._prep(quantized)))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``LongTensor (B, t, h, w)`` -> video ``(B, C, T, H, W)`` (no output activation;
        clamp to [-0.5, 0.5] for display)."""
        if codes.dim() != 4:
            raise ValueError(f"expected codes (B, t, h, w), got shape {tuple(codes.shape)}")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.config.n_codes):
            raise ValueError(f"codes must lie in [0, {self.config.n_codes}), got "
                             f"[{int(codes.min())}, {int(codes.max())}]")
        # the codebook is fp32; follow the conv weights' dtype so a bf16/fp16 model decodes too
        return self.decode_latents(self.codebook.lookup(codes).to(self.post_vq_conv.conv.weight.dtype))

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """``video (B, C, T, H, W)`` -> ``dict(recon=(B, C, T, H, W), codes=(B, t, h, w),
        commitment_loss=scalar, perplexity=scalar, usage=scalar)``. In training mode the codebook
        EMA, init and restarts run (see :class:`~tats.vqgan.codebook.Codebook`)."""
        vq = self.codebook(self.encode_latents(video))
        out = dict(
            recon=self.decode_latents(vq["embeddings"]),
            codes=vq["encodings"],
            commitment_loss=vq["commitment_loss"],
            perplexity=vq["perplexity"],
            usage=vq["usage"],
        )
        if "entropy_loss" in vq:  # LFQ's penalty (already inside commitment_loss), for the logs
            out["entropy_loss"] = vq["entropy_loss"]
        return out
