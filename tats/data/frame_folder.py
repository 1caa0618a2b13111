"""Videos stored as folders of frame images (Sky Time-lapse, Taichi-HD; the release's ``--image_folder``):
``root/<video_id>/<frame>.jpg|png`` (the release's: every folder holding images is one video, training
and validation read the same folders), or ``root/{train,test}/<video_id>/...`` with each split its own.

As in the release: one item per folder with more than ``sequence_length * n`` frames, a random start,
``sequence_length`` frames ``n`` apart, each centre-cropped to a square and resized with PIL's
antialiasing filter. Frames are ordered by the numbers in their names; no classes (docs/data.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

import numpy as np
from PIL import Image

from tats.data.base import ClipDataset, warn_skipped
from tats.data.transforms import natural_key, preprocess_clip, random_flip, square_frame_pil
from tats.data.windows import ClipsPerVideo

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_frame_folders(
    root: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> dict[str, list[str]]:
    """``{relative folder: frame file names sorted numerically}`` for every folder holding images."""
    exts = tuple(e.lower() for e in extensions)
    videos = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        frames = [f for f in filenames if f.lower().endswith(exts) and not f.startswith(".")]
        if frames:
            videos[Path(dirpath).relative_to(root).as_posix()] = sorted(frames, key=natural_key)
    return dict(sorted(videos.items()))


def frames_folder(root: Union[str, Path], train: bool) -> Path:
    """The folder a split reads: ``root/train`` or ``root/test`` when root has both, else root itself
    (the release: no split, training and validation read the same folders)."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"--data_path {root}: expected a folder of frame folders (--image_folder)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return root / ("train" if train else "test")
    return root


class FrameFolderDataset(ClipDataset):
    """Clips from frame folders; arguments as :class:`~tats.data.video_folder.VideoFolderDataset`
    (``clips_per_video`` defaults to 1, the release).

    Items: ``dict(video=float32 (C, T, H, W) in [-0.5, 0.5], label=0, path=str, start=int)`` (path = the
    folder, ``T = sequence_length``).
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
        clips_per_video: ClipsPerVideo | None = None,
    ):
        super().__init__(train, sequence_length, resolution, sample_every_n_frames, random_flip, test_start,
                         clips_per_video)
        self.root = Path(root)
        self.split_dir = frames_folder(root, train)
        self.clip_length = sequence_length
        self.classes = ["all"]
        need = sequence_length * sample_every_n_frames + 1

        videos = list_frame_folders(self.split_dir, extensions)
        self.items: list[tuple[str, list[str]]] = []
        skipped = []
        for rel, frames in videos.items():
            if self.n_starts(len(frames)) < 1:
                skipped.append((rel, f"{len(frames)} frames, a clip needs {need}"))
            else:
                self.items.append((rel, frames))
        warn_skipped("frame folders", str(self.split_dir), skipped)
        if not self.items:
            raise ValueError(
                f"no usable frame folder under {self.split_dir}: expected <video_id>/ folders of images "
                f"({', '.join(extensions)}) with at least {need} frames (more than sequence_length "
                f"{sequence_length} x sample_every_n_frames {sample_every_n_frames}); found {len(videos)} "
                f"folder(s), {len(skipped)} too short"
            )
        self._build_index([len(frames) for _, frames in self.items])

    def n_starts(self, n_frames: int) -> int:
        """The release draws ``randint(0, n_frames - 1 - seq * n)`` (both ends inclusive)."""
        return n_frames - self.sequence_length * self.sample_every_n_frames

    @property
    def n_classes(self) -> int:
        return 1

    def describe(self, index: int) -> str:
        return str(self.split_dir / self.items[self.windows.locate(index)[0]][0])

    def _load(self, index: int) -> dict[str, Any]:
        video, start = self._locate(index)
        rel, names = self.items[video]
        folder = self.split_dir / rel
        every = self.sample_every_n_frames
        picked = names[start : start + self.sequence_length * every : every]
        frames = []
        for name in picked:
            with Image.open(folder / name) as img:
                frames.append(square_frame_pil(img, self.resolution))
        flip = random_flip(self.random_flip and self.train)
        clip = preprocess_clip(np.stack(frames), self.resolution, flip=flip)  # (C, T, H, W), already square
        return dict(video=clip, label=0, path=str(folder), start=start)
