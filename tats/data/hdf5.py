"""The release's HDF5 video layout: reader (a clip dataset) and an incremental writer.

    {split}_data     uint8 (N_frames, H, W, C)   every frame of every video, concatenated
    {split}_idx      int   (N_videos,)           start frame of each video in {split}_data
    {split}_label    int   (N_videos,)           optional class id per video
    {split}_caption  utf-8 string (N_videos,)    optional caption per video
    attrs["label_names"]                         optional JSON list of class names
    attrs["tats_idx"]                            "starts": written by HDF5VideoWriter

``split`` is ``train`` or ``test``. Clips never cross a video boundary; one item per video, as in the
release, unless ``clips_per_video`` (docs/data.md).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any, Union

import h5py
import numpy as np

from tats.data.base import ClipDataset, warn_skipped
from tats.data.transforms import clip_length, preprocess_clip, random_flip
from tats.data.windows import ClipsPerVideo

HDF5_SUFFIXES = (".h5", ".hdf5")


#: Files already warned about their index of starts only (one warning per file and process).
_WARNED_STARTS_ONLY: set[str] = set()


def _video_bounds(idx: np.ndarray, n_frames: int, path: str, prefix: str) -> np.ndarray:
    """``(N_videos, 2)`` start/end frame of every video, validating the index.

    A last entry equal to ``n_frames`` is the end of the last video, not a video, as the release reads
    it. An index of starts only keeps every video (the caller warns, :func:`_warn_starts_only`)."""
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    if len(idx) > 1 and idx[-1] == n_frames:
        idx = idx[:-1]
    ends = np.append(idx[1:], n_frames)
    if len(idx) and (idx[0] < 0 or np.any(ends < idx) or ends[-1] > n_frames):
        raise ValueError(f"{path}: {prefix}_idx must be non-decreasing start frames within {prefix}_data "
                         f"({n_frames} frames)")
    return np.stack([idx, ends], axis=1)


def _warn_starts_only(path: Path, prefix: str) -> None:
    """Once per file: its index is read as starts only where the release reads it differently.

    The release's ``HDF5Dataset`` drops the last entry of every index, so it reads an index of starts
    only as one video fewer, the last two merged. That quirk is NOT followed: our own HDF5 files (demo
    data, ``datasets/prepare_bair.py``, sample files) hold starts only and the documented figures were
    measured reading every video; this warning says so instead (docs/data.md)."""
    key = str(path.resolve())
    if key in _WARNED_STARTS_ONLY:
        return
    _WARNED_STARTS_ONLY.add(key)
    warnings.warn(f"{path}: {prefix}_idx holds video starts only (no last entry equal to the "
                  f"{prefix}_data length): every video is read, where the release's HDF5Dataset drops the "
                  "last entry and reads the last two videos as one (docs/data.md)", UserWarning, stacklevel=3)


def _read_labels_info(f: h5py.File) -> tuple[list[str], bool]:
    """Class names (from attrs, else ``0..max``) and whether the file has labels at all."""
    has_labels = "train_label" in f or "test_label" in f
    if "label_names" in f.attrs:
        names = json.loads(f.attrs["label_names"])
        return [str(n) for n in names], has_labels
    if not has_labels:
        return ["all"], False
    top = max(int(np.max(f[k][:], initial=0)) for k in ("train_label", "test_label") if k in f)
    return [str(i) for i in range(top + 1)], True


class HDF5Handle:
    """Mixin: ``_h5()`` is one read-only h5py handle of ``self.path`` per process (h5py handles must not
    cross a DataLoader worker fork), dropped when the object is pickled."""

    path: Path
    _file: h5py.File | None = None
    _pid: int | None = None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = h5py.File(self.path, "r"), os.getpid()
        return self._file

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_file"] = state["_pid"] = None
        return state


class HDF5VideoDataset(HDF5Handle, ClipDataset):
    """Clips from a release-layout HDF5 file (one item per video by default).

    Args: as :class:`tats.data.video_folder.VideoFolderDataset`, with ``path`` the ``.h5`` file and
    ``clips_per_video`` defaulting to 1 (the release).

    Items: ``dict(video=float32 (C, T, H, W) in [-0.5, 0.5], label=int, index=int)`` plus
    ``text=str`` when the file has captions. Unlabelled files give label 0 and ``n_classes == 1``.
    """

    def __init__(
        self,
        path: Union[str, Path],
        train: bool = True,
        sequence_length: int = 16,
        resolution: int = 128,
        sample_every_n_frames: int = 1,
        random_flip: bool = False,
        test_start: str = "first",
        clips_per_video: ClipsPerVideo | None = None,
    ):
        super().__init__(train, sequence_length, resolution, sample_every_n_frames, random_flip, test_start,
                         clips_per_video)
        self.clip_length = clip_length(sequence_length, sample_every_n_frames)
        self.path = Path(path)
        self.prefix = "train" if train else "test"

        if not self.path.is_file():
            raise ValueError(f"--data_path {self.path}: HDF5 file not found")
        with h5py.File(self.path, "r") as f:
            missing = [k for k in (f"{self.prefix}_data", f"{self.prefix}_idx") if k not in f]
            if missing:
                raise ValueError(f"{self.path}: missing dataset(s) {missing}; expected the layout "
                                 f"{self.prefix}_data uint8 (N, H, W, C) and {self.prefix}_idx (videos,)")
            data = f[f"{self.prefix}_data"]
            if data.ndim not in (3, 4) or data.dtype != np.uint8:
                raise ValueError(f"{self.path}: {self.prefix}_data must be uint8 (N, H, W, C), "
                                 f"got {data.dtype} {data.shape}")
            idx = f[f"{self.prefix}_idx"][:]
            bounds = _video_bounds(idx, data.shape[0], str(self.path), self.prefix)
            if len(idx) and idx[-1] != data.shape[0] and f.attrs.get("tats_idx") != "starts":
                _warn_starts_only(self.path, self.prefix)
            self.classes, self.has_labels = _read_labels_info(f)
            labels = f[f"{self.prefix}_label"][:] if f"{self.prefix}_label" in f else None
            self.has_captions = f"{self.prefix}_caption" in f
            self.attrs = {k: f.attrs[k] for k in f.attrs}
        if labels is not None and len(labels) != len(bounds):
            raise ValueError(f"{self.path}: {self.prefix}_label has {len(labels)} entries for "
                             f"{len(bounds)} videos")
        lengths = bounds[:, 1] - bounds[:, 0]
        usable = lengths >= sequence_length
        warn_skipped("HDF5 videos", f"{self.path}:{self.prefix}",
                     [(f"video {i}", f"{lengths[i]} frames, a clip needs {sequence_length}")
                      for i in np.flatnonzero(~usable)])
        self.videos = np.flatnonzero(usable)  # positions in the file's video list
        self.bounds = bounds
        self.labels = np.zeros(len(bounds), np.int64) if labels is None else np.asarray(labels, np.int64)
        if len(self.videos) == 0:
            raise ValueError(f"{self.path}: no video in {self.prefix}_data has at least {sequence_length} "
                             f"frames (sequence_length={sequence_length}); {len(bounds)} video(s) in the "
                             "file")
        self._build_index([int(n) for n in lengths[self.videos]])

    def n_starts(self, n_frames: int) -> int:
        """The release draws ``randint(0, n_frames - sequence_length)`` (upper bound exclusive, so never
        the last window); a video of exactly ``sequence_length`` frames starts at 0."""
        if n_frames < self.sequence_length:
            return 0
        return max(n_frames - self.sequence_length, 1)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def describe(self, index: int) -> str:
        return f"{self.path} ({self.prefix} video {int(self.videos[self.windows.locate(index)[0]])})"

    def _load(self, index: int) -> dict[str, Any]:
        f = self._h5()
        position, offset = self._locate(index)
        video_id = int(self.videos[position])
        start = int(self.bounds[video_id][0]) + offset
        frames = f[f"{self.prefix}_data"][start : start + self.sequence_length : self.sample_every_n_frames]
        if frames.ndim == 3:
            frames = frames[..., None]  # (T, H, W) grayscale -> (T, H, W, 1)
        flip = random_flip(self.random_flip and self.train)
        item = dict(video=preprocess_clip(frames, self.resolution, flip=flip),
                    label=int(self.labels[video_id]), index=video_id, start=offset)
        if self.has_captions:
            item["text"] = f[f"{self.prefix}_caption"].asstr()[video_id]
        return item


class HDF5VideoWriter:
    """Write videos into the release layout incrementally (memory stays one batch).

    Example::

        with HDF5VideoWriter(path, frame_shape=(64, 64, 3)) as w:
            w.add("train", frames)                  # uint8 (T, H, W, C)
            w.add_batch("test", clips, labels, captions)   # uint8 (N, T, H, W, C)
    """

    def __init__(self, path: Union[str, Path], frame_shape: tuple[int, int, int], chunk_frames: int = 16,
                 compression: str | None = "gzip", compression_opts: int | None = 1):
        self.path = Path(path)
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.chunk_frames = chunk_frames
        self.compression, self.compression_opts = compression, compression_opts
        self.file = h5py.File(self.path, "w")
        self._meta: dict[str, dict[str, list]] = {}

    def _dataset(self, split: str) -> h5py.Dataset:
        name = f"{split}_data"
        if name not in self.file:
            self.file.create_dataset(
                name, shape=(0, *self.frame_shape), maxshape=(None, *self.frame_shape), dtype=np.uint8,
                chunks=(self.chunk_frames, *self.frame_shape), compression=self.compression,
                compression_opts=self.compression_opts if self.compression == "gzip" else None,
            )
            self._meta[split] = dict(idx=[], label=[], caption=[])
        return self.file[name]

    def add_batch(self, split: str, clips: np.ndarray, labels=None, captions=None) -> None:
        """Append ``N`` equal-length videos, uint8 ``(N, T, H, W, C)``, with optional labels/captions."""
        clips = np.asarray(clips)
        if clips.dtype != np.uint8 or clips.ndim != 5 or tuple(clips.shape[2:]) != self.frame_shape:
            raise ValueError(f"expected uint8 (N, T, {self.frame_shape}), got {clips.dtype} {clips.shape}")
        data = self._dataset(split)
        meta = self._meta[split]
        n, t = clips.shape[:2]
        offset = data.shape[0]
        data.resize(offset + n * t, axis=0)
        data[offset:] = clips.reshape(n * t, *self.frame_shape)
        meta["idx"].extend(offset + t * np.arange(n))
        for key, values in (("label", labels), ("caption", captions)):
            if values is not None:
                if len(values) != n:
                    raise ValueError(f"{len(values)} {key}s for {n} videos")
                meta[key].extend(values)

    def add(self, split: str, frames: np.ndarray, label: int | None = None,
            caption: str | None = None) -> None:
        """Append one video, uint8 ``(T, H, W, C)``."""
        self.add_batch(split, np.asarray(frames)[None], None if label is None else [label],
                       None if caption is None else [caption])

    def close(self) -> None:
        """Write the index, labels and captions, and close the file."""
        if self.file is None:
            return
        self.file.attrs["tats_idx"] = "starts"  # read as such without a warning (module docstring)
        for split, meta in self._meta.items():
            n = len(meta["idx"])
            self.file.create_dataset(f"{split}_idx", data=np.asarray(meta["idx"], dtype=np.int64))
            for key, dtype in (("label", np.int64), ("caption", h5py.string_dtype("utf-8"))):
                if meta[key]:
                    if len(meta[key]) != n:
                        raise ValueError(f"{split}: {key}s given for only some videos")
                    self.file.create_dataset(f"{split}_{key}", data=np.asarray(meta[key], dtype=dtype))
        self.file.close()
        self.file = None

    def __enter__(self) -> HDF5VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
