"""The release's data formats, selected by the release's flags in its order (its ``VideoData._dataset``):
a ``coinrun`` folder (:mod:`tats.data.coinrun`), ``--vtokens`` with the release's token file,
``--image_folder``, ``--stft_data`` with pickles, ``--smap_cond``, ``--text_cond`` with a descriptions
file, then videos, frame folders and HDF5 files (:func:`tats.data.sources.open_dataset`).
:func:`release_dataset` returns the dataset of the release-only cases, None otherwise (docs/data.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from tats.data.coinrun.dataset import CoinRunDataset, CoinRunOptions, is_coinrun_path
from tats.data.hdf5 import HDF5_SUFFIXES
from tats.data.release_hdf5 import (
    SmapHDF5Dataset,
    TextHDF5Dataset,
    TokenHDF5Dataset,
    caption_lines,
    is_release_token_file,
)
from tats.data.stft_pickles import STFT_VIDEO_RESOLUTION, StftPickleDataset, stft_pickle_split


def add_release_data_args(group: argparse._ArgumentGroup, add) -> None:
    """The release's data flags (names and defaults as its ``VideoData`` and CoinRun datasets).
    ``add(group, flag, **kwargs)`` adds a flag unless the parser already has it."""
    add(group, "--image_channels", type=int, default=3,
        help="CoinRun semantic maps without --use_onehot_smap: channels they are repeated on")
    add(group, "--smap_cond", type=int, nargs="?", const=1, default=0,
        help="semantic maps as a condition: items carry video_smap beside video (CoinRun, or an HDF5 pair "
             "with --data_path2)")
    add(group, "--smap_only", action="store_true", help="CoinRun: the semantic maps are the video")
    add(group, "--data_path2", type=str, default=None,
        help="--smap_cond with HDF5: the file of the other half of each pair (same frames as --data_path)")
    add(group, "--image_channels1", type=int, default=3,
        help="--smap_cond HDF5: channels of --data_path (3: RGB video, else one-hot semantic maps)")
    add(group, "--image_channels2", type=int, default=66, help="the same for --data_path2")
    add(group, "--coinrun_assets", type=str, default=None,
        help="CoinRun sprite folder (the layout of the release's tats/coinrun/assets); "
             "default: <data_path>/assets")
    add(group, "--coinrun_v2_dataloader", action="store_true",
        help="CoinRun: read train.json / test.json (the v2 index with annotations and classes)")
    add(group, "--balanced_sampler", action="store_true",
        help="CoinRun v2: draw training clips class by class (minority characters and events upsampled)")
    add(group, "--max_label", type=int, default=18,
        help="CoinRun semantic labels: 18 for the v1 game, 21 or 22 for v2 (shield with or without its own)")
    add(group, "--use_onehot_smap", action="store_true",
        help="CoinRun semantic maps one-hot (max_label + 1 channels, values 0..1)")
    add(group, "--bbox_smap_for_agent", action="store_true", help="CoinRun: the agent (and shield) as boxes")
    add(group, "--bbox_smap_for_monsters", action="store_true", help="CoinRun: monsters as boxes")
    add(group, "--text_path", type=str, default=None,
        help="CoinRun: JSON of manual descriptions {episode name: [texts]} (others get automatic text)")
    add(group, "--use_manual_annotation_only", action="store_true",
        help="CoinRun: only episodes (v1) or annotations (v2) written by people")
    add(group, "--random_alien", action="store_true",
        help="CoinRun: draw the character from the release's lists (needs their sprites)")
    add(group, "--fixed_start_idx", action="store_true", help="CoinRun: every clip starts at frame 0")
    add(group, "--check_game_length", action="store_true",
        help="CoinRun: drop episodes too short for a clip when the dataset is built")
    add(group, "--get_text_only", action="store_true", help="CoinRun: items carry the text only")
    add(group, "--text_emb_model", type=str, default=None, choices=("clip", "bert"),
        help="text tokens: CLIP BPE (the release's only working choice; 'bert' is refused)")


def _flag(args: Any, name: str, default: Any = None) -> Any:
    return getattr(args, name, default)


def coinrun_dataset(args: Any, path: Path, train: bool) -> CoinRunDataset:
    """The CoinRun dataset the release builds for these flags (a ``coinrun`` folder, docs/data.md)."""
    options = CoinRunOptions.from_args(args)
    if _flag(args, "smap_cond"):
        # release behaviour, kept: --smap_cond wins over --text_cond (no text then), and no transformer of
        # the release reads video_smap: the maps only travel with the batch
        parts = dict(game_frames=True, seg_maps=True)
    elif _flag(args, "text_cond"):
        maps = bool(_flag(args, "smap_only"))
        parts = dict(game_frames=not maps, seg_maps=maps, text=True)
    elif _flag(args, "smap_only"):
        parts = dict(game_frames=False, seg_maps=True)
    else:
        parts = dict(game_frames=True)
    return CoinRunDataset(path, train=train, options=options, **parts)


def has_text_descriptions(path: Path) -> bool:
    """Whether ``path`` is an HDF5 file with the release's ``train_text_description.txt`` beside it."""
    return path.suffix.lower() in HDF5_SUFFIXES and (path.parent / "train_text_description.txt").is_file()


