"""The model sampling runs on: a GPT over VQGAN codes plus the frozen VQGAN(s) that encode and decode
them. :func:`tats.gpt.load.load_transformer` builds it from a checkpoint (the release's or ours).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import torch
import torch.nn as nn

from tats.gpt.conditioning import Cond, codes_to_ids, cond_tokens, ids_to_codes
from tats.gpt.config import GPTConfig
from tats.gpt.model import GPT
from tats.vqgan.decode import decode_codes

__all__ = ["VideoTransformer"]


class VideoTransformer(nn.Module):
    """A GPT over VQGAN codes plus the frozen VQGAN that encodes/decodes them.

    Attributes:
        transformer: the :class:`GPT`, or the masked-token model (:class:`tats.gpt.masked.MaskedTransformer`;
            :attr:`objective` tells them apart, and the samplers dispatch on it).
        vqgan: the video VQGAN (eval mode, frozen), or None when none was found.
        cond_vqgan: the audio VQGAN of audio-conditioned models (frozen), else None.
        config: the GPT's :class:`GPTConfig` (token layout included).
    """

    def __init__(
        self, transformer: GPT | nn.Module, vqgan: nn.Module | None = None,
        cond_vqgan: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.transformer = transformer
        self.vqgan = vqgan
        self.cond_vqgan = cond_vqgan
        for m in (vqgan, cond_vqgan):
            if m is not None:
                m.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> VideoTransformer:
        super().train(mode)
        for m in (self.vqgan, self.cond_vqgan):  # the first stage stays frozen in eval mode
            if m is not None:
                m.eval()
        return self

    @property
    def config(self) -> GPTConfig:
        return self.transformer.config

    @property
    def objective(self) -> str:
        """``"autoregressive"`` (the GPT) or ``"masked"`` (the masked-token model)."""
        return getattr(self.transformer, "objective", "autoregressive")

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(t, h, w)`` code grid of one training clip as the transformer sees it."""
        return self.config.latent_shape

    @property
    def device(self) -> torch.device:
        return self.transformer.pos_emb.device

    def cond_tokens(self, cond: Cond, batch_size: int, device: torch.device | None = None) -> torch.Tensor:
        """Condition ids ``(B, n_cond_tokens)``; see :func:`tats.gpt.conditioning.cond_tokens`."""
        return cond_tokens(self.config, cond, batch_size, self.device if device is None else device)

    def codes_to_ids(self, codes: torch.Tensor) -> torch.Tensor:
        """VQGAN codes ``(B, t, h, w)`` -> shifted token ids ``(B, t*h*w)``."""
        return codes_to_ids(self.config, codes)

    def ids_to_codes(self, ids: torch.Tensor, latent_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Token ids ``(B, L)`` -> codes ``clamp(id - n_cond_vocab, 0, n_codes - 1)``."""
        return ids_to_codes(self.config, ids, latent_shape)

    def require_vqgan(self) -> nn.Module:
        """The video VQGAN; ``RuntimeError`` naming the fix when the model was loaded without one."""
        if self.vqgan is None:
            raise RuntimeError(
                "this transformer has no VQGAN: its checkpoint holds none; "
                "pass vqgan_ckpt= to load_transformer"
            )
        return self.vqgan

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Video ``(B, C, T, H, W)`` in [-0.5, 0.5] -> codes ``(B, t, h, w)``, keeping every
        ``sample_every_n_latent_frames``-th latent frame when that is > 0 (as in the release)."""
        codes = self.require_vqgan().encode(video)
        s = self.config.sample_every_n_latent_frames
        return codes[:, ::s] if s > 0 else codes

    @torch.no_grad()
    def decode(
        self,
        codes: torch.Tensor,
        chunk_size: int | None = None,
        overlap: int | None = None,
        out_device: Union[None, str, torch.device] = None,
        blend: bool = False,
    ) -> torch.Tensor:
        """Codes ``(B, t, h, w)`` -> video ``(B, C, t*dt, H, W)`` (no clamping): the one way samples are
        decoded. ``chunk_size`` latent frames at a time (None: all at once), ``overlap`` latent frames
        of context, cut or cross-faded (``blend``), assembled on ``out_device``: see
        :func:`tats.vqgan.decode.decode_codes`."""
        return decode_codes(self.require_vqgan(), codes, chunk_size, overlap, out_device, blend)
