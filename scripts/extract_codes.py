"""Encode a video dataset once with a trained VQGAN into an HDF5 file of codes (both splits).

    python scripts/extract_codes.py --vqgan_ckpt VQGAN.ckpt --data_path DATA --sequence_length 16 \
        --resolution 128 --output codes.h5 [--sample_every_n_frames 1 --batch_size 16 --device cuda]

Then train the transformer without a VQGAN forward per step:
``python train_transformer.py --vtokens --data_path codes.h5 ...`` (layout: :mod:`tats.data.codes`).
Without ``--data_path`` the built-in demo data is encoded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import h5py
import torch

from tats.data import VideoDataModule, add_data_args
from tats.data.codes import FORMAT, CodesWriter, encode_split
from tats.data.transforms import clip_length
from tats.data.windows import ALL, parse_clips_per_video
from tats.io.download import file_digest
from tats.io.registry import resolve_args
from tats.precision import device_name
from tats.vqgan.load import load_vqgan


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vqgan_ckpt", "--vqvae", dest="vqgan_ckpt", required=True,
                        help="the trained VQGAN checkpoint (ours or the release's) or a published name "
                        "(ucf101, ...)")
    parser.add_argument("--output", required=True, help="the codes file to write (.h5)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clips_per_video", type=parse_clips_per_video, default=1,
                        help="training clips per video: N random windows (default 1), or 'all' for every "
                             "window as the release's training epochs; test: one clip per video (the first "
                             "window), or every window with 'all'")
    parser.add_argument("--seed", type=int, default=0, help="seed of the training clips' random starts")
    add_data_args(parser)
    parser.set_defaults(batch_size=16, num_workers=0)
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(argv)
    resolve_args(args, vqgan_ckpt="vqgan")  # a published name becomes its cached file
    torch.manual_seed(args.seed)
    out = Path(args.output)
    vqgan = load_vqgan(args.vqgan_ckpt, device=args.device).eval()
    dm = VideoDataModule(args)
    dm.setup()
    dt, dh, dw = vqgan.config.downsample
    frames = clip_length(args.sequence_length, args.sample_every_n_frames, args.image_folder)
    if frames % dt or args.resolution % dh or args.resolution % dw:
        raise SystemExit(f"clips of {frames} frames (--sequence_length {args.sequence_length}) / "
                         f"--resolution {args.resolution} are not divisible by the VQGAN's downsample "
                         f"factors {(dt, dh, dw)}")
    latent_shape = (frames // dt, args.resolution // dh, args.resolution // dw)
    with_text = bool(getattr(dm.train_dataset, "has_captions", False))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    start = time.perf_counter()
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs.update(
                format=FORMAT, n_codes=vqgan.config.n_codes, latent_shape=list(latent_shape),
                n_classes=int(dm.n_classes), vqgan_ckpt=str(Path(args.vqgan_ckpt).resolve()),
                vqgan_sha256=file_digest(args.vqgan_ckpt), vqgan_config=json.dumps(vqgan.config.to_dict()),
                data_path=str(dm.data_path()), sequence_length=args.sequence_length,
                resolution=args.resolution, sample_every_n_frames=args.sample_every_n_frames,
                clips_per_video=str(args.clips_per_video),
                encoded_on=device_name(args.device),  # VQGAN.encode runs without TF32 (tats.precision)
            )
            counts = {}
            test_clips = ALL if args.clips_per_video == ALL else 1
            for split, ds in (("train", dm.train_dataset), ("test", dm.dataset(False, test_clips))):
                writer = CodesWriter(f, split, latent_shape, vqgan.config.n_codes, with_text)
                counts[split] = encode_split(vqgan, ds, writer, args.batch_size, args.device,
                                             args.num_workers, desc=f"encoding {split}")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print(f"wrote {out}: {counts['train']} train + {counts['test']} test clips of codes {latent_shape} "
          f"in {time.perf_counter() - start:.1f}s", flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