def release_dataset(args: Any, path: Path, train: bool, clips_per_video: int | str | None = None
                    ) -> Dataset | None:
    """The release-format dataset for ``path`` and the flags in ``args``, or None for the other layouts."""
    if _flag(args, "text_emb_model") == "bert":
        raise ValueError("--text_emb_model bert: the release's code never imports its BERT tokenizer; text "
                         "is tokenized with CLIP's BPE (--text_emb_model clip)")
    if is_coinrun_path(path):
        return coinrun_dataset(args, path, train)
    common = dict(train=train, sequence_length=args.sequence_length, clips_per_video=clips_per_video)
    if _flag(args, "vtokens") and is_release_token_file(path):
        return TokenHDF5Dataset(path, resolution=args.resolution,
                                spatial_length=_flag(args, "spatial_length"),
                                sample_every_n_frames=args.sample_every_n_frames, **common)
    if _flag(args, "image_folder"):
        return None
    if _flag(args, "stft_data") and path.is_dir() and stft_pickle_split(path, train) is not None:
        return StftPickleDataset(path, sample_every_n_frames=args.sample_every_n_frames, **common)
    if _flag(args, "smap_cond") and path.is_file():
        channels = (_flag(args, "image_channels1", 3), _flag(args, "image_channels2", 66))
        return SmapHDF5Dataset(path, _flag(args, "data_path2"), resolution=args.resolution, channels=channels,
                               **common)
    if _flag(args, "text_cond") and has_text_descriptions(path):
        return TextHDF5Dataset(path, resolution=args.resolution,
                               sample_every_n_frames=args.sample_every_n_frames, **common)
    return None


def _data_path(args: Any) -> Path | None:
    path = _flag(args, "data_path")
    return Path(path).expanduser() if path else None


def uses_stft_pickles(args: Any) -> bool:
    """``--stft_data`` over the release's pickles (else STFT is computed from the videos' audio)."""
    path = _data_path(args)
    return bool(_flag(args, "stft_data")) and path is not None and path.is_dir() and (
        stft_pickle_split(path, True) is not None)


def text_layout(args: Any) -> str | None:
    """``"coinrun"`` or ``"hdf5"`` when ``--text_cond`` reads one of the release's text layouts, else None
    (captions stored in our own HDF5 files)."""
    path = _data_path(args)
    if path is None:
        return None
    if is_coinrun_path(path):
        return "coinrun"
    return "hdf5" if has_text_descriptions(path) else None


def frames_per_clip(args: Any) -> int:
    """Frames ``T`` of a clip as the dataset of these flags serves it: ``--sequence_length`` frames
    ``--sample_every_n_frames`` apart for CoinRun episodes and frame folders, the window's every n-th
    frame (``ceil(seq / n)``) for video files, HDF5 files and STFT pickles."""
    seq, every = int(args.sequence_length), int(_flag(args, "sample_every_n_frames", 1) or 1)
    if is_coinrun_path(_data_path(args)) or _flag(args, "image_folder"):
        return seq
    return -(-seq // every)


def apply_release_data_defaults(args: Any) -> list[str]:
    """Flags the release's readers fix, set on ``args`` in place; returns notes to print.

    STFT pickles: the release's reader makes 96 x 96 frames whatever ``--resolution`` says (kept).
    """
    notes = []
    path = _data_path(args)
    if (_flag(args, "stft_data") and path is not None and not uses_stft_pickles(args)
            and stft_pickle_split(path / "stft", True) is not None):
        raise ValueError(f"--data_path {path}: the release's drums layout is read from its stft/ folder; "
                         f"pass --data_path {path / 'stft'}")
    if uses_stft_pickles(args) and args.resolution != STFT_VIDEO_RESOLUTION:
        notes.append(f"note: --stft_data reads the release's STFT pickles, whose videos it always makes "
                     f"{STFT_VIDEO_RESOLUTION}x{STFT_VIDEO_RESOLUTION} (as the release): --resolution "
                     f"{args.resolution} -> {STFT_VIDEO_RESOLUTION}")
        args.resolution = STFT_VIDEO_RESOLUTION
    return notes


def dataset_captions(args: Any, train: bool = False, limit: int | None = None) -> list[str]:
    """Captions of the first ``limit`` videos of a text dataset, for text-to-video sampling: MUGEN
    episodes (their manual or automatic description of the whole episode, as the release's
    ``--get_text_only``), the release's text HDF5 (one of each line's descriptions, drawn at random), or
    an HDF5 file with our ``{split}_caption``."""
    path = _data_path(args)
    if path is None or not path.exists():
        raise ValueError(f"--data_path {path}: not found")
    split = "train" if train else "test"
    if is_coinrun_path(path):
        options = CoinRunOptions.from_args(args)
        options.get_text_only = True
        ds = CoinRunDataset(path, train=train, options=options, game_frames=False, text=True)
        return [ds[i]["text"] for i in range(len(ds) if limit is None else min(limit, len(ds)))]
    if has_text_descriptions(path):
        lines = caption_lines(path.parent / f"{split}_text_description.txt")
        rows = [line.rstrip().split("\t") for line in lines[:limit]]
        return [r[int(torch.randint(len(r), (1,)).item())] for r in rows]
    if path.suffix.lower() in HDF5_SUFFIXES:
        import h5py

        with h5py.File(path, "r") as f:
            if f"{split}_caption" in f:
                return list(f[f"{split}_caption"].asstr()[:limit])
    raise ValueError(f"--data_path {path}: no captions (expected a CoinRun folder, an HDF5 file with "
                     f"{split}_text_description.txt beside it, or one with {split}_caption)")
