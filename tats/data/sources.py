"""Video sources by path: open a dataset, or read uint8 clip batches from a dataset, a ``.npy`` array or
a folder of video files (what FVD and the evaluation scripts read).

:func:`open_dataset` picks the dataset class of a path (HDF5 file, frame folders, video folders) for
the datamodule and for :func:`iter_video_batches`, which also draws which clips a set uses
(:func:`pick_clips`: the release's seeded random draw, or the first clips).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tats.data.coinrun.dataset import CoinRunDataset, CoinRunOptions, is_coinrun_path
from tats.data.demo import make_demo_data
from tats.data.frame_folder import FrameFolderDataset
from tats.data.hdf5 import HDF5_SUFFIXES, HDF5VideoDataset
from tats.data.transforms import sequence_length_for
from tats.data.video_folder import VideoFolderDataset
from tats.io.video import read_video, to_uint8

VIDEO_SUFFIXES = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".gif", ".m4v")


def describe_source(spec: str) -> str:
    """``"npy"``, ``"dataset"`` (.h5/.hdf5, a folder with train/ and test/, or ``demo``) or ``"videos"``."""
    p = Path(spec).expanduser()
    if spec == "demo" or p.suffix.lower() in HDF5_SUFFIXES or is_coinrun_path(p):
        return "dataset"
    if p.suffix.lower() == ".npy":
        return "npy"
    if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir():
        return "dataset"
    if p.is_dir():
        return "videos"
    raise ValueError(
        f"{spec}: expected a .npy of uint8 (N, T, H, W, C), a folder of videos, a dataset "
        "(.h5/.hdf5 file or a folder with train/ and test/), or 'demo'"
    )


SELECTIONS = ("random", "first")


def pick_clips(n_available: int, n: int | None, selection: str = "random", seed: int = 0,
               exclude: np.ndarray | None = None) -> np.ndarray:
    """Indices of the clips a set uses: ``n`` of ``n_available`` (all when ``n`` is None or larger).

    ``"random"``: a seeded draw without replacement, as the release took its real clips from a
    shuffled loader, returned in increasing order (reading order; FVD ignores order). ``"first"``: the
    first ``n``; on a dataset sorted by path that is the alphabetically first videos (classes), a
    biased set kept only for comparisons. ``exclude``: indices the set must not use (a second set
    disjoint from a first, e.g. the reference of a real-vs-real FVD).
    """
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if exclude is not None:
        pool = np.setdiff1d(np.arange(n_available), exclude)
        return pool[pick_clips(len(pool), n, selection, seed)]
    if n is None or n >= n_available:
        return np.arange(n_available)
    if selection == "first":
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n_available, size=n, replace=False))


def iter_video_batches(
    spec: str,
    n_frames: int = 16,
    max_videos: int | None = None,
    batch_size: int = 16,
    resolution: int = 128,
    sample_every_n_frames: int = 1,
    split: str = "train",
    image_folder: bool = False,
    selection: str = "random",
    seed: int = 0,
    clips_per_video: int | str | None = None,
    uint8: str = "truncate",
    info: dict | None = None,
    exclude_draw: tuple[int, int] | None = None,
    frame_stride: int = 1,
) -> Iterable[np.ndarray]:
    """Yield uint8 ``(b, T, H, W, C)`` batches of at most ``max_videos`` clips of ``n_frames`` frames.

    ``spec`` (see :func:`describe_source`): a ``.npy`` array (memory-mapped; clips cut to the first
    ``n_frames``), a folder of videos (first ``n_frames`` of each; shorter ones are skipped), or a
    dataset read through :mod:`tats.data` at ``resolution`` with the training preprocessing (``split``
    "train" or "test"; ``demo`` = the built-in moving digits). A dataset's clips are its items with
    ``clips_per_video`` (None: the release's, every window of a video folder, one random window per
    HDF5 video or frame folder), ``n_frames`` frames each at stride ``sample_every_n_frames``.

    Which clips: :func:`pick_clips` (``selection``, ``seed``); random starts inside a dataset are
    seeded by ``seed`` too, so a set is reproducible. Dataset clips become uint8 by the ``uint8`` rule
    of :func:`tats.io.video.to_uint8` (``"truncate"``, protocol ``tats``, or ``"round"``). ``info`` (a
    dict) receives ``available`` (the clips to choose from) and ``used``.

    ``exclude_draw=(n, seed)`` (a ``.npy`` or a dataset): leave out the clips of the random draw of ``n``
    with that seed, so that this set and that one share no clip. ``frame_stride`` (a ``.npy`` or a folder
    of videos): every ``frame_stride``-th of the first ``n_frames * frame_stride`` frames (a dataset thins
    with ``sample_every_n_frames``).
    """
    # frame folders need no train/ and test/ (the release's layout): a folder with --image_folder is a dataset
    kind = "dataset" if image_folder and Path(spec).expanduser().is_dir() else describe_source(spec)
    info = {} if info is None else info
    span = n_frames * frame_stride  # frames a clip covers
    if kind == "dataset" and frame_stride != 1:
        raise ValueError(f"{spec}: a dataset thins frames with sample_every_n_frames, not frame_stride")
    if kind == "npy":
        arr = np.load(Path(spec).expanduser(), mmap_mode="r")
        if arr.dtype != np.uint8 or arr.ndim != 5 or arr.shape[1] < span:
            raise ValueError(f"{spec}: expected uint8 (N, T >= {span}, H, W, C), got {arr.dtype} {arr.shape}")
        rows = pick_clips(len(arr), max_videos, selection, seed, _excluded(len(arr), exclude_draw))
        info.update(available=len(arr), used=len(rows))
        for i in range(0, len(rows), batch_size):  # copies out of the memmap
            yield np.stack([arr[j, :span:frame_stride] for j in rows[i : i + batch_size]])
        return
    if kind == "videos":
        if exclude_draw is not None:
            raise ValueError(f"{spec}: a folder of videos cannot exclude another draw; use a dataset or .npy")
        files = sorted(f for f in Path(spec).expanduser().rglob("*") if f.suffix.lower() in VIDEO_SUFFIXES)
        if not files:
            raise ValueError(f"{spec}: no video files ({', '.join(VIDEO_SUFFIXES)}) found")
        order = range(len(files))
        if selection == "random":
            order = np.random.default_rng(seed).permutation(len(files))
        limit = max_videos if max_videos is not None else len(files)
        batch: list[np.ndarray] = []
        used = 0
        for k in order:  # random order: the first `limit` long enough files form a uniform draw
            frames = read_video(files[k])
            if len(frames) < span:
                continue
            if batch and frames.shape[1:] != batch[0].shape[1:]:  # frame size changed: flush
                yield np.stack(batch)
                batch = []
            batch.append(frames[:span:frame_stride])
            used += 1
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
            if used >= limit:
                break
        if batch:
            yield np.stack(batch)
        if used == 0:
            raise ValueError(f"{spec}: no video has at least {span} frames")
        info.update(available=len(files), used=used)
        return
    # CoinRun episodes, like frame folders, give clips of sequence_length frames n apart
    seq = sequence_length_for(n_frames, sample_every_n_frames, image_folder or is_coinrun_path(spec))
    from_demo = spec == "demo"
    path = make_demo_data(sequence_length=max(16, seq)) if from_demo else Path(spec).expanduser()
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    dataset = open_dataset(path, image_folder, train=split == "train", sequence_length=seq,
                           resolution=resolution, sample_every_n_frames=sample_every_n_frames,
                           clips_per_video=clips_per_video)
    rows = pick_clips(len(dataset), max_videos, selection, seed, _excluded(len(dataset), exclude_draw))
    info.update(available=len(dataset), used=len(rows))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the random starts of one-clip-per-video datasets
        for i in range(0, len(rows), batch_size):
            clips = torch.stack([dataset[int(j)]["video"] for j in rows[i : i + batch_size]])  # (b,C,T,H,W)
            yield to_uint8(clips, uint8)


def _excluded(n_available: int, draw: tuple[int, int] | None) -> np.ndarray | None:
    """The indices of the random draw ``(n, seed)`` (None: nothing excluded)."""
    return None if draw is None else pick_clips(n_available, draw[0], "random", draw[1])


def count_clips(spec: str, n_frames: int = 16, resolution: int = 128, sample_every_n_frames: int = 1,
                split: str = "train", image_folder: bool = False, clips_per_video: int | str | None = None,
                flag: str = "--data_path") -> int:
    """How many clips of ``n_frames`` frames :func:`iter_video_batches` chooses from in a ``.npy`` or a
    dataset (the same arguments); an error naming ``flag`` when its clips are shorter than ``n_frames``."""
    kind = "dataset" if image_folder and Path(spec).expanduser().is_dir() else describe_source(spec)
    if kind == "npy":
        arr = np.load(Path(spec).expanduser(), mmap_mode="r")
        if arr.ndim != 5 or arr.shape[1] < n_frames:
            raise ValueError(f"{flag} {spec}: clips of {arr.shape[1] if arr.ndim == 5 else '?'} frames "
                             f"(shape {arr.shape}), shorter than the {n_frames} frames asked")
        return len(arr)
    if kind != "dataset":
        raise ValueError(f"{flag} {spec}: expected a dataset (.h5/.hdf5, a folder with train/ and test/, "
                         f"frame folders with --image_folder, or 'demo') or a .npy of uint8 (N, T, H, W, C)")
    seq = sequence_length_for(n_frames, sample_every_n_frames, image_folder or is_coinrun_path(spec))
    path = make_demo_data(sequence_length=max(16, seq)) if spec == "demo" else Path(spec).expanduser()
    try:
        dataset = open_dataset(path, image_folder, train=split == "train", sequence_length=seq,
                               resolution=resolution, sample_every_n_frames=sample_every_n_frames,
                               clips_per_video=clips_per_video)
    except (ValueError, RuntimeError) as err:
        raise ValueError(f"{flag} {spec}: no {split} clips of {seq} frames ({n_frames} at stride "
                         f"{sample_every_n_frames}): {err}") from None
    return len(dataset)


def open_dataset(path: Path, image_folder: bool = False, **kwargs: Any) -> Dataset:
    """The dataset at ``path``: :class:`HDF5VideoDataset` for a ``.h5``/``.hdf5`` file, else a folder of
    frame folders (``image_folder``: :class:`FrameFolderDataset`) or of videos
    (:class:`VideoFolderDataset`); a folder whose path contains ``coinrun`` holds MUGEN episodes
    (:class:`tats.data.coinrun.dataset.CoinRunDataset` with its default settings and sprites in
    ``<path>/assets``). ``kwargs``: the dataset's arguments (``train``, ``resolution``, ...)."""
    if kwargs.get("frame_rate") is not None and (image_folder or not path.is_dir() or is_coinrun_path(path)):
        # as in the fork that has the flag: only its video-file reader resamples
        warnings.warn(f"--frame_rate applies to folders of video files; --data_path {path} holds frames "
                      "without a frame rate, so it is ignored (thin them with --sample_every_n_frames)",
                      UserWarning, stacklevel=2)
        kwargs["frame_rate"] = None
    kwargs = {k: v for k, v in kwargs.items() if not (k == "frame_rate" and v is None)}
    if is_coinrun_path(path):
        options = CoinRunOptions(sequence_length=kwargs["sequence_length"], resolution=kwargs["resolution"],
                                 sample_every_n_frames=kwargs.get("sample_every_n_frames", 1))
        return CoinRunDataset(path, train=kwargs.get("train", True), options=options)
    if path.suffix.lower() in HDF5_SUFFIXES:
        return HDF5VideoDataset(path, **kwargs)
    if not path.is_dir():
        raise ValueError(f"--data_path {path}: expected a .h5/.hdf5 file or a folder (train/ and test/ "
                         f"sub-folders of videos, or frame folders with --image_folder)")
    if image_folder:
        return FrameFolderDataset(path, **kwargs)
    return VideoFolderDataset(path, **kwargs)
