"""Fail-fast checks of the training flags, before any work: no demo data generated, no model built, no
checkpoint folder created. Each raises ``SystemExit`` with a message naming the flag.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tats.data.hdf5 import HDF5_SUFFIXES
from tats.gpt.config import kept_latent_frames


def check_data_flags(args: argparse.Namespace) -> None:
    """Data flags that cannot work: ``SystemExit`` naming the flag, before any data is generated.

    Checks ``--data_path`` exists (a .h5/.hdf5 file or a folder), ``--sequence_length`` and
    ``--sample_every_n_frames`` >= 1, ``--batch_size`` >= 1, and for an HDF5 file that at least one
    training video holds a window of ``sequence_length`` frames (read from the index datasets only, no
    frames decoded).
    """
    seq = getattr(args, "sequence_length", 1)
    every = getattr(args, "sample_every_n_frames", 1)
    if seq is not None and seq < 1:
        raise SystemExit(f"--sequence_length must be >= 1, got {seq}")
    if every is not None and every < 1:
        raise SystemExit(f"--sample_every_n_frames must be >= 1, got {every}")
    if getattr(args, "batch_size", 1) is not None and getattr(args, "batch_size", 1) < 1:
        raise SystemExit(f"--batch_size must be >= 1, got {args.batch_size}")
    data_path = getattr(args, "data_path", None)
    if not data_path:
        return  # the built-in demo data is generated long enough for any clip
    path = Path(data_path).expanduser()
    if not path.exists():
        raise SystemExit(f"--data_path {data_path}: no such file or folder")
    if path.is_file() and path.suffix.lower() in HDF5_SUFFIXES and seq:
        longest = _hdf5_longest_video(path, "train")
        if longest is not None and longest < seq:
            raise SystemExit(
                f"--sequence_length {seq} needs windows of {seq} frames, but the longest training video in "
                f"--data_path {data_path} has {longest}; lower --sequence_length"
            )


def _hdf5_longest_video(path: Path, prefix: str) -> int | None:
    """Frames of the longest ``{prefix}`` video of a release-layout HDF5 file (None: not that layout)."""
    import h5py
    import numpy as np

    try:
        with h5py.File(path, "r") as f:
            if f"{prefix}_idx" not in f or f"{prefix}_data" not in f:
                return None
            starts = np.asarray(f[f"{prefix}_idx"][:], dtype=np.int64)
            n_frames = int(f[f"{prefix}_data"].shape[0])
    except OSError as err:
        raise SystemExit(f"--data_path {path}: not a readable HDF5 file ({err})") from None
    if len(starts) == 0:
        return 0
    ends = np.append(starts[1:], n_frames)
    return int((ends - starts).max())


def check_transformer_tokens(
    block_size: int, n_cond_tokens: int, latent_shape: tuple[int, int, int], n_unmasked: int = 0
) -> None:
    """The transformer's token budget: ``block_size >= n_cond_tokens + t*h*w - 1``, and ``n_unmasked``
    within one latent frame's ``h*w`` tokens and at most half of ``block_size``. ``SystemExit`` naming
    the flag otherwise. Checked from the flags alone (:func:`check_transformer_budget`) and again
    against the data and the VQGAN (:func:`tats.train.transformer.build_gpt_config`)."""
    t, h, w = latent_shape
    need = n_cond_tokens + t * h * w - 1
    if block_size < need:
        raise SystemExit(
            f"--block_size {block_size} is too small: {n_cond_tokens} condition token(s) + {t * h * w} video "
            f"tokens (latent grid {tuple(latent_shape)}) - 1 = {need} inputs; raise --block_size to >= {need}"
        )
    if not 0 <= n_unmasked <= h * w:
        raise SystemExit(f"--n_unmasked {n_unmasked} must lie in [0, {h * w}] (the tokens of one {h}x{w} "
                         "latent frame)")
    if 2 * n_unmasked > block_size:
        raise SystemExit(f"--n_unmasked {n_unmasked} must be at most half of --block_size {block_size}")


def check_transformer_budget(
    args: argparse.Namespace, cond_type: str, full_latent_shape: tuple[int, int, int]
) -> None:
    """:func:`check_transformer_tokens` from the flags alone, before any data is generated or read.

    ``cond_type``: ``none`` / ``label`` / ``text`` / ``audio``; ``full_latent_shape``: the VQGAN's code grid
    of one training clip (before ``--sample_every_n_latent_frames``). Condition tokens: 1 for ``none``
    (the start token) and ``label``, ``--text_seq_len`` for ``text``; ``audio`` depends on the STFT VQGAN
    and is checked later (``build_gpt_config``).
    """
    if cond_type == "audio":
        return
    n_cond = getattr(args, "text_seq_len", 77) if cond_type == "text" else 1
    every = int(getattr(args, "sample_every_n_latent_frames", 0) or 0)
    t, h, w = full_latent_shape
    latent = (kept_latent_frames(t, every), h, w)
    n_unmasked = int(getattr(args, "n_unmasked", 0) or 0)
    check_transformer_tokens(args.block_size, n_cond, latent, n_unmasked)
