"""Configuration of the time-sensitive transformer and of its token layout.

One dataclass of primitives: it is stored as a plain dict in our checkpoints
(``hyper_parameters["config"]``) and rebuilt from the release's Namespace by :mod:`tats.gpt.load`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tats.io.checkpoint import config_from_dict, config_to_dict

# The CLIP BPE vocabulary size: text ids come first and video codes are shifted by it
# (the release, "Token ids").
TEXT_VOCAB_SIZE = 49408

COND_TYPES = ("none", "label", "text", "audio")


def kept_latent_frames(t: int, every: int) -> int:
    """Latent frames the transformer sees of a clip of ``t``: every ``every``-th one when ``every > 0``
    (the hierarchical AR transformer's sparse grid, the release), else all of them."""
    return math.ceil(t / every) if every > 0 else t


@dataclass
class GPTConfig:
    """Architecture of the GPT plus the description of what its tokens mean.

    Architecture (the release, "Transformer"): ``vocab_size`` = ``n_codes + n_cond_vocab``
    (unconditional: ``n_codes``), ``block_size`` = the longest input (the full token sequence minus
    its last token), ``n_unmasked`` > 0 selects the interpolation mask of the hierarchical model.

    Token layout: a sequence is ``n_cond_tokens`` condition ids followed by the ``t*h*w`` video codes
    flattened in (t, h, w) order and shifted by ``n_cond_vocab``:

    - ``cond_type="none"``: one start token 0, ``n_cond_vocab=0`` (start and code 0 share id 0);
    - ``"label"``: one class id, ``n_cond_vocab=n_classes``;
    - ``"text"``: ``n_cond_tokens`` CLIP BPE ids, ``n_cond_vocab=49408``;
    - ``"audio"``: ``n_cond_tokens`` audio-VQGAN codes, ``n_cond_vocab`` = the audio codebook size.

    ``latent_shape`` is the (t, h, w) code grid of one training clip as the transformer sees it
    (after keeping every ``sample_every_n_latent_frames``-th latent frame when that is > 0).

    ``null_cond`` (ours, for classifier-free guidance; absent from the release's models): one more id,
    :attr:`null_id` = ``n_cond_vocab + n_codes``, the last of the vocabulary, stands for "no condition";
    training with ``--cond_drop`` replaces a clip's condition ids by it, and guided sampling runs the
    same model on it for the unconditional logits. The vocabulary is then ``n_codes + n_cond_vocab + 1``.
    """

    vocab_size: int = 16384
    block_size: int = 1024
    n_layer: int = 24
    n_head: int = 16
    n_embd: int = 1024
    n_unmasked: int = 0
    embd_pdrop: float = 0.0
    resid_pdrop: float = 0.0
    attn_pdrop: float = 0.0
    cond_type: str = "none"
    n_cond_vocab: int = 0
    n_cond_tokens: int = 1
    n_codes: int = 16384
    latent_shape: tuple[int, int, int] = field(default=(4, 16, 16))
    sample_every_n_latent_frames: int = 0
    null_cond: bool = False

    def __post_init__(self) -> None:
        self.latent_shape = tuple(int(s) for s in self.latent_shape)  # type: ignore[assignment]
        if len(self.latent_shape) != 3:
            raise ValueError(f"GPTConfig.latent_shape must be (t, h, w), got {self.latent_shape}")
        if self.cond_type not in COND_TYPES:
            raise ValueError(f"GPTConfig.cond_type must be one of {COND_TYPES}, got {self.cond_type!r}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig.n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.null_cond and self.cond_type == "none":
            raise ValueError("GPTConfig.null_cond needs a condition: an unconditional model has none")

    @property
    def null_id(self) -> int:
        """The id of the null condition (``null_cond``): the one after the last shifted code."""
        if not self.null_cond:
            raise ValueError("this transformer has no null condition (it was trained without --cond_drop)")
        return self.n_cond_vocab + self.n_codes

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def n_latent_tokens(self) -> int:
        """Video tokens of one training clip: ``t * h * w``."""
        return math.prod(self.latent_shape)

    @property
    def tokens_per_frame(self) -> int:
        """Video tokens of one latent frame: ``h * w``."""
        return self.latent_shape[1] * self.latent_shape[2]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of primitives for ``hyper_parameters["config"]`` (tuples become lists)."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GPTConfig:
        """Build from a mapping, ignoring keys that are not fields (checkpoints carry extras)."""
        return config_from_dict(cls, d)
