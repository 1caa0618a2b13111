"""Long videos that were already generated, read in batches for evaluation along their length: a ``.npy``
of uint8 ``(N, T, H, W, C)`` (``samples.npy``; a ``labels.npy`` beside it gives the classes), an HDF5
file in the layout of :mod:`tats.data.hdf5` (with the optional ``{split}_label``), or a folder of
video files. Every video of a set must have the same length (windows are compared position by
position); a set of mixed lengths is an error naming them, and unreadable files are skipped with one
warning that names and counts them.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from tats.data.base import warn_skipped
from tats.data.hdf5 import HDF5_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".gif", ".m4v")


@dataclass
class LongVideoSet:
    """``n`` videos of ``length`` frames each; :meth:`batches` yields uint8 ``(b, T, H, W, C)`` and labels."""

    path: Path
    kind: str  # "npy", "hdf5" or "videos"
    n: int
    length: int
    labels: np.ndarray | None = None  # (n,) int class ids, when the set has them
    files: list[Path] = field(default_factory=list)  # "videos": one file per video
    split: str = "test"  # "hdf5": the split read
    skipped: int = 0  # unreadable files left out

    def batches(self, batch_size: int, rows: np.ndarray | None = None
                ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """``(videos uint8 (b, T, H, W, C), labels (b,) or None)`` for ``rows`` (default: every video)."""
        rows = np.arange(self.n) if rows is None else np.asarray(rows)
        for i in range(0, len(rows), batch_size):
            part = rows[i : i + batch_size]
            labels = None if self.labels is None else self.labels[part]
            yield self._read(part), labels

    def _read(self, rows: np.ndarray) -> np.ndarray:
        if self.kind == "npy":
            arr = np.load(self.path, mmap_mode="r")
            return np.stack([arr[j] for j in rows])  # copies out of the memory map
        if self.kind == "hdf5":
            with h5py.File(self.path, "r") as f:
                data, idx = f[f"{self.split}_data"], f[f"{self.split}_idx"][:]
                return np.stack([data[idx[j] : idx[j] + self.length] for j in rows])
        from tats.io.video import read_video  # PyAV only where video files are read

        return np.stack([read_video(self.files[j])[: self.length] for j in rows])


def _labels_beside(path: Path, n: int) -> np.ndarray | None:
    labels = path.with_name("labels.npy")
    if not labels.is_file():
        return None
    arr = np.load(labels, allow_pickle=False)
    if arr.shape != (n,):
        raise ValueError(f"{labels}: expected {n} labels (one per video of {path.name}), got shape "
                         f"{arr.shape}")
    return arr.astype(np.int64)


def _mixed_lengths_error(flag: str, path: Path, lengths: dict[str, int]) -> ValueError:
    counts = Counter(lengths.values())
    shortest = min(lengths, key=lengths.get)
    listing = ", ".join(f"{n} of {length} frames" for length, n in sorted(counts.items()))
    return ValueError(f"{flag} {path}: videos of mixed lengths ({listing}; e.g. {shortest} has "
                      f"{lengths[shortest]}); windows are compared position by position, so give videos of "
                      f"one length")


def open_long_videos(spec: str | os.PathLike, split: str = "test", flag: str = "--videos") -> LongVideoSet:
    """Open a set of long videos (see the module docstring); ``flag`` names the option in errors."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{flag} {path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, mmap_mode="r")
        if arr.dtype != np.uint8 or arr.ndim != 5:
            raise ValueError(f"{flag} {path}: expected uint8 (N, T, H, W, C), got {arr.dtype} {arr.shape}")
        return LongVideoSet(path, "npy", arr.shape[0], arr.shape[1], _labels_beside(path, arr.shape[0]))
    if suffix in HDF5_SUFFIXES:
        with h5py.File(path, "r") as f:
            if f"{split}_data" not in f or f"{split}_idx" not in f:
                raise ValueError(f"{flag} {path}: no {split}_data / {split}_idx (the layout of "
                                 "tats.data.hdf5)")
            idx = f[f"{split}_idx"][:].astype(np.int64)
            ends = np.append(idx[1:], f[f"{split}_data"].shape[0])
            labels = f[f"{split}_label"][:].astype(np.int64) if f"{split}_label" in f else None
        lengths = {f"video {i}": int(e - s) for i, (s, e) in enumerate(zip(idx, ends))}
        if len(set(lengths.values())) > 1:
            raise _mixed_lengths_error(flag, path, lengths)
        return LongVideoSet(path, "hdf5", len(idx), int(ends[0] - idx[0]) if len(idx) else 0, labels,
                            split=split)
    if not path.is_dir():
        raise ValueError(f"{flag} {path}: expected a .npy of uint8 (N, T, H, W, C), an .h5/.hdf5 file or a "
                         f"folder of videos ({', '.join(VIDEO_SUFFIXES)})")
    from tats.data.decode import probe_video  # PyAV only where video files are read

    files = sorted(f for f in path.rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
    lengths: dict[str, int] = {}
    good, skipped = [], []
    for f in files:
        try:
            lengths[str(f.relative_to(path))] = probe_video(f)["n_frames"]
            good.append(f)
        except Exception as err:  # noqa: BLE001 - any container error: skip and count the file
            skipped.append((str(f.relative_to(path)), f"{type(err).__name__}: {err}"))
    warn_skipped("long videos", str(path), skipped)
    if not good:
        raise ValueError(f"{flag} {path}: no readable video files ({', '.join(VIDEO_SUFFIXES)})")
    if len(set(lengths.values())) > 1:
        raise _mixed_lengths_error(flag, path, lengths)
    return LongVideoSet(path, "videos", len(good), next(iter(lengths.values())), files=good,
                        skipped=len(skipped))
