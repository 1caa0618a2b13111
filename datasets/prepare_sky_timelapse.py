"""Arrange Sky Time-lapse frames into the ``--image_folder`` layout.

Input (https://github.com/weixiong-ur/mdgan): ``sky_timelapse/{sky_train,sky_test}/<video_id>/<clip_id>/``.
Output: ``<out>/{train,test}/<video_id>_<clip_id>/``, one linked folder per clip; train with
``--data_path <out> --image_folder``. The layouts: docs/data.md, "Preparing public datasets".

    python datasets/prepare_sky_timelapse.py --src sky_timelapse --out data/sky
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_frame_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` that directly holds image files, sorted."""
    found = []
    for dirpath, _, filenames in os.walk(root):
        if any(name.lower().endswith(IMAGE_SUFFIXES) for name in filenames):
            found.append(Path(dirpath))
    return sorted(found)


def flat_name(folder: Path, root: Path) -> str:
    """``<video_id>/<clip_id>`` -> ``<video_id>_<clip_id>``."""
    return "_".join(folder.relative_to(root).parts) or root.name


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--src", type=Path, required=True, help="folder holding sky_train/ and sky_test/")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    args = parser.parse_args(argv)
    for split, name in (("train", "sky_train"), ("test", "sky_test")):
        src_root = args.src / name
        if not src_root.is_dir():
            raise SystemExit(f"{src_root} not found: expected {args.src}/{name}/<video>/<clip>/<frames>.jpg")
        folders = find_frame_folders(src_root)
        for folder in folders:
            dst = args.out / split / flat_name(folder, src_root)
            if not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(folder.resolve(), dst, target_is_directory=True)
        print(f"{split}: {len(folders)} clips -> {args.out / split}")


if __name__ == "__main__":
    main()
