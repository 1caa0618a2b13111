"""The bidirectional masked-token transformer (MaskGIT, Chang et al. 2022) over the same VQGAN codes.

Where the GPT predicts the next token from the ones before it, this model sees the whole clip at once,
some codes replaced by a ``[MASK]`` id, and predicts the codes under the masks, so sampling fills a
clip in a few parallel steps (:mod:`tats.sampling.masked`). Token layout: the GPT's
(:mod:`tats.gpt.conditioning`) plus :attr:`MaskedConfig.mask_id` = ``vocab_size``; the input is the
whole sequence (``block_size = n_cond_tokens + t*h*w``) and the head predicts the unshifted codes at
the video positions only. Training masks (:func:`training_mask`, :func:`cosine_schedule`): see
docs/training.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from tats.gpt.config import GPTConfig
from tats.gpt.model import GPT, Block
from tats.io.checkpoint import CheckpointError

__all__ = ["MaskedConfig", "MaskedTransformer", "cosine_schedule", "masked_from_state_dict", "training_mask"]

#: The name checkpoints and command lines use for this training objective (the GPT's: "autoregressive").
OBJECTIVE = "masked"


def cosine_schedule(r: float | torch.Tensor) -> float | torch.Tensor:
    """MaskGIT's mask schedule ``gamma(r) = cos(pi/2 * r)``: the share of codes still masked at progress
    ``r`` in [0, 1] (1 at the start, 0 at the end); the training mask ratio is ``gamma(u)``,
    ``u ~ U[0, 1)``."""
    if torch.is_tensor(r):
        return torch.cos(0.5 * math.pi * r)
    return math.cos(0.5 * math.pi * r)


@dataclass
class MaskedConfig(GPTConfig):
    """:class:`GPTConfig` (same sizes and token layout) for the masked model.

    ``block_size`` is the whole sequence, ``n_cond_tokens + t*h*w``; the hierarchical models' fields
    (``n_unmasked``, ``sample_every_n_latent_frames``) must stay 0.
    """

    def __post_init__(self) -> None:
        super().__post_init__()
        need = self.n_cond_tokens + self.n_latent_tokens
        if self.block_size != need:
            raise ValueError(f"MaskedConfig.block_size must be n_cond_tokens + t*h*w = {need}, "
                             f"got {self.block_size}")
        if self.n_unmasked or self.sample_every_n_latent_frames:
            raise ValueError("the masked model has no interpolation mask and no sparse frame grid")

    @property
    def mask_id(self) -> int:
        """The ``[MASK]`` id: one past the last id of the vocabulary (an extra embedding row)."""
        return self.vocab_size


def training_mask(
    batch_size: int,
    latent_shape: tuple[int, int, int],
    frame_cond_prob: float = 0.0,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
) -> torch.Tensor:
    """Which codes of each clip to mask for a training step: bool ``(B, t*h*w)``, True = masked.

    Each clip draws ``u ~ U[0, 1)`` and masks ``ceil(cos(pi/2 * u) * n)`` of its ``n`` candidate codes
    (at least one), chosen uniformly at random. Candidates are all ``t*h*w`` codes, or, with probability
    ``frame_cond_prob`` (and ``t > 1``), the codes after the first ``k ~ U{1 .. t-1}`` latent frames,
    which stay visible.
    """
    t, h, w = latent_shape
    hw, L = h * w, t * h * w
    u = torch.rand(batch_size, generator=generator, device=device)
    given = torch.zeros(batch_size, dtype=torch.long, device=device)  # given latent frames per clip
    if t > 1 and frame_cond_prob > 0:
        prefix = torch.rand(batch_size, generator=generator, device=device) < frame_cond_prob
        k = torch.randint(1, t, (batch_size,), generator=generator, device=device)
        given = torch.where(prefix, k, given)
    n_candidates = L - given * hw  # (B,)
    n_masked = torch.ceil(cosine_schedule(u) * n_candidates).long().clamp(min=1)  # (B,)
    # A random order of the candidates: scores in [0, 1) for them, >= 1 for the given codes.
    scores = torch.rand(batch_size, L, generator=generator, device=device)
    position = torch.arange(L, device=device)
    scores = scores + (position[None] < (given * hw)[:, None]).float()
    rank = scores.argsort(dim=1).argsort(dim=1)  # (B, L): 0 = the first to mask
    return rank < n_masked[:, None]


class BidirectionalSelfAttention(nn.Module):
    """Multi-head self-attention over the whole sequence (no mask); one fused ``(E, 3E)`` projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_drop = config.attn_pdrop
        self.resid_drop = nn.Dropout(config.resid_pdrop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, E = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, E // self.n_head)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, nh, T, hd)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, E)  # (B, T, E)
        return self.resid_drop(self.proj(y))


class MaskedBlock(Block):
    """The GPT's block (same layers and keys) with bidirectional attention. ``forward`` takes (and ignores)
    the GPT block's cache arguments, so that :func:`tats.gpt.lightning.enable_activation_checkpointing`
    wraps both kinds of block."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__(config, BidirectionalSelfAttention(config))

    def forward(self, x: torch.Tensor, input_pos: None = None, kv_len: None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class MaskedTransformer(nn.Module):
    """Token + learned position embeddings, ``n_layer`` bidirectional blocks, ``ln_f``, a head over the
    ``n_codes`` codes.

    ``forward(idx (B, S)) -> logits (B, t*h*w, n_codes)`` for the video positions, ``S = block_size``;
    ``positions (B, n)`` (indices into the video positions) computes the head there only.
    """

    objective = OBJECTIVE

    def __init__(self, config: MaskedConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size + 1, config.n_embd)  # + the [MASK] id
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.drop = nn.Dropout(config.embd_pdrop)
        self.blocks = nn.Sequential(*[MaskedBlock(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.n_codes, bias=False)
        self.apply(GPT._init_weights)  # the GPT's: N(0, 0.02) weights, zero biases, unit LayerNorms

    @property
    def block_size(self) -> int:
        return self.pos_emb.shape[1]

    @property
    def mask_id(self) -> int:
        return self.config.mask_id

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits of the codes.

        Args:
            idx: ``(B, block_size)`` condition ids, then shifted codes or :attr:`mask_id`.
            positions: ``(B, n)`` video positions (0 = the first code) whose logits are wanted; None: all.

        Returns:
            float logits ``(B, t*h*w or n, n_codes)``.
        """
        B, S = idx.shape
        if S != self.block_size:
            raise ValueError(f"the masked model reads whole sequences of {self.block_size} ids, got {S}")
        x = self.tok_emb(idx) + self.pos_emb  # (B, S, E)
        if self.training:
            x = self.drop(x)
        for block in self.blocks:
            x = block(x)
        x = x[:, self.config.n_cond_tokens :]  # (B, L, E): the video positions
        if positions is not None:
            x = x.gather(1, positions[..., None].expand(-1, -1, x.shape[-1]))  # (B, n, E)
        return self.head(self.ln_f(x))


def masked_from_state_dict(state_dict: dict[str, torch.Tensor], config: MaskedConfig) -> MaskedTransformer:
    """Build a :class:`MaskedTransformer` and load ``state_dict`` (no ``transformer.`` prefix) strictly."""
    model = MaskedTransformer(config)
    result = model.load_state_dict(dict(state_dict), strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"masked transformer weights do not match {config}: missing "
                              f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    return model.eval()
