"""Arrange Taichi-HD into the ``--image_folder`` layout (train with ``--sample_every_n_frames 4``).

Input: ``taichi/{train,test}/<video_id>.mp4`` as the first-order-model loader writes them (frame
folders or video files). Output: ``<out>/{train,test}/<video_id>/<frame>.png`` (folders linked, videos
decoded with PyAV). The loader and the layouts: docs/data.md, "Preparing public datasets".

    python datasets/prepare_taichi.py --src taichi --out data/taichi [--size 128]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def video_id(path: Path) -> str:
    """``abc.mp4`` (file or frame folder) -> ``abc``."""
    return path.name[: -len(path.suffix)] if path.suffix.lower() in VIDEO_SUFFIXES else path.name


def extract_frames(video: Path, out_dir: Path, size: int | None = None) -> int:
    """Decode every frame of ``video`` to ``out_dir/<index:06d>.png``; shorter side resized to ``size``
    (bilinear) when given. Returns the number of frames written."""
    import av  # imported here so that --help needs nothing but the standard library

    out_dir.mkdir(parents=True, exist_ok=True)
    n = 0
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            image = frame.to_image()
            if size:
                scale = size / min(image.size)
                image = image.resize((round(image.width * scale), round(image.height * scale)), 2)  # bilinear
            image.save(out_dir / f"{n:06d}.png")
            n += 1
    return n


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--src", type=Path, required=True, help="folder holding train/ and test/")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    parser.add_argument("--size", type=int, default=None, help="resize decoded videos (shorter side)")
    args = parser.parse_args(argv)
    for split in ("train", "test"):
        src_root = args.src / split
        if not src_root.is_dir():
            raise SystemExit(f"{src_root} not found: expected {args.src}/{split}/<video_id>.mp4")
        count = 0
        for entry in sorted(src_root.iterdir()):
            dst = args.out / split / video_id(entry)
            if dst.exists():
                continue
            if entry.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in entry.iterdir()):
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(entry.resolve(), dst, target_is_directory=True)
            elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
                extract_frames(entry, dst, args.size)
            else:
                continue
            count += 1
        print(f"{split}: {count} videos -> {args.out / split}")


if __name__ == "__main__":
    main()
