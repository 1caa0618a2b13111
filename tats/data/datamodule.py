"""``VideoDataModule``: picks the dataset from ``--data_path`` and serves train/val loaders (DDP-aware).

``--data_path`` may be a ``.h5``/``.hdf5`` file (release HDF5 layout), a folder of frame folders with
``--image_folder``, or a folder of videos; left out, the built-in moving-digits demo data is
generated on first use into ``$TATS_CACHE/demo`` (default ``~/.cache/tats/demo``).

Batches: ``dict(video=float32 (B, C, T, H, W) in [-0.5, 0.5], label=LongTensor (B,), ...)`` plus
``text=list[str]`` for captioned data and ``path`` / ``index`` identifying each clip.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tats.data.demo import make_demo_data
from tats.data.frame_folder import FrameFolderDataset
from tats.data.hdf5 import HDF5VideoDataset
from tats.data.transforms import clip_span
from tats.data.video_folder import VideoFolderDataset

HDF5_SUFFIXES = (".h5", ".hdf5")
#: The demo data is generated at 16..64 px; other ``--resolution`` values are resized on load.
DEMO_MAX_RESOLUTION = 64


def _add(group: argparse._ArgumentGroup, parser: argparse.ArgumentParser, flag: str, **kwargs) -> None:
    # Several parts of the code base add shared flags (e.g. --resolution); the first one wins.
    if flag not in parser._option_string_actions:
        group.add_argument(flag, **kwargs)


def add_data_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the data flags (names and defaults as the release) to ``parser`` and return it."""
    g = parser.add_argument_group("data")
    _add(g, parser, "--data_path", type=str, default=None,
         help="a .h5/.hdf5 file, a folder with train/ and test/ (videos, or frame folders with "
              "--image_folder); default: the built-in moving-digits demo data")
    _add(g, parser, "--sequence_length", type=int, default=16, help="frames per training clip")
    _add(g, parser, "--resolution", type=int, default=128, help="side of the square frames (pixels)")
    _add(g, parser, "--sample_every_n_frames", type=int, default=1,
         help="temporal stride between a clip's frames (e.g. 4 for Taichi-HD)")
    _add(g, parser, "--image_folder", action="store_true",
         help="--data_path holds folders of frame images (Sky Time-lapse, Taichi-HD)")
    _add(g, parser, "--batch_size", type=int, default=32, help="clips per batch (per device)")
    _add(g, parser, "--num_workers", type=int, default=8, help="DataLoader worker processes")
    _add(g, parser, "--random_flip", action="store_true", help="random horizontal flips in training")
    _add(g, parser, "--demo_train_clips", type=int, default=4000, help="demo data: training clips")
    _add(g, parser, "--demo_test_clips", type=int, default=256, help="demo data: test clips")
    return parser


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


class VideoDataModule(pl.LightningDataModule):
    """Train/val data for every model of the package.

    Args:
        args: an ``argparse.Namespace`` (extra fields are ignored, missing ones take the defaults of
            :func:`add_data_args`).
    """

    def __init__(self, args: argparse.Namespace):
        super().__init__()
        defaults = vars(add_data_args(argparse.ArgumentParser()).parse_args([]))
        self.args = argparse.Namespace(**{k: getattr(args, k, v) for k, v in defaults.items()})
        self.seed = int(getattr(args, "seed", None) or 0)
        self.train_dataset: Dataset | None = None
        self.val_dataset: Dataset | None = None

    # -- dataset construction -------------------------------------------------------------------
    def data_path(self) -> Path:
        """The dataset path; generates the demo data when ``--data_path`` is not given."""
        a = self.args
        if a.data_path:
            return Path(a.data_path).expanduser()
        return make_demo_data(
            n_train=a.demo_train_clips, n_test=a.demo_test_clips,
            sequence_length=max(16, clip_span(a.sequence_length, a.sample_every_n_frames)),
            resolution=min(max(a.resolution, 16), DEMO_MAX_RESOLUTION), progress=True,
        )

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before setup(): generate the demo file once.
        self.data_path()

    def _dataset(self, path: Path, train: bool) -> Dataset:
        a = self.args
        common = dict(train=train, sequence_length=a.sequence_length, resolution=a.resolution,
                      sample_every_n_frames=a.sample_every_n_frames, random_flip=a.random_flip)
        if path.suffix.lower() in HDF5_SUFFIXES:
            return HDF5VideoDataset(path, **common)
        if not path.is_dir():
            raise ValueError(f"--data_path {path}: expected a .h5/.hdf5 file or a folder with train/ and "
                             f"test/ sub-folders")
        if a.image_folder:
            return FrameFolderDataset(path, **common)
        return VideoFolderDataset(path, **common)

    def setup(self, stage: str | None = None) -> None:
        if self.train_dataset is None:
            path = self.data_path()
            self.train_dataset = self._dataset(path, train=True)
            self.val_dataset = self._dataset(path, train=False)

    @property
    def n_classes(self) -> int:
        """Number of class ids (1 for unlabelled data, whose items all have label 0)."""
        self.setup()
        return self.train_dataset.n_classes

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return list(self.train_dataset.classes)

    # -- loaders --------------------------------------------------------------------------------
    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        a = self.args
        sampler = None
        world = 1
        if _distributed():
            world = dist.get_world_size()
            # Our own DistributedSampler: Lightning keeps it (it only injects one when the loader has
            # none) and calls its set_epoch() every epoch, so shuffling differs between epochs.
            # Validation is padded as in the release (up to world - 1 clips repeated): every rank gets
            # ceil(N / world) clips, hence the same number of batches, so no rank waits in a collective
            # (DDP's per-forward buffer broadcast, the epoch-end metric all-reduce) that another never
            # reaches, even when the validation set is smaller than the world.
            sampler = DistributedSampler(dataset, shuffle=train, seed=self.seed, drop_last=False)
        per_rank = math.ceil(len(dataset) / world)
        return DataLoader(
            dataset,
            batch_size=a.batch_size,
            shuffle=train and sampler is None,
            sampler=sampler,
            num_workers=a.num_workers,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=a.num_workers > 0,
            # Full batches in training (batch norm dislikes a last batch of one) when there are enough.
            drop_last=train and per_rank >= a.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.train_dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.val_dataset, train=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()
