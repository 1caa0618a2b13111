"""FVD of a sampling run: I3D features of its samples (streamed as they are written) against real
clips drawn as the release drew them, cached per data, protocol and weights.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tats.io.fetch import cache_dir
from tats.metrics.fvd import (
    I3DFeatureExtractor,
    comparability_warning,
    fvd_kvd_trials,
    get_protocol,
    source_features,
)


def fvd_extractor(args: argparse.Namespace, device: torch.device) -> I3DFeatureExtractor:
    """The I3D feature extractor of ``--i3d_path`` and ``--fvd_protocol`` on ``device``."""
    from tats.metrics.i3d import load_i3d  # looked up at call time: tests put a tiny I3D in its place

    variant = {"is_coinrun": True} if get_protocol(args.fvd_protocol).is_coinrun else {}  # MUGEN's I3D
    i3d = load_i3d(args.i3d_path, device=device, **variant)
    return I3DFeatureExtractor(i3d, args.fvd_protocol, batch_size=16, progress=not args.no_progress,
                               desc="I3D generated")


def real_features(args: argparse.Namespace, extractor: I3DFeatureExtractor, n_frames: int
                  ) -> tuple[np.ndarray, dict]:
    """I3D features of ``--n_real`` real clips of ``n_frames`` frames, drawn at random (``--real_seed``)
    over every training window as the release drew them from its shuffled training loader; cached under
    ``$TATS_CACHE/fvd`` (keyed by the data, protocol, frames, resolution, draw and weights checksum) so
    repeated runs pay for them once. An I3D without a weights checksum (not loaded from a file) is
    never cached. Returns the features and :func:`~tats.metrics.fvd.source_features`' metadata."""
    cache = Path(cache_dir()) / "fvd" if getattr(extractor.model, "weights_sha256", None) else None
    return source_features(
        args.data_path, extractor.model, args.fvd_protocol, n_frames=n_frames, max_videos=args.n_real,
        resolution=args.resolution, sample_every_n_frames=args.sample_every_n_frames, split="train",
        image_folder=args.image_folder, cache=cache, progress=not args.no_progress, selection="random",
        seed=args.real_seed,
    )


def sample_fvd(args: argparse.Namespace, extractor: I3DFeatureExtractor, n_frames: int, uint8: str
               ) -> dict[str, Any]:
    """FVD/KVD of the samples ``extractor`` has seen against :func:`real_features` (``--n_trials``),
    with what makes the number comparable: protocol, clip counts, the real draw, uint8 rule, I3D
    weights checksum and where the features were computed; a warning when the counts are not the
    published ones."""
    fake = extractor.compute()
    real, real_meta = real_features(args, extractor, n_frames=n_frames)
    # One trial uses every clip; several trials draw random halves so that their spread means something.
    size = None if args.n_trials == 1 else min(len(real), len(fake)) // 2
    fvd = fvd_kvd_trials(real, fake, args.fvd_protocol, args.n_trials, sample_size=size)
    fvd.update(protocol=args.fvd_protocol, n_fake=len(fake), n_real=len(real),
               n_real_requested=args.n_real, real_available=real_meta.get("available"),
               real_split="train", real_selection="random",
               real_seed=args.real_seed, uint8=uint8,
               i3d_weights_sha256=getattr(extractor.model, "weights_sha256", None),
               features=extractor.numerics)  # device, dtype, TF32 of the I3D features
    note = comparability_warning(len(real), len(fake))
    if note is not None:
        fvd["warning"] = note
        warnings.warn(note, UserWarning, stacklevel=2)
    return fvd
