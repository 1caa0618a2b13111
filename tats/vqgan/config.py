"""Configuration of the 3D VQGAN (stage 1).

Field names are the release's command-line flags (the release, "Checkpoint files": the release's
``hyper_parameters["args"]`` Namespace), so a release checkpoint's flags map onto this dataclass
directly and ours store ``dataclasses.asdict(config)`` as ``hyper_parameters["config"]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tats.io.checkpoint import config_from_dict, config_to_dict

NORM_TYPES = ("group", "batch")
PADDING_TYPES = ("replicate", "constant", "reflect", "circular")
DISC_LOSS_TYPES = ("hinge", "vanilla")
QUANTIZERS = ("vq", "fsq", "lfq")
MAX_QUANTIZER_BITS = 30  # FSQ/LFQ vocabularies up to 2**30 codes (ids and usage counts stay cheap)


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and (n & (n - 1)) == 0


@dataclass
class VQGANConfig:
    """Every setting needed to rebuild a VQGAN (and its training losses) from a checkpoint alone.

    Defaults are the release's ``train_vqgan.py`` defaults.
    """

    # architecture
    embedding_dim: int = 256  # code width D
    n_codes: int = 2048  # codebook size
    n_hiddens: int = 240  # width of the first encoder conv; doubles per down block
    downsample: tuple[int, int, int] = (4, 4, 4)  # (dt, dh, dw), powers of two
    image_channels: int = 3
    norm_type: str = "group"  # "group" (GroupNorm 32) or "batch" (BatchNorm3d)
    padding_type: str = "replicate"  # F.pad mode of conv_first, down convs and pre_vq_conv
    # codebook
    no_random_restart: bool = False
    restart_thres: float = 1.0  # codes whose EMA count falls below this are restarted
    # quantizer (ours): "vq" the release's EMA codebook; "fsq" / "lfq" (tats.vqgan.quantizers) have no
    # codebook, and their levels / bits fix n_codes and embedding_dim
    quantizer: str = "vq"
    fsq_levels: tuple[int, ...] = ()
    lfq_bits: int = 0
    lfq_entropy_weight: float = 0.1  # MAGVIT-v2's entropy penalty weight
    lfq_commitment_weight: float = 0.25
    lfq_diversity_gamma: float = 1.0  # weight of the batch entropy inside the penalty
    # discriminators and losses (used by tats.vqgan.losses)
    disc_channels: int = 64
    disc_layers: int = 3
    disc_loss_type: str = "hinge"
    image_gan_weight: float = 1.0
    video_gan_weight: float = 1.0
    perceptual_weight: float = 0.0
    l1_weight: float = 4.0
    gan_feat_weight: float = 0.0
    lr: float = 3e-4
    discriminator_iter_start: int = 50000
    # data the model was trained on (fixes latent_shape)
    sequence_length: int = 16
    resolution: int = 64
    sample_every_n_frames: int = 1

    def __post_init__(self) -> None:
        self.downsample = tuple(int(d) for d in self.downsample)  # type: ignore[assignment]
        self.fsq_levels = tuple(int(v) for v in self.fsq_levels or ())  # type: ignore[assignment]
        if self.quantizer == "fsq" and self.fsq_levels:
            self.n_codes, self.embedding_dim = math.prod(self.fsq_levels), len(self.fsq_levels)
        elif self.quantizer == "lfq" and self.lfq_bits > 0:
            self.n_codes, self.embedding_dim = 2 ** int(self.lfq_bits), int(self.lfq_bits)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the flag when a setting cannot build a working model."""
        if len(self.downsample) != 3:
            raise ValueError(f"--downsample takes 3 values (t h w), got {list(self.downsample)}")
        for name, d in zip("thw", self.downsample):
            if not _is_power_of_two(d):
                raise ValueError(
                    f"--downsample: the {name} factor must be a power of two (1, 2, 4, ...), got {d} "
                    f"in {list(self.downsample)}"
                )
        if self.norm_type not in NORM_TYPES:
            raise ValueError(f"--norm_type must be one of {NORM_TYPES}, got {self.norm_type!r}")
        if self.padding_type not in PADDING_TYPES:
            raise ValueError(f"--padding_type must be one of {PADDING_TYPES}, got {self.padding_type!r}")
        if self.disc_loss_type not in DISC_LOSS_TYPES:
            raise ValueError(
                f"--disc_loss_type must be one of {DISC_LOSS_TYPES}, got {self.disc_loss_type!r}"
            )
        self._validate_quantizer()
        if self.n_codes < 1 or self.embedding_dim < 1 or self.n_hiddens < 1:
            raise ValueError("--n_codes, --embedding_dim and --n_hiddens must be positive")
        # the narrowest normalised layer has 2 * n_hiddens channels (n_hiddens without down blocks)
        narrowest = self.n_hiddens * (2 if self.n_down_blocks > 0 else 1)
        if self.norm_type == "group" and narrowest % 32 != 0:
            raise ValueError(
                f"--norm_type group uses GroupNorm(32) on {narrowest} channels, which 32 does not divide "
                f"(--n_hiddens {self.n_hiddens}); pick n_hiddens so that this width is a multiple of 32"
            )
        dt, dh, dw = self.downsample
        if self.sequence_length % dt != 0:
            raise ValueError(
                f"--sequence_length {self.sequence_length} is not divisible by the time downsample "
                f"factor {dt} (--downsample {dt} {dh} {dw})"
            )
        if self.resolution % dh != 0 or self.resolution % dw != 0:
            raise ValueError(
                f"--resolution {self.resolution} is not divisible by the spatial downsample factors "
                f"{dh} and {dw} (--downsample {dt} {dh} {dw})"
            )

    def _validate_quantizer(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"--quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.quantizer != "fsq" and self.fsq_levels:
            raise ValueError(f"--fsq_levels is for --quantizer fsq, not {self.quantizer}")
        if self.quantizer != "lfq" and self.lfq_bits:
            raise ValueError(f"--lfq_bits is for --quantizer lfq, not {self.quantizer}")
        if self.quantizer == "fsq":
            if len(self.fsq_levels) < 1 or min(self.fsq_levels) < 3:
                raise ValueError(f"--quantizer fsq needs --fsq_levels, each at least 3 (e.g. 8 8 8 5 5 5), "
                                 f"got {list(self.fsq_levels)}")
            if self.n_codes > 2**MAX_QUANTIZER_BITS:
                raise ValueError(f"--fsq_levels {' '.join(map(str, self.fsq_levels))} give {self.n_codes} "
                                 f"codes, more than 2**{MAX_QUANTIZER_BITS}")
        if self.quantizer == "lfq" and not 1 <= self.lfq_bits <= MAX_QUANTIZER_BITS:
            raise ValueError(f"--quantizer lfq needs --lfq_bits between 1 and {MAX_QUANTIZER_BITS}, "
                             f"got {self.lfq_bits}")

    @property
    def n_down_blocks(self) -> int:
        """Number of encoder (and decoder) blocks: ``max(log2 d)`` over the three dims."""
        return max(int(math.log2(d)) for d in self.downsample)

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """``(t, h, w)`` of the code grid for one clip of ``sequence_length`` x ``resolution``^2."""
        dt, dh, dw = self.downsample
        return self.sequence_length // dt, self.resolution // dh, self.resolution // dw

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (lists for tuples) to store in ``hyper_parameters["config"]``."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> VQGANConfig:
        """Build from a mapping (e.g. the release's flattened Namespace); unknown keys and None values
        (flags the release left unset) are ignored."""
        return config_from_dict(cls, d, skip_none=True)
