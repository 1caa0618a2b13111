"""Common behaviour of the clip datasets: bounded retries on read errors and one-shot warnings."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from torch.utils.data import Dataset

from tats.data.transforms import clip_span

#: How many consecutive items ``__getitem__`` tries before giving up on read errors.
MAX_READ_RETRIES = 10


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
    """Base class: one item per usable video; subclasses implement ``_load(i)`` and ``describe(i)``.

    A read error on item ``i`` moves on to ``i+1, i+2, ...`` (at most ``MAX_READ_RETRIES`` items, each
    failing file warned about once per process) and then raises naming the files, so a broken file can
    neither kill a long run outright nor make a worker loop forever.
    """

    train: bool = True

    def __init__(
        self,
        train: bool,
        sequence_length: int,
        resolution: int,
        sample_every_n_frames: int,
        random_flip: bool,
        test_start: str,
    ) -> None:
        """The clip settings every dataset shares; ``span`` is the source frames one clip covers."""
        self.train = train
        self.sequence_length, self.resolution = sequence_length, resolution
        self.sample_every_n_frames = sample_every_n_frames
        self.random_flip, self.test_start = random_flip, test_start
        self.span = clip_span(sequence_length, sample_every_n_frames)

    def __len__(self) -> int:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def _load(self, index: int) -> dict[str, Any]:  # pragma: no cover - subclasses override
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """Human-readable name of item ``index`` (a file or folder path) for error messages."""
        return str(index)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {type(self).__name__} of length {n}")
        index %= n
        failures: list[str] = []
        for attempt in range(min(MAX_READ_RETRIES, n)):
            i = (index + attempt) % n
            try:
                return self._load(i)
            except Exception as err:  # noqa: BLE001 - any decoder/IO error means "try another file"
                name = self.describe(i)
                failures.append(f"{name}: {type(err).__name__}: {err}")
                warned = self.__dict__.setdefault("_warned_read_errors", set())
                if name not in warned:
                    warned.add(name)
                    warnings.warn(f"could not read {name} ({err}); using the next clip", RuntimeWarning,
                                  stacklevel=2)
        raise RuntimeError(
            f"{type(self).__name__}: {len(failures)} consecutive item(s) failed to load starting at "
            f"index {index}:\n  " + "\n  ".join(failures)
        )
