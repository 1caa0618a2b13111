"""The release's AudioSet-Drums layout: precomputed STFT pickles with their mp4 twins (``--stft_data``,
the release's ``StftDataset``), ``DRUMS/stft/{train,test}/<name>.pickle`` beside
``DRUMS/video/{train,test}/<name>.mp4``, read with ``--data_path DRUMS/stft``.

Items are ``video`` (96 x 96 frames, as the release's reader always makes them) and ``stft``
``(1, seq, 64, 16)``; docs/data.md has the rules and the quirks kept. Pickles are code: they are read by
:func:`tats.io.checkpoint.load_plain_pickle`, which refuses anything but numpy arrays and plain
containers, naming the file, before it runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tats.data import decode
from tats.data.base import ClipDataset, warn_skipped
from tats.data.clip_index import load_clip_index
from tats.data.transforms import clip_length, preprocess_clip
from tats.io.checkpoint import load_plain_pickle

#: Frames of every AudioSet-Drums clip the release loads (its ``load_vid_len``).
CLIP_FRAMES = 90
#: The release's reader makes 96 x 96 frames whatever the command line says.
STFT_VIDEO_RESOLUTION = 96
#: STFT rows per frame are resized to this (frequency, time) grid.
STFT_SIZE = (64, 16)


def video_twin(pickle_path: str | os.PathLike) -> Path:
    """The mp4 of a pickle: every ``stft`` folder of its path becomes ``video``, ``.pickle`` -> ``.mp4``."""
    parts = ["video" if part == "stft" else part for part in Path(pickle_path).parts[:-1]]
    return Path(*parts, Path(pickle_path).with_suffix(".mp4").name)


def stft_pickle_split(root: str | os.PathLike, train: bool) -> Path | None:
    """``root/{train,test}`` if it holds ``*.pickle`` files (the release's STFT layout), else None."""
    split = Path(root) / ("train" if train else "test")
    return split if split.is_dir() and any(split.glob("*.pickle")) else None


def stft_rows(array: np.ndarray, start: int, length: int, where: str = "") -> torch.Tensor:
    """Rows ``start .. start + length`` of a ``(frames, F, W)`` STFT array -> ``(1, length, 64, 16)``
    in [-1, 1]: ``2 x - 1``, then each frame's ``F x W`` bilinearly resized to 64 x 16."""
    array = np.asarray(array)
    if array.ndim != 3 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{where}: expected a numeric (frames, F, W) STFT array, got {array.dtype} "
                         f"{array.shape}")
    if array.shape[0] < start + length:
        raise ValueError(f"{where}: {array.shape[0]} STFT rows, the clip needs rows "
                         f"{start}..{start + length - 1}")
    rows = torch.from_numpy(array[start : start + length].astype(np.float32)) * 2 - 1  # (seq, F, W)
    return F.interpolate(rows[None], size=STFT_SIZE, mode="bilinear", align_corners=False)  # (1, seq, 64, 16)


class StftPickleDataset(ClipDataset):
    """AudioSet-Drums STFT pickles and their videos (see the module docstring and docs/data.md).

    Items: ``dict(video=(3, T, 96, 96) in [-0.5, 0.5], stft=(1, seq, 64, 16) in [-1, 1], path=str,
    start=int)``; ``T = ceil(seq / sample_every_n_frames)``.
    """

    n_classes = 0
    classes: list[str] = []

    def __init__(self, root: str | os.PathLike, train: bool = True, sequence_length: int = 16,
                 sample_every_n_frames: int = 1, resolution: int = STFT_VIDEO_RESOLUTION,
                 clips_per_video: int | str | None = None) -> None:
        super().__init__(train, sequence_length, resolution, sample_every_n_frames, False, "first",
                         clips_per_video)
        if sequence_length > CLIP_FRAMES:
            raise ValueError(f"--sequence_length {sequence_length}: the release's drums clips have "
                             f"{CLIP_FRAMES} frames")
        self.root = Path(root)
        split = stft_pickle_split(root, train)
        if split is None:
            raise ValueError(f"--stft_data: no *.pickle under {self.root / ('train' if train else 'test')}; "
                             "the release's layout is DRUMS/stft/{train,test}/*.pickle with the videos in "
                             "DRUMS/video/{train,test}/*.mp4 (--data_path DRUMS/stft). For videos with sound "
                             "and no pickles, pass the video folder: STFT is then computed from the audio")
        self.split_dir = split
        self.clip_length = clip_length(sequence_length, sample_every_n_frames)
        pickles = sorted(split.glob("*.pickle"))
        skipped: list[tuple[str, str]] = []
        twins = {}
        for p in pickles:
            mp4 = video_twin(p)
            if mp4.is_file():
                twins[p] = mp4
            else:
                skipped.append((p.name, f"no video {mp4}"))
        by_folder: dict[Path, list[Path]] = {}
        for p, mp4 in twins.items():
            by_folder.setdefault(mp4.parent, []).append(p)
        self.items: list[tuple[Path, Path]] = []
        for folder, group in by_folder.items():
            entries, _ = load_clip_index(folder, [twins[p].name for p in group], progress=False)
            for p in group:
                entry = entries[twins[p].name]
                if entry.get("error"):
                    skipped.append((p.name, f"{twins[p].name}: {entry['error']}"))
                elif entry["n_frames"] < CLIP_FRAMES:
                    skipped.append((p.name, f"{twins[p].name} has {entry['n_frames']} frames, the release's "
                                            f"clips have {CLIP_FRAMES}"))
                else:
                    self.items.append((p, twins[p]))
        self.items.sort()
        warn_skipped("STFT pickles", str(split), skipped)
        if not self.items:
            raise ValueError(f"--data_path {self.root}: no usable STFT pickle with its {CLIP_FRAMES}-frame "
                             f"mp4 in {split} ({len(pickles)} pickle(s), {len(skipped)} unusable)")
        self._build_index([CLIP_FRAMES] * len(self.items))

    def n_starts(self, n_frames: int) -> int:
        return n_frames - self.sequence_length + 1  # int(random() * (90 - seq + 1))

    def describe(self, index: int) -> str:
        return str(self.items[self.windows.locate(index)[0]][0])

    def _load(self, index: int) -> dict[str, Any]:
        video, start = self._locate(index)
        pickle_path, mp4 = self.items[video]
        stft = stft_rows(load_plain_pickle(pickle_path), start, self.sequence_length, str(pickle_path))
        frames = decode.decode_clip(mp4, start, self.clip_length, self.sample_every_n_frames)
        return dict(video=preprocess_clip(frames, self.resolution), stft=stft, path=str(mp4), start=start)
