"""The release's other HDF5 layouts (``tats/data.py``): captions beside the file (``--text_cond``,
:class:`TextHDF5Dataset`), semantic-map pairs (``--smap_cond``, :class:`SmapHDF5Dataset`) and
precomputed video tokens (``--vtokens``, :class:`TokenHDF5Dataset`).

Video boundaries and clips follow the release's readers: the text and token readers drop the last
entry of ``{split}_idx`` and draw one start per video in ``[0, len - seq)``; the semantic-map reader
serves every window between consecutive index entries. docs/data.md has the layouts and the quirks
kept; videos too short for a clip are skipped with one warning that counts them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from tats.data.base import ClipDataset, warn_skipped
from tats.data.hdf5 import HDF5Handle
from tats.data.transforms import preprocess_clip, resized_size
from tats.data.windows import ALL, ClipsPerVideo

#: Token crop side when --spatial_length is not given (the release's default).
RELEASE_SPATIAL_LENGTH = 15


def release_video_bounds(idx: np.ndarray, n_frames: int) -> np.ndarray:
    """``(V, 2)`` start / end of the videos of a release index read as the release reads it: the last
    entry dropped, each video ending at the next start and the last at ``n_frames``."""
    starts = np.asarray(idx, dtype=np.int64).reshape(-1)[:-1]
    ends = np.append(starts[1:], n_frames)
    return np.stack([starts, ends], axis=1)


def _open_layout(path: Path, prefix: str, what: str) -> tuple[int, np.ndarray, tuple, np.dtype]:
    """``(n_frames, idx, frame shape, dtype)`` of ``{prefix}_data`` / ``{prefix}_idx``, or a clear error."""
    if not path.is_file():
        raise ValueError(f"--data_path {path}: HDF5 file not found")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in (f"{prefix}_data", f"{prefix}_idx") if k not in f]
            if missing:
                raise ValueError(f"{path}: missing {missing}; the release's {what} layout has {prefix}_data "
                                 f"and {prefix}_idx (video starts)")
            data = f[f"{prefix}_data"]
            return int(data.shape[0]), np.asarray(f[f"{prefix}_idx"][:], np.int64), data.shape[1:], data.dtype
    except OSError as err:
        raise ValueError(f"--data_path {path}: not a readable HDF5 file ({err})") from None


def caption_lines(path: Path) -> list[str]:
    """The lines of a caption file as the release reads them: split at newlines (``\\n``, ``\\r\\n``,
    ``\\r``) only. ``str.splitlines`` would also split at NEL, form feeds and the Unicode line separators
    inside a caption and shift every later video's captions by one."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


