"""Arrange UCF-101 into the train/test class-folder layout read by ``--data_path``.

Input: the official release (https://www.crcv.ucf.edu/data/UCF101.php), ``UCF-101/`` and
``ucfTrainTestlist/``. Output: ``<out>/{train,test}/<Class>/v_<Class>_gXX_cYY.avi``, symlinked by
default. The layouts: docs/data.md, "Preparing public datasets".

    python datasets/prepare_ucf101.py --videos UCF-101 --splits ucfTrainTestlist --out data/ucf101 --split 1
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def read_split_list(path: Path) -> list[str]:
    """Relative video paths listed in a UCF-101 split file (``Class/v_..avi`` or ``Class/v_..avi 12``)."""
    entries = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line:
            entries.append(line.split()[0].replace("\\", "/"))
    return entries


def resolve(videos: Path, rel: str) -> Path:
    """Find ``rel`` under ``videos``, ignoring case in the class folder (the official lists spell
    ``HandStandPushups`` where the folder is ``HandstandPushups``)."""
    direct = videos / rel
    if direct.exists():
        return direct
    cls, name = rel.split("/", 1)
    for folder in videos.iterdir():
        if folder.name.lower() == cls.lower() and (folder / name).exists():
            return folder / name
    raise FileNotFoundError(f"{rel} listed in the split file is missing under {videos}")


def place(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        return
    if mode == "symlink":
        os.symlink(src.resolve(), dst)
    elif mode == "hardlink":
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--videos", type=Path, required=True, help="the extracted UCF-101/ folder")
    parser.add_argument("--splits", type=Path, required=True, help="the ucfTrainTestlist/ folder")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    parser.add_argument("--split", type=int, default=1, choices=(1, 2, 3), help="official split number")
    parser.add_argument("--mode", choices=("symlink", "hardlink", "copy"), default="symlink")
    args = parser.parse_args(argv)
    for split, prefix in (("train", "trainlist"), ("test", "testlist")):
        entries = read_split_list(args.splits / f"{prefix}0{args.split}.txt")
        for rel in entries:
            src = resolve(args.videos, rel)
            # Class folder named as on disk, so that train and test agree.
            place(src, args.out / split / src.parent.name / src.name, args.mode)
        print(f"{split}: {len(entries)} videos -> {args.out / split}")


if __name__ == "__main__":
    main()
