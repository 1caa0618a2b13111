"""Videos stored as folders of frame images (Sky Time-lapse, Taichi-HD; the release's ``--image_folder``).

Layout::

    root/train/<video_id>/<frame>.jpg|png      (any depth: every folder holding images is one video)
    root/test/<video_id>/<frame>.jpg|png

Frames are ordered numerically by the numbers in their names (``img_2.jpg`` before ``img_10.jpg``).
These datasets carry no classes: every item has label 0 and ``n_classes`` is 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from tats.data.base import ClipDataset, warn_skipped
from tats.data.transforms import natural_key, pick_start, preprocess_clip, random_flip
from tats.data.video_folder import split_folder

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_frame_folders(
    split_dir: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> dict[str, list[str]]:
    """``{relative folder: frame file names sorted numerically}`` for every folder holding images."""
    exts = tuple(e.lower() for e in extensions)
    videos = {}
    for dirpath, dirnames, filenames in os.walk(split_dir, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        frames = [f for f in filenames if f.lower().endswith(exts) and not f.startswith(".")]
        if frames:
            videos[Path(dirpath).relative_to(split_dir).as_posix()] = sorted(frames, key=natural_key)
    return dict(sorted(videos.items()))


def read_frame(path: Union[str, Path]) -> np.ndarray:
    """One image as uint8 RGB ``(H, W, 3)``."""
    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"))


class FrameFolderDataset(ClipDataset):
    """Clips from frame folders; same arguments and items as :class:`VideoFolderDataset`.

    Items: ``dict(video=float32 (C, T, H, W) in [-0.5, 0.5], label=0, path=str)`` (path = the folder).
    """

    def __init__(
        self,
        root: Union[str, Path],
        train: bool = True,
        sequence_length: int = 16,
        resolution: int = 128,
        sample_every_n_frames: int = 1,
        random_flip: bool = False,
        test_start: str = "first",
        extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    ):
        super().__init__(train, sequence_length, resolution, sample_every_n_frames, random_flip, test_start)
        self.root = Path(root)
        self.split_dir = split_folder(root, train)
        self.classes = ["all"]

        videos = list_frame_folders(self.split_dir, extensions)
        self.items: list[tuple[str, list[str]]] = []
        skipped = []
        for rel, frames in videos.items():
            if len(frames) < self.span:
                skipped.append((rel, f"{len(frames)} frames, a clip needs {self.span}"))
            else:
                self.items.append((rel, frames))
        warn_skipped("frame folders", str(self.split_dir), skipped)
        if not self.items:
            raise ValueError(
                f"no usable frame folder under {self.split_dir}: expected {self.split_dir}/<video_id>/ "
                f"folders of images ({', '.join(extensions)}) with at least {self.span} frames "
                f"(sequence_length={sequence_length}, sample_every_n_frames={sample_every_n_frames}); "
                f"found {len(videos)} folder(s), {len(skipped)} too short"
            )

    @property
    def n_classes(self) -> int:
        return 1

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        return str(self.split_dir / self.items[index][0])

    def _load(self, index: int) -> dict[str, Any]:
        rel, names = self.items[index]
        folder = self.split_dir / rel
        start = pick_start(len(names) - self.span + 1, self.train, self.test_start)
        picked = names[start : start + self.span : self.sample_every_n_frames]
        frames = np.stack([read_frame(folder / name) for name in picked])  # (T, H, W, 3)
        flip = random_flip(self.random_flip and self.train)
        return dict(video=preprocess_clip(frames, self.resolution, flip=flip), label=0, path=str(folder))