class TextHDF5Dataset(HDF5Handle, ClipDataset):
    """Release text HDF5 (docs/data.md). Items: ``dict(video=(C, T, H, W) in [-0.5, 0.5],
    text=str, index=int)``; the transformer tokenizes ``text`` to ``--text_seq_len`` CLIP BPE ids."""

    n_classes = 0
    classes: list[str] = []

    def __init__(self, path: str | os.PathLike, train: bool = True, sequence_length: int = 16,
                 resolution: int = 128, sample_every_n_frames: int = 1,
                 clips_per_video: ClipsPerVideo | None = None) -> None:
        if sample_every_n_frames != 1:
            # the release's text reader passes no frame stride: refuse rather than ignore the flag
            raise ValueError(f"--sample_every_n_frames {sample_every_n_frames}: the release's text HDF5 "
                             "layout reads consecutive frames; use 1")
        super().__init__(train, sequence_length, resolution, 1, False, "first", clips_per_video)
        self.path = Path(path)
        self.prefix = "train" if train else "test"
        n_frames, idx, shape, dtype = _open_layout(self.path, self.prefix, "text")
        if dtype != np.uint8 or len(shape) != 3:
            raise ValueError(f"{self.path}: {self.prefix}_data must be uint8 (N, H, W, C), got {dtype} "
                             f"(N, {', '.join(map(str, shape))})")
        self.text_file = self.path.parent / f"{self.prefix}_text_description.txt"
        if not self.text_file.is_file():
            raise ValueError(f"--text_cond: {self.text_file} not found; the release's text HDF5 layout keeps "
                             f"one line of tab-separated descriptions per video beside {self.path.name}")
        lines = [line.rstrip() for line in caption_lines(self.text_file)]
        bounds = release_video_bounds(idx, n_frames)
        if len(lines) < len(bounds):
            raise ValueError(f"{self.text_file}: {len(lines)} lines for {len(bounds)} videos of {self.path} "
                             "(one line of descriptions per video)")
        lengths = bounds[:, 1] - bounds[:, 0]
        usable = lengths > sequence_length
        warn_skipped("text HDF5 videos", f"{self.path}:{self.prefix}",
                     [(f"video {i}", f"{lengths[i]} frames, the release draws a start in [0, len - "
                       f"{sequence_length}), so it needs more than {sequence_length}")
                      for i in np.flatnonzero(~usable)])
        self.videos = np.flatnonzero(usable)
        if not len(self.videos):
            raise ValueError(f"{self.path}: no {self.prefix} video has more than {sequence_length} frames")
        self.bounds, self.lines = bounds, lines
        self._build_index([int(n) for n in lengths[self.videos]])

    def n_starts(self, n_frames: int) -> int:
        return n_frames - self.sequence_length  # randint(0, len - seq): the last window never

    def describe(self, index: int) -> str:
        return f"{self.path} ({self.prefix} video {int(self.videos[self.windows.locate(index)[0]])})"

    def _load(self, index: int) -> dict[str, Any]:
        position, offset = self._locate(index)
        video = int(self.videos[position])
        start = int(self.bounds[video][0]) + offset
        frames = self._h5()[f"{self.prefix}_data"][start : start + self.sequence_length]
        choices = self.lines[video].split("\t")
        text = choices[int(torch.randint(len(choices), (1,)).item())]
        return dict(video=preprocess_clip(frames, self.resolution), text=text, index=video, start=offset)


def onehot_clip(frames: np.ndarray, n_classes: int, resolution: int, where: str = "") -> torch.Tensor:
    """Label frames ``(T, H, W)`` (or ``(T, H, W, 3)``: the first channel) -> one-hot float
    ``(n_classes, T, R, R)`` resized like video (shorter side bilinear, centre crop) and shifted by -0.5,
    as the release's preprocessing of semantic maps."""
    labels = torch.as_tensor(np.asarray(frames))
    if labels.ndim == 4:
        labels = labels[..., 0]
    if labels.ndim != 3:
        raise ValueError(f"{where}: semantic maps must be (T, H, W) labels, got {tuple(labels.shape)}")
    if labels.numel() and int(labels.max()) >= n_classes:
        raise ValueError(f"{where}: label {int(labels.max())} does not fit {n_classes} one-hot channels "
                         "(--image_channels1 / --image_channels2)")
    x = F.one_hot(labels.long(), n_classes).permute(0, 3, 1, 2).float()  # (T, C, H, W)
    h, w = x.shape[-2:]
    target = resized_size(h, w, resolution)
    if target != (h, w):
        x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - resolution) // 2, (w - resolution) // 2
    x = x[:, :, top : top + resolution, left : left + resolution]
    return x.permute(1, 0, 2, 3).contiguous() - 0.5  # (C, T, R, R)


