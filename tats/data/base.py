"""Common behaviour of the clip datasets: the window index, bounded retries on read errors and one-shot
warnings."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

from torch.utils.data import Dataset

from tats.data.transforms import pick_start
from tats.data.windows import ALL, ClipsPerVideo, WindowIndex, parse_clips_per_video

#: How many consecutive items ``__getitem__`` tries before giving up on read errors.
MAX_READ_RETRIES = 10


def load_with_fallback(
    owner: Any,
    index: int,
    load: Callable[[int, int], dict[str, Any]],
    next_index: Callable[[int], int],
    attempts: int,
    noun: str,
    errors: tuple[type[BaseException], ...] = (Exception,),  # any decoder/IO error: try another file
    fatal: tuple[type[BaseException], ...] = (),
) -> dict[str, Any]:
    """``load(i, attempt)`` for item ``index``; when it raises one of ``errors`` (not ``fatal``), warn once
    per item name (``owner.describe(i)``) and try ``next_index(i)``, for at most ``attempts`` items. Then a
    RuntimeError lists every failure: a bad file is skipped, a broken dataset stops the run."""
    failures: list[str] = []
    i = index
    for attempt in range(attempts):
        try:
            return load(i, attempt)
        except fatal:
            raise
        except errors as err:
            name = owner.describe(i)
            failures.append(f"{name}: {type(err).__name__}: {err}")
            warned = owner.__dict__.setdefault("_warned_read_errors", set())
            if name not in warned:
                warned.add(name)
                warnings.warn(f"could not read {name} ({err}); using the next {noun}", RuntimeWarning,
                              stacklevel=3)
        i = next_index(i)
    raise RuntimeError(f"{type(owner).__name__}: {len(failures)} consecutive {noun}(s) failed to load "
                       f"starting at index {index}:\n  " + "\n  ".join(failures))


def warn_skipped(what: str, root: str, skipped: Sequence[tuple[str, str]], limit: int = 20) -> None:
    """Emit ONE warning listing every skipped file (name and reason) with the total count."""
    if not skipped:
        return
    lines = [f"  {name}: {reason}" for name, reason in list(skipped)[:limit]]
    if len(skipped) > limit:
        lines.append(f"  ... and {len(skipped) - limit} more")
    warnings.warn(
        f"{what} under {root}: skipped {len(skipped)} unusable item(s):\n" + "\n".join(lines),
        RuntimeWarning,
        stacklevel=3,
    )


class ClipDataset(Dataset):
    """Base class: items are clip windows of usable videos (:class:`tats.data.windows.WindowIndex`);
    subclasses list their videos, call :meth:`_build_index` and implement ``_load(i)`` and ``describe(i)``.

    A read error on item ``i`` moves on to an item of the next video, then the one after (as the
    release replaced an unreadable clip by the next; at most ``MAX_READ_RETRIES`` videos, each failing
    file warned about once per process) and then raises naming the files, so a broken file can neither
    kill a long run outright nor make a worker loop forever.
    """

    train: bool = True
    #: ``--clips_per_video`` when the caller gives none: the release's choice for the layout.
    default_clips_per_video: ClipsPerVideo = 1

    def __init__(
        self,
        train: bool,
        sequence_length: int,
        resolution: int,
        sample_every_n_frames: int,
        random_flip: bool,
        test_start: str,
        clips_per_video: ClipsPerVideo | None = None,
    ) -> None:
        """The clip settings every dataset shares (``clips_per_video`` None: the layout's default)."""
        if sequence_length < 1 or sample_every_n_frames < 1:
            raise ValueError(f"sequence_length and sample_every_n_frames must be >= 1, got "
                             f"{sequence_length}, {sample_every_n_frames}")
        self.train = train
        self.sequence_length, self.resolution = sequence_length, resolution
        self.sample_every_n_frames = sample_every_n_frames
        self.random_flip, self.test_start = random_flip, test_start
        self.clips_per_video = parse_clips_per_video(
            self.default_clips_per_video if clips_per_video is None else clips_per_video)
        self.windows = WindowIndex([], self.clips_per_video)

    def n_starts(self, n_frames: int) -> int:  # pragma: no cover - subclasses override
        """Valid clip starts in a video of ``n_frames`` frames (< 1: the video is too short)."""
        raise NotImplementedError

    def _build_index(self, lengths: list[int]) -> None:
        """Index the windows of videos of ``lengths`` frames (all usable: ``n_starts >= 1``)."""
        self.windows = WindowIndex([self.n_starts(n) for n in lengths], self.clips_per_video)

    def _locate(self, index: int) -> tuple[int, int]:
        """``(video, start)`` of item ``index``: the window's own start, or one drawn for it (random in
        training, the first or evenly spaced ones in evaluation)."""
        video, start, repetition = self.windows.locate(index)
        if start is None:
            n = int(self.windows.n_starts[video])
            if self.train:
                start = pick_start(n, True)
            elif self.windows.clips_per_video == 1:
                start = pick_start(n, False, self.test_start)
            else:
                start = self.windows.spaced_start(video, repetition)
        return video, start

    @property
    def every_window(self) -> bool:
        """Whether every window is an item (``--clips_per_video all``)."""
        return self.clips_per_video == ALL

    def __len__(self) -> int:
        return len(self.windows)

    def _load(self, index: int) -> dict[str, Any]:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Human-readable name of item ``index`` (a file or folder path) for error messages."""
        return str(index)

    def _next_video_item(self, index: int) -> int:
        """The item tried after item ``index`` failed: the first item of the next video (the other
        windows of a file that failed to read would fail too)."""
        if self.every_window:
            video = self.windows.locate(index)[0]
            return int(self.windows.ends[video]) % len(self)
        return (index + 1) % len(self)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        attempts = min(MAX_READ_RETRIES, self.windows.n_videos or n)
        return load_with_fallback(self, index % n, lambda i, attempt: self._load(i), self._next_video_item,
                                  attempts, "clip")
