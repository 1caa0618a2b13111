"""Streaming sample sets to disk in bounded memory: a uint8 ``.npy`` written batch by batch, plus the
grids, contact sheet and per-sample videos every sampling command writes.

Clips are uint8 ``(b, T, H, W, C)`` (:func:`tats.io.video.to_uint8`). Written batches go to the OS page
cache only, never stay in the process, so memory stays flat however many samples a run writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tats.io.video import save_contact_sheet, save_video_grid, write_frames


def write_previews(clips: np.ndarray, out: Path, fps: float) -> None:
    """``grid.mp4``, ``grid.gif`` and ``contact_sheet.png`` of uint8 clips ``(b, T, H, W, C)`` in ``out``:
    the look at a run's first batch every sampler writes."""
    save_video_grid(clips, out / "grid.mp4", fps=fps)
    save_video_grid(clips, out / "grid.gif", fps=fps)
    save_contact_sheet(clips, out / "contact_sheet.png")


class NpyStreamWriter:
    """Writes a uint8 ``.npy`` of a known ``shape`` batch by batch with plain file writes.

    Unlike a memory map, whose written pages stay resident in the process (and count in its RSS),
    written batches go to the OS page cache only, so memory stays flat however large the array.
    The file is a regular ``.npy`` (``np.load`` reads it, ``mmap_mode="r"`` included) once
    ``shape[0]`` rows have been written.
    """

    def __init__(self, path: Path, shape: Sequence[int]) -> None:
        self.path, self.shape, self.rows = Path(path), tuple(int(s) for s in shape), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, rows: np.ndarray) -> None:
        """Append uint8 rows ``(b, *shape[1:])``."""
        if rows.dtype != np.uint8 or tuple(rows.shape[1:]) != self.shape[1:]:
            raise ValueError(f"{self.path}: expected uint8 rows of shape {self.shape[1:]}, got {rows.dtype} "
                             f"{tuple(rows.shape[1:])}")
        if self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows + len(rows)} rows exceed the declared {self.shape[0]}")
        self._file.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            if self.rows != self.shape[0]:
                raise ValueError(f"{self.path}: wrote {self.rows} of {self.shape[0]} rows")


class SampleWriter:
    """Streams uint8 clips ``(b, T, H, W, C)`` to a results folder in bounded memory.

    Writes ``samples.npy`` (uint8 ``(N, T, H, W, C)``, see :class:`NpyStreamWriter`),
    ``grid.mp4`` / ``grid.gif`` / ``contact_sheet.png`` of the first batch, and with ``save_videos``
    one ``videos/NNNNN.mp4`` per sample. Shared by the sampling scripts under ``scripts/``.
    """

    def __init__(self, out: Path, n_total: int, fps: float = 8, save_videos: bool = False) -> None:
        self.out, self.n_total, self.fps, self.save_videos = Path(out), n_total, fps, save_videos
        self.samples: NpyStreamWriter | None = None
        self.count = 0

    def add(self, clips: np.ndarray) -> None:
        """Append a batch of uint8 clips ``(b, T, H, W, C)``."""
        if self.samples is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self.samples = NpyStreamWriter(self.out / "samples.npy", (self.n_total, *clips.shape[1:]))
            write_previews(clips, self.out, self.fps)
        start = self.count
        self.samples.write(clips)
        if self.save_videos:
            for i, clip in enumerate(clips):
                write_frames(clip, self.out / "videos" / f"{start + i:05d}.mp4", fps=self.fps)
        self.count += len(clips)

    @property
    def video_shape(self) -> list[int]:
        """``[T, H, W, C]`` of the written clips."""
        return list(self.samples.shape[1:]) if self.samples is not None else []

    def close(self) -> None:
        if self.samples is not None:
            self.samples.close()


class PairWriter:
    """Streams ``real`` and ``predicted`` uint8 clips ``(b, T, H, W, C)`` to ``real.npy`` /
    ``predicted.npy`` and writes the previews of the first batch side by side (``real | predicted``)."""

    def __init__(self, out: Path, n_total: int, fps: float) -> None:
        self.out, self.n_total, self.fps = Path(out), n_total, fps
        self.arrays: dict[str, NpyStreamWriter] = {}

    def add(self, real: np.ndarray, pred: np.ndarray) -> None:
        if not self.arrays:
            self.out.mkdir(parents=True, exist_ok=True)
            write_previews(np.concatenate([real, pred], axis=3), self.out, self.fps)  # (b, T, H, 2W, C)
            for name in ("real", "predicted"):
                self.arrays[name] = NpyStreamWriter(self.out / f"{name}.npy", (self.n_total, *real.shape[1:]))
        self.arrays["real"].write(real)
        self.arrays["predicted"].write(pred)

    @property
    def video_shape(self) -> list[int]:
        return list(self.arrays["predicted"].shape[1:]) if self.arrays else []

    def close(self) -> None:
        for arr in self.arrays.values():
            arr.close()