class SmapHDF5Dataset(ClipDataset):
    """Release semantic-map pairs (docs/data.md): every window of both files.

    Items: ``video`` (the 3-channel file, ``(3, T, R, R)``) and ``video_smap`` (the other, one-hot
    ``(C, T, R, R)``), both in [-0.5, 0.5], plus ``index``.
    """

    default_clips_per_video = ALL
    n_classes = 0
    classes: list[str] = []

    def __init__(self, path: str | os.PathLike, path2: str | os.PathLike | None, train: bool = True,
                 sequence_length: int = 16, resolution: int = 128, channels: tuple[int, int] = (3, 66),
                 clips_per_video: ClipsPerVideo | None = None) -> None:
        super().__init__(train, sequence_length, resolution, 1, False, "first", clips_per_video)
        if path2 is None:
            raise ValueError("--smap_cond with an HDF5 file needs --data_path2: the file of the other half "
                             "of each pair (semantic maps or video)")
        self.paths = (Path(path), Path(path2))
        self.channels = tuple(int(c) for c in channels)
        self.keys = tuple("video" if c == 3 else "video_smap" for c in self.channels)
        if self.keys[0] == self.keys[1]:
            raise ValueError(f"--image_channels1 {channels[0]} / --image_channels2 {channels[1]}: one file "
                             "must be the 3-channel video and the other the semantic maps")
        self.prefix = "train" if train else "test"
        n1, idx, _, _ = _open_layout(self.paths[0], self.prefix, "semantic-map")
        n2, _, _, _ = _open_layout(self.paths[1], self.prefix, "semantic-map")
        if n2 < n1:
            raise ValueError(f"--data_path2 {self.paths[1]}: {n2} {self.prefix} frames, fewer than the {n1} "
                             f"of --data_path {self.paths[0]} (the two files hold the same frames)")
        bounds = np.stack([idx[:-1], idx[1:]], axis=1)
        lengths = bounds[:, 1] - bounds[:, 0]
        usable = lengths >= sequence_length
        warn_skipped("semantic-map HDF5 videos", f"{self.paths[0]}:{self.prefix}",
                     [(f"video {i}", f"{lengths[i]} frames, a clip needs {sequence_length}")
                      for i in np.flatnonzero(~usable)])
        self.videos, self.bounds = np.flatnonzero(usable), bounds
        if not len(self.videos):
            raise ValueError(f"{self.paths[0]}: no {self.prefix} video has {sequence_length} frames")
        self._files: dict[int, tuple] = {}
        self._build_index([int(n) for n in lengths[self.videos]])

    def n_starts(self, n_frames: int) -> int:
        return n_frames - self.sequence_length + 1

    def describe(self, index: int) -> str:
        video = int(self.videos[self.windows.locate(index)[0]])
        return f"{self.paths[0]} + {self.paths[1]} ({self.prefix} video {video})"

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def _load(self, index: int) -> dict[str, Any]:
        handles = self._files.get(os.getpid())
        if handles is None:
            handles = self._files[os.getpid()] = tuple(h5py.File(p, "r") for p in self.paths)
        position, offset = self._locate(index)
        video = int(self.videos[position])
        start = int(self.bounds[video][0]) + offset
        item: dict[str, Any] = {"index": video, "start": offset}
        for f, p, c, key in zip(handles, self.paths, self.channels, self.keys):
            frames = f[f"{self.prefix}_data"][start : start + self.sequence_length]
            if c == 3:
                item[key] = preprocess_clip(frames, self.resolution)
            else:
                item[key] = onehot_clip(frames, c, self.resolution, f"{p} frames {start}..")
        return item


