"""A folder of video files with ``train/`` and ``test/`` splits and class sub-folders (UCF-101 layout:
``root/{train,test}/<Class>/<name>.avi|mp4|webm``).

As in the release (torchvision ``VideoClips``, step 1), every window of ``sequence_length`` frames of
every file is an item, thinned to every ``sample_every_n_frames``-th frame; the class is the parent
folder, ids from the sorted class folders of both splits; ``frame_rate`` resamples files first, as
``VideoClips(frame_rate=...)`` does. Frame counts come from the cached metadata index
(:mod:`tats.data.clip_index`): building the dataset decodes nothing. docs/data.md has the rules.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path
from typing import Any, Union

import numpy as np

from tats.data import decode
from tats.data.base import ClipDataset, warn_skipped
from tats.data.clip_index import VIDEO_EXTENSIONS, list_video_files, load_clip_index
from tats.data.transforms import clip_length, preprocess_clip, random_flip
from tats.data.windows import ALL, ClipsPerVideo


def _class_of(rel: str) -> str:
    parent = Path(rel).parent.as_posix()
    return parent


def split_folder(root: Union[str, Path], train: bool) -> Path:
    """``root/train`` or ``root/test``, with a clear error when missing."""
    split = Path(root) / ("train" if train else "test")
    if not split.is_dir():
        raise ValueError(
            f"--data_path {root}: expected a folder with train/ and test/ sub-folders, "
            f"but {split} does not exist"
        )
    return split


class VideoFolderDataset(ClipDataset):
    """Clips from video files decoded with PyAV.

    Args:
        root: dataset folder holding ``train/`` and ``test/``.
        train: which split; also random (train) vs deterministic (test) starts with ``clips_per_video=N``.
        sequence_length: frames of a window; a clip keeps every ``sample_every_n_frames``-th of them.
        resolution: output side; frames are resized/cropped as in :func:`preprocess_clip`.
        sample_every_n_frames: temporal stride inside the window.
        random_flip: horizontal flip augmentation (off by default, as in the release).
        test_start: ``"first"`` or ``"centre"`` start of evaluation clips with ``clips_per_video=1``.
        cache_dir: where the frame-count index is cached when the split folder is read-only.
        clips_per_video: ``"all"`` (default, the release: every window) or N random windows per video.

    Items: ``dict(video=float32 (C, T, H, W) in [-0.5, 0.5], label=int, path=str, start=int)``.
    """

    default_clips_per_video = ALL

    def __init__(
        self,
        root: Union[str, Path],
        train: bool = True,
        sequence_length: int = 16,
        resolution: int = 128,
        sample_every_n_frames: int = 1,
        random_flip: bool = False,
        test_start: str = "first",
        cache_dir: Union[str, Path] | None = None,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
        clips_per_video: ClipsPerVideo | None = None,
        frame_rate: float | None = None,
    ):
        super().__init__(train, sequence_length, resolution, sample_every_n_frames, random_flip, test_start,
                         clips_per_video)
        self.root = Path(root)
        self.split_dir = split_folder(root, train)
        self.clip_length = clip_length(sequence_length, sample_every_n_frames)
        if frame_rate is not None and frame_rate <= 0:
            raise ValueError(f"--frame_rate must be positive, got {frame_rate}")
        self.frame_rate = None if frame_rate is None else Fraction(frame_rate).limit_denominator(10_000)

        files = list_video_files(self.split_dir, extensions)
        # Class ids from both splits so that train and test agree even if one lacks a class.
        other = self.root / ("test" if train else "train")
        all_files = files + (list_video_files(other, extensions) if other.is_dir() else [])
        self.classes = sorted({_class_of(rel) for rel in all_files})
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

        entries, self.index_path = load_clip_index(self.split_dir, files, cache_dir)
        self.items: list[tuple[str, int, int]] = []  # (relative path, n_frames (resampled), label)
        self.steps: list[Fraction] = []  # per item: file frames per resampled frame (1 without frame_rate)
        skipped = []
        for rel in files:
            entry = entries[rel]
            fps = Fraction(entry.get("fps") or 0).limit_denominator(10_000)
            step = Fraction(1) if self.frame_rate is None or not fps else fps / self.frame_rate
            n = math.ceil(entry["n_frames"] / step)
            if entry.get("error"):
                skipped.append((rel, entry["error"]))
            elif self.frame_rate is not None and not fps:
                skipped.append((rel, "no frame rate in its metadata, needed by --frame_rate"))
            elif self.n_starts(n) < 1:
                skipped.append((rel, f"{n} frames, a clip needs {sequence_length}"))
            else:
                self.items.append((rel, n, self.class_to_idx[_class_of(rel)]))
                self.steps.append(step)
        warn_skipped("video folder", str(self.split_dir), skipped)
        if not self.items:
            raise ValueError(
                f"no usable video under {self.split_dir}: expected video files ({', '.join(extensions)}) "
                f"in {self.split_dir}/<class>/ with at least {sequence_length} frames "
                f"(sequence_length={sequence_length}); found {len(files)} file(s), {len(skipped)} unusable"
            )
        self._build_index([n for _, n, _ in self.items])

    def n_starts(self, n_frames: int) -> int:
        """Windows of ``sequence_length`` consecutive frames, step 1 (``VideoClips``)."""
        return n_frames - self.sequence_length + 1

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def describe(self, index: int) -> str:
        return str(self.split_dir / self.items[self.windows.locate(index)[0]][0])

    def _read(self, index: int) -> tuple[int, int, np.ndarray]:
        """``(video, start, frames uint8 (T, H, W, 3))`` of item ``index``."""
        video, start = self._locate(index)
        rel, n_frames, _ = self.items[video]
        path, step = self.split_dir / rel, self.steps[video]

        def read(start: int) -> np.ndarray:
            wanted = [start + k * self.sample_every_n_frames for k in range(self.clip_length)]
            return decode.decode_clip(path, start, self.clip_length, self.sample_every_n_frames,
                                      indices=None if step == 1 else [math.floor(i * step) for i in wanted])

        try:
            frames = read(start)
        except decode.ShortClipError as err:
            # The metadata promised more frames than the stream holds: end the clip at the real end.
            available = math.ceil(err.n_available / step)
            if available < self.sequence_length:
                raise
            start = min(start, available - self.sequence_length)
            frames = read(start)
        return video, start, frames

    def _load(self, index: int) -> dict[str, Any]:
        video, start, frames = self._read(index)
        rel, _, label = self.items[video]
        flip = random_flip(self.random_flip and self.train)
        clip = preprocess_clip(frames, self.resolution, flip=flip)  # (C, T, H, W)
        return dict(video=clip, label=label, path=str(self.split_dir / rel), start=start)
