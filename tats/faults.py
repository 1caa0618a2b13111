"""Fault tolerance pieces shared by the training scripts: non-finite loss guard and fail-fast flag checks.

:class:`NonFiniteGuard` decides, once per step, whether a loss is unusable (NaN/inf) and the step must be
skipped. The decision is made over all ranks (any rank non-finite -> every rank skips), because under DDP
a rank that skips ``backward`` while another runs it would leave the gradient all-reduce waiting forever.
After ``max_consecutive`` skipped steps in a row the run stops with :class:`NonFiniteLossError` naming the
step: a diverged run should not burn GPU hours writing NaN checkpoints.

The ``check_*`` functions validate flags before any work (no demo data generated, no model built, no
checkpoint folder created) and raise ``SystemExit`` with a message naming the flag.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

import torch

from tats.distributed import any_across_ranks

DEFAULT_MAX_NONFINITE_STEPS = 10


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses: training stops."""


def add_fault_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--max_nonfinite_steps`` (once; other modules may have added it)."""
    if "--max_nonfinite_steps" not in parser._option_string_actions:
        parser.add_argument(
            "--max_nonfinite_steps", type=int, default=DEFAULT_MAX_NONFINITE_STEPS,
            help="skip steps whose loss is NaN/inf; stop after this many in a row (0: stop at the first)",
        )
    return parser


class NonFiniteGuard:
    """Counts non-finite losses and says whether to skip the step.

    Args:
        max_consecutive: this many skipped steps in a row raise :class:`NonFiniteLossError`
            (0: the first non-finite loss raises).
        any_fn: ``any_fn(flag: bool, device) -> bool``, True when the flag is set on any rank; the default
            all-reduces over torch.distributed when it is running (resolved at call time) and is the
            identity otherwise.

    Attributes: ``total`` (skipped steps so far), ``consecutive`` (skipped steps in a row),
    ``last_step`` (step of the last skip, or None).
    """

    def __init__(
        self,
        max_consecutive: int = DEFAULT_MAX_NONFINITE_STEPS,
        any_fn: Callable[[bool, torch.device], bool] = any_across_ranks,
    ) -> None:
        if max_consecutive < 0:
            raise ValueError(f"--max_nonfinite_steps must be >= 0, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.any_fn = any_fn
        self.total = 0
        self.consecutive = 0
        self.last_step: int | None = None

    def check(self, loss: torch.Tensor | float | None, step: int, what: str = "loss") -> bool:
        """True when this step must be skipped (``loss`` non-finite here or on another rank).

        ``loss``: a tensor (any shape; every element must be finite) or a float; ``None`` counts as
        finite. ``step``: the global step, used in the error message. Raises
        :class:`NonFiniteLossError` when more than ``max_consecutive`` steps in a row were non-finite.
        """
        device = loss.device if isinstance(loss, torch.Tensor) else torch.device("cpu")
        if loss is None:
            bad = False
        elif isinstance(loss, torch.Tensor):
            bad = not bool(torch.isfinite(loss.detach()).all())
        else:
            bad = not math.isfinite(float(loss))
        bad = self.any_fn(bad, device)
        if not bad:
            self.consecutive = 0
            return False
        self.total += 1
        self.consecutive += 1
        self.last_step = step
        if self.consecutive > self.max_consecutive:
            raise NonFiniteLossError(
                f"non-finite {what} at step {step}: {self.consecutive} steps in a row had a NaN/inf loss "
                f"({self.total} in total), more than --max_nonfinite_steps {self.max_consecutive}; the run "
                "diverged (lower --lr, set --gradient_clip_val, or check the data), or raise "
                "--max_nonfinite_steps"
            )
        return True

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.total = int(state.get("total", 0))
        self.consecutive = int(state.get("consecutive", 0))


# ------------------------------------------------------------------------------------ flag checks
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
    if path.is_file() and path.suffix.lower() in (".h5", ".hdf5") and seq:
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


def check_file_flag(flag: str, value: str | None, required: bool = False) -> None:
    """``SystemExit`` when ``--flag value`` names no file (or is missing while ``required``)."""
    if value is None:
        if required:
            raise SystemExit(f"--{flag} is required")
        return
    if not Path(value).expanduser().is_file():
        raise SystemExit(f"--{flag} {value}: file not found")


def check_transformer_tokens(
    block_size: int, n_cond_tokens: int, latent_shape: tuple[int, int, int], n_unmasked: int = 0
) -> None:
    """The transformer's token budget: ``block_size >= n_cond_tokens + t*h*w - 1`` and ``n_unmasked``
    within one latent frame's ``h*w`` tokens. ``SystemExit`` naming the flag otherwise."""
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
    latent = (math.ceil(t / every) if every > 0 else t, h, w)
    n_unmasked = int(getattr(args, "n_unmasked", 0) or 0)
    check_transformer_tokens(args.block_size, n_cond, latent, n_unmasked)
    if 2 * n_unmasked > args.block_size:
        raise SystemExit(f"--n_unmasked {n_unmasked} must be at most half of --block_size {args.block_size}")