def is_release_token_file(path: str | os.PathLike) -> bool:
    """A ``.h5`` with the release's token layout (integer ``train_data`` ``(N, h, w)``, ``train_idx``) and
    without our codes-file marker."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        with h5py.File(path, "r") as f:
            data = f.get("train_data")
            return ("format" not in f.attrs and "train_idx" in f and data is not None and data.ndim == 3
                    and np.issubdtype(data.dtype, np.integer) and data.dtype != np.uint8)
    except OSError:
        return False


class TokenHDF5Dataset(HDF5Handle, ClipDataset):
    """Release video tokens (``--vtokens``): one item per video, ``--sequence_length`` latent frames
    (every ``--sample_every_n_frames``-th kept) cropped to ``--spatial_length`` squares.

    ``resolution`` is the token grid's side (the release's ``--resolution`` in this mode) and must match
    the file. The crop is drawn uniformly in training (``randint(0, res - sl + 1)`` on each axis) and
    centred in evaluation; ``spatial_length == resolution`` keeps the whole grid.

    Items: ``dict(codes=LongTensor (T, sl, sl), cbox=LongTensor [y0, y1, x0, x1], index=int)``.
    """

    n_classes = 0
    classes: list[str] = []

    def __init__(self, path: str | os.PathLike, train: bool = True, sequence_length: int = 4,
                 resolution: int = 16, spatial_length: int | None = None, sample_every_n_frames: int = 1,
                 clips_per_video: ClipsPerVideo | None = None) -> None:
        super().__init__(train, sequence_length, resolution, sample_every_n_frames, False, "first",
                         clips_per_video)
        self.path = Path(path)
        self.prefix = "train" if train else "test"
        n_frames, idx, shape, dtype = _open_layout(self.path, self.prefix, "token")
        if len(shape) != 2 or not np.issubdtype(dtype, np.integer):
            raise ValueError(f"{self.path}: {self.prefix}_data must be integer tokens (N, h, w), got {dtype} "
                             f"(N, {', '.join(map(str, shape))})")
        if tuple(shape) != (resolution, resolution):
            raise ValueError(f"--resolution {resolution}: with --vtokens it is the token grid's side, and "
                             f"{self.path} holds {shape[0]}x{shape[1]} grids; pass --resolution {shape[0]}")
        self.spatial_length = RELEASE_SPATIAL_LENGTH if spatial_length is None else int(spatial_length)
        if not 1 <= self.spatial_length <= resolution:
            raise ValueError(f"--spatial_length {self.spatial_length} must lie in [1, {resolution}] (the "
                             "token grid's side)")
        self.clip_frames = len(range(0, sequence_length, sample_every_n_frames))
        bounds = release_video_bounds(idx, n_frames)
        lengths = bounds[:, 1] - bounds[:, 0]
        # the release replaced a video of <= seq latent frames by a random other one; here it is skipped
        usable = lengths > sequence_length
        warn_skipped("token HDF5 videos", f"{self.path}:{self.prefix}",
                     [(f"video {i}", f"{lengths[i]} latent frames, a clip needs more than {sequence_length}")
                      for i in np.flatnonzero(~usable)])
        self.videos, self.bounds = np.flatnonzero(usable), bounds
        if not len(self.videos):
            raise ValueError(f"{self.path}: no {self.prefix} video has more than {sequence_length} latent "
                             "frames")
        self._build_index([int(n) for n in lengths[self.videos]])

    def n_starts(self, n_frames: int) -> int:
        return n_frames - self.sequence_length

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.clip_frames, self.spatial_length, self.spatial_length

    def describe(self, index: int) -> str:
        return f"{self.path} ({self.prefix} video {int(self.videos[self.windows.locate(index)[0]])})"

    def _load(self, index: int) -> dict[str, Any]:
        position, offset = self._locate(index)
        video = int(self.videos[position])
        start = int(self.bounds[video][0]) + offset
        res, side = self.resolution, self.spatial_length
        if self.train:
            y0 = int(torch.randint(0, res - side + 1, (1,)).item())
            x0 = int(torch.randint(0, res - side + 1, (1,)).item())
        else:
            y0 = x0 = (res - side) // 2
        tokens = self._h5()[f"{self.prefix}_data"][start : start + self.sequence_length,
                                                    y0 : y0 + side, x0 : x0 + side]
        codes = torch.from_numpy(np.asarray(tokens, dtype=np.int64))[:: self.sample_every_n_frames]
        return dict(codes=codes, cbox=torch.tensor([y0, y0 + side, x0, x0 + side]), index=video, start=offset)
