"""FVD / KVD between a real and a generated video set, on I3D logits: the release's protocol by default,
StyleGAN-V's named protocols with ``--protocol``. docs/evaluation.md has the protocols, what each side
may be and what the JSON records.

    python scripts/fetch_weights.py --i3d                                   # once
    python scripts/compute_fvd.py --real data/ucf101 --fake samples.npy --out fvd.json
    python scripts/compute_fvd.py --real ... --fake ... --i3d release     # the release's I3D, downloaded once
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import torch

from tats.data.sources import SELECTIONS, describe_source
from tats.data.windows import parse_clips_per_video
from tats.io.fetch import cache_dir
from tats.metrics.fvd import (
    PRESETS,
    PROTOCOLS,
    PUBLISHED_N,
    comparability_warning,
    fvd_kvd_trials,
    source_features,
)
from tats.metrics.i3d import load_i3d


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--real", required=True, help="real videos: dataset path, `demo`, .npy or video folder")
    p.add_argument("--fake", required=True, help="generated videos: .npy uint8 (N,T,H,W,C) or video folder")
    p.add_argument("--protocol", default="tats", choices=[*sorted(PROTOCOLS), *PRESETS],
                   help="tats: uint8 by truncation, squash frames to 224x224, N-1 covariance (the release); "
                        "styleganv: rounding, shorter side 224 + centre crop, N covariance; fvd2048_16f, "
                        "fvd2048_128f, fvd2048_128f_subsample8f: StyleGAN-V's named protocols (2048 clips "
                        "per side; 16 or 128 frames, or 128 taken every 8th; styleganv preprocessing)")
    p.add_argument("--n_frames", type=int, default=None,
                   help="frames per clip fed to I3D (release: 16; a named protocol sets it)")
    p.add_argument("--n_real", type=int, default=None, help="real clips (release: 2048)")
    p.add_argument("--n_sample", "--n_fake", dest="n_sample", type=int, default=None,
                   help="generated clips used (release: 2048)")
    p.add_argument("--max_videos", type=int, default=None, help="sets both --n_real and --n_sample")
    p.add_argument("--real_seed", type=int, default=0, help="seed of the real clips' draw")
    p.add_argument("--real_selection", default="random", choices=SELECTIONS,
                   help="random: a seeded draw over every clip (the release); first: the first clips in "
                        "path order (biased to the first classes; for comparisons only)")
    p.add_argument("--clips_per_video", type=parse_clips_per_video, default=None,
                   help="clips a dataset offers per video (default: the release's, every window of a video "
                        "folder, one per HDF5 video or frame folder)")
    p.add_argument("--resolution", type=int, default=128, help="frame size when reading a dataset")
    p.add_argument("--sample_every_n_frames", type=int, default=1, help="frame stride when reading a dataset")
    p.add_argument("--real_split", default="train", choices=["train", "test"],
                   help="dataset split of the real clips (the release: train)")
    p.add_argument("--image_folder", action="store_true", help="the dataset folders hold frame images")
    p.add_argument("--n_trials", type=int, default=1, help="FVD over random subsets: mean and std")
    p.add_argument("--sample_size", type=int, default=None, help="clips per side in each trial")
    p.add_argument("--seed", type=int, default=0, help="seed of the trials' subsets")
    p.add_argument("--i3d_path", "--i3d", default=None,
                   help="I3D weights: the release's i3d_pretrained_400.pt (`release` downloads it), "
                        "StyleGAN-V's i3d_torchscript.pt, or (default) the TF-hub weights (fetched once)")
    p.add_argument("--bn_eps", type=float, default=None,
                   help="override I3D batch-norm eps (default: 1e-5 for release files, 1e-3 for TF-hub)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--cache_dir", default=None,
                   help="weights/feature cache (default $TATS_CACHE or ~/.cache/tats)")
    p.add_argument("--no_cache", action="store_true", help="do not read or write cached real features")
    p.add_argument("--out", default=None, help="write the JSON result here")
    return p


def apply_preset(args: argparse.Namespace, p: argparse.ArgumentParser) -> int:
    """Fill the flags a named protocol sets (``--protocol fvd2048_*``) and return its frame stride (1 for
    the preprocessing protocols). Flags given on the command line win, with the comparability warning."""
    preset = PRESETS.get(args.protocol)
    if preset is not None:
        if args.n_frames not in (None, preset.frames):
            p.error(f"--protocol {args.protocol} takes {preset.frames} frames; drop --n_frames "
                    f"{args.n_frames}")
        args.protocol, args.preset = preset.protocol, args.protocol
        args.clips_per_video = 1 if args.clips_per_video is None else args.clips_per_video
    args.n_frames = args.n_frames or (preset.frames if preset else 16)
    args.n_real = args.n_real or (preset.n if preset else PUBLISHED_N)
    args.n_sample = args.n_sample or (preset.n if preset else PUBLISHED_N)
    return preset.stride if preset else 1


def stride_kwargs(spec: str, stride: int, sample_every_n_frames: int, image_folder: bool) -> dict:
    """How a source takes every ``stride``-th frame: a dataset through its frame stride
    (``sample_every_n_frames``, on top of the user's), a .npy or video folder through ``frame_stride``."""
    is_dataset = (image_folder and Path(spec).expanduser().is_dir()) or describe_source(spec) == "dataset"
    if is_dataset:
        return dict(sample_every_n_frames=sample_every_n_frames * stride, frame_stride=1)
    return dict(sample_every_n_frames=sample_every_n_frames, frame_stride=stride)


def main(argv: list[str] | None = None) -> dict:
    p = build_parser()
    args = p.parse_args(argv)
    args.preset = None
    stride = apply_preset(args, p)
    if args.n_trials > 1 and args.sample_size is None:
        p.error("--n_trials > 1 draws random subsets: also give --sample_size (smaller than both sets)")
    if args.max_videos is not None:
        args.n_real = args.n_sample = args.max_videos
    for flag in ("n_real", "n_sample"):
        if getattr(args, flag) < 2:
            p.error(f"--{flag} must be >= 2 (the covariance needs two clips), got {getattr(args, flag)}")

    variant = {"is_coinrun": True} if PROTOCOLS[args.protocol].is_coinrun else {}  # MUGEN's I3D
    model = load_i3d(args.i3d_path, cache_dir=args.cache_dir, bn_eps=args.bn_eps, device=args.device,
                     **variant)
    common = dict(
        protocol=args.protocol,
        n_frames=args.n_frames,
        batch_size=args.batch_size,
        resolution=args.resolution,
        image_folder=args.image_folder,
        clips_per_video=args.clips_per_video,
    )
    feat_cache = None if args.no_cache else cache_dir(args.cache_dir) / "fvd_features"
    real, real_meta = source_features(
        args.real, model, split=args.real_split, cache=feat_cache, max_videos=args.n_real,
        selection=args.real_selection, seed=args.real_seed, **common,
        **stride_kwargs(args.real, stride, args.sample_every_n_frames, args.image_folder))
    fake, fake_meta = source_features(
        args.fake, model, split="test", cache=None, max_videos=args.n_sample, selection="first", **common,
        **stride_kwargs(args.fake, stride, args.sample_every_n_frames, args.image_folder))
    result = fvd_kvd_trials(real, fake, args.protocol, args.n_trials, args.sample_size, args.seed)
    result.update(
        protocol=args.protocol,
        preset=args.preset,
        frame_stride=stride,
        n_real=len(real),
        n_fake=len(fake),
        real_split=args.real_split,
        real_seed=args.real_seed,
        real_selection=args.real_selection,
        uint8=PROTOCOLS[args.protocol].uint8,
        frames=args.n_frames,
        sample_size=args.sample_size or min(len(real), len(fake)),
        n_trials=args.n_trials,
        i3d_input_resolution=PROTOCOLS[args.protocol].size,
        dataset_resolution=args.resolution,
        i3d_weights=model.weights_path,
        i3d_weights_sha256=model.weights_sha256,
        bn_eps=getattr(model, "bn_eps", None),
        real=real_meta,
        fake=fake_meta,
    )
    note = comparability_warning(len(real), len(fake))
    if note is not None:
        result["warning"] = note
        warnings.warn(note, UserWarning, stacklevel=2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
