"""A folder of video files with ``train/`` and ``test/`` splits and class sub-folders (UCF-101 layout).

Layout::

    root/train/<Class>/<name>.avi|mp4|webm
    root/test/<Class>/<name>.avi|mp4|webm

The class of a file is its parent folder (relative to the split folder); the sorted union of the
class folders of both splits gives the ids, so train and test agree. One item per usable video: a
clip of ``sequence_length`` frames, every ``sample_every_n_frames``-th frame, starting at a random
valid frame in training and at the first (or centre) valid frame in evaluation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from tats.data import decode
from tats.data.base import ClipDataset, warn_skipped
from tats.data.clip_index import VIDEO_EXTENSIONS, list_video_files, load_clip_index
from tats.data.transforms import pick_start, preprocess_clip, random_flip


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
        train: which split; also random (train) vs deterministic (test) clip starts.
        sequence_length: frames per clip ``T``.
        resolution: output side; frames are resized/cropped as in :func:`preprocess_clip`.
        sample_every_n_frames: temporal stride between the clip's frames.
        random_flip: horizontal flip augmentation (off by default, as in the release).
        test_start: ``"first"`` or ``"centre"`` valid start for evaluation clips.
        cache_dir: where the frame-count index is cached when the split folder is read-only.

    Items: ``dict(video=float32 (C, T, H, W) in [-0.5, 0.5], label=int, path=str)``.
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
        cache_dir: Union[str, Path] | None = None,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    ):
        super().__init__(train, sequence_length, resolution, sample_every_n_frames, random_flip, test_start)
        self.root = Path(root)
        self.split_dir = split_folder(root, train)

        files = list_video_files(self.split_dir, extensions)
        # Class ids from both splits so that train and test agree even if one lacks a class.
        other = self.root / ("test" if train else "train")
        all_files = files + (list_video_files(other, extensions) if other.is_dir() else [])
        self.classes = sorted({_class_of(rel) for rel in all_files})
        self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

        entries, self.index_path = load_clip_index(self.split_dir, files, cache_dir)
        self.items: list[tuple[str, int, int]] = []  # (relative path, n_frames, label)
        skipped = []
        for rel in files:
            entry = entries[rel]
            if entry.get("error"):
                skipped.append((rel, entry["error"]))
            elif entry["n_frames"] < self.span:
                skipped.append((rel, f"{entry['n_frames']} frames, a clip needs {self.span}"))
            else:
                self.items.append((rel, int(entry["n_frames"]), self.class_to_idx[_class_of(rel)]))
        warn_skipped("video folder", str(self.split_dir), skipped)
        if not self.items:
            raise ValueError(
                f"no usable video under {self.split_dir}: expected video files ({', '.join(extensions)}) "
                f"in {self.split_dir}/<class>/ with at least {self.span} frames "
                f"(sequence_length={sequence_length}, sample_every_n_frames={sample_every_n_frames}); "
                f"found {len(files)} file(s), {len(skipped)} unusable"
            )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self, index: int) -> str:
        return str(self.split_dir / self.items[index][0])

    def _load(self, index: int) -> dict[str, Any]:
        rel, n_frames, label = self.items[index]
        path = self.split_dir / rel
        start = pick_start(n_frames - self.span + 1, self.train, self.test_start)
        try:
            frames = decode.decode_clip(path, start, self.sequence_length, self.sample_every_n_frames)
        except decode.ShortClipError as err:
            # The metadata promised more frames than the stream holds: end the clip at the real end.
            if err.n_available < self.span:
                raise
            start = err.n_available - self.span
            frames = decode.decode_clip(path, start, self.sequence_length, self.sample_every_n_frames)
        flip = random_flip(self.random_flip and self.train)
        video = preprocess_clip(frames, self.resolution, flip=flip)  # (C, T, H, W)
        return dict(video=video, label=label, path=str(path))
