"""Which clips a dataset serves: every window of every video, or a few random windows per video.

The release's video folders make every window an item, its HDF5 and frame-folder datasets one random
window per video; ``--clips_per_video`` (``"all"`` or ``N``) chooses for any layout. A video of ``L``
frames has ``n_starts(L)`` valid starts (the dataset's rule); :class:`WindowIndex` keeps only these
counts and their prefix sums, so ``len()`` is O(1), an item is a binary search, and building it decodes
nothing (docs/data.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Union

import numpy as np

#: ``--clips_per_video`` value for "every window is an item".
ALL = "all"
ClipsPerVideo = Union[int, str]


def parse_clips_per_video(value: str | int) -> ClipsPerVideo:
    """``--clips_per_video`` value: ``"all"`` or an integer >= 1 (argparse ``type=``)."""
    if isinstance(value, str) and value.strip().lower() == ALL:
        return ALL
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(
            f"--clips_per_video: expected 'all' (every window) or an integer >= 1, got {value!r}"
        )
    return n


class WindowIndex:
    """Maps an item index to ``(video, start)``.

    Args:
        n_starts: valid clip starts of each video (each >= 1).
        clips_per_video: ``"all"`` (every start is an item) or ``N`` items per video.

    In ``"all"`` mode item ``i`` is start ``i - ends[v - 1]`` of the video ``v`` whose prefix-sum range
    holds ``i``. In ``N`` mode item ``i`` is repetition ``i // n_videos`` of video ``i % n_videos``
    (one pass over every video, then the next), and :meth:`locate` returns ``start=None``: the
    dataset draws it.
    """

    def __init__(self, n_starts: Sequence[int], clips_per_video: ClipsPerVideo = ALL) -> None:
        self.n_starts = np.asarray(n_starts, dtype=np.int64).reshape(-1)
        if (self.n_starts < 1).any():
            raise ValueError("every video needs at least one valid clip start")
        self.clips_per_video = parse_clips_per_video(clips_per_video)
        self.n_videos = len(self.n_starts)
        if self.every_window:
            self.ends = np.cumsum(self.n_starts)  # (n_videos,) items before the end of each video
            self._len = int(self.ends[-1]) if self.n_videos else 0
        else:
            self._len = self.n_videos * int(self.clips_per_video)

    @property
    def every_window(self) -> bool:
        return self.clips_per_video == ALL

    def __len__(self) -> int:
        return self._len

    def locate(self, index: int) -> tuple[int, int | None, int]:
        """``(video, start, repetition)`` of item ``index`` (``start`` None: draw it; see the class)."""
        if not 0 <= index < self._len:
            raise IndexError(f"item {index} out of range for {self._len} items")
        if self.every_window:
            video = int(np.searchsorted(self.ends, index, side="right"))
            before = int(self.ends[video - 1]) if video else 0
            return video, index - before, 0
        return index % self.n_videos, None, index // self.n_videos

    def spaced_start(self, video: int, repetition: int) -> int:
        """Deterministic start of repetition ``k`` of ``N`` (evaluation): ``N`` evenly spaced starts
        from the first one (so ``N = 1`` gives the first window)."""
        n, per = int(self.n_starts[video]), int(self.clips_per_video)
        return 0 if per == 1 else round(repetition * (n - 1) / (per - 1))
