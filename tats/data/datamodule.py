"""``VideoDataModule``: picks the dataset from ``--data_path`` and serves train/val loaders (DDP-aware).

The dataset is an HDF5 file, frame folders (``--image_folder``), a folder of videos, the demo data
when ``--data_path`` is left out, or one of the release's own formats chosen by its flags first
(:mod:`tats.data.release`). Both loaders shuffle, as the release's did; validation reuses one seeded
order so that ``--limit_val_batches`` always sees the same random subset. Batches:
``dict(video=float32 (B, C, T, H, W) in [-0.5, 0.5], label=LongTensor (B,), ...)`` plus ``text`` for
captioned data and ``path`` / ``index`` identifying each clip (docs/data.md).
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tats.data.demo import make_demo_data
from tats.data.release import add_release_data_args, release_dataset
from tats.data.samplers import BalancedClassSampler
from tats.data.sources import open_dataset
from tats.data.windows import parse_clips_per_video

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
    _add(g, parser, "--sequence_length", type=int, default=16,
         help="frames of a clip's window: video files and HDF5 keep every n-th of them (T = seq / n), "
              "frame folders take seq frames n apart (T = seq), as the release")
    _add(g, parser, "--resolution", type=int, default=128, help="side of the square frames (pixels)")
    _add(g, parser, "--sample_every_n_frames", type=int, default=1,
         help="temporal stride between a clip's frames (e.g. 4 for Taichi-HD)")
    _add(g, parser, "--frame_rate", type=float, default=None,
         help="video files: resample each to this many frames per second before taking clips (as "
              "torchvision's VideoClips does; default: the file's own rate)")
    _add(g, parser, "--image_folder", action="store_true",
         help="--data_path holds folders of frame images (Sky Time-lapse, Taichi-HD); with train/ and "
              "test/ each split reads its own, else all of --data_path serves both (the release)")
    _add(g, parser, "--clips_per_video", type=parse_clips_per_video, default=None,
         help="'all': every window of every video is an item; N: N random windows per video per epoch. "
              "Default: the release's, 'all' for video folders, 1 for HDF5 and frame folders")
    _add(g, parser, "--batch_size", type=int, default=32, help="clips per batch (per device)")
    _add(g, parser, "--num_workers", type=int, default=8, help="DataLoader worker processes")
    _add(g, parser, "--random_flip", action="store_true", help="random horizontal flips in training")
    _add(g, parser, "--demo_train_clips", type=int, default=4000, help="demo data: training clips")
    _add(g, parser, "--demo_test_clips", type=int, default=256, help="demo data: test clips")
    release = parser.add_argument_group("the release's data formats (MUGEN/CoinRun, semantic maps, "
                                        "text HDF5, STFT pickles, tokens)")
    add_release_data_args(release, lambda group, flag, **kwargs: _add(group, parser, flag, **kwargs))
    return parser


class ValidationSampler(DistributedSampler):
    """Validation sharding: one fixed order, padded so that every rank gets the same number of items.

    With ``seed`` the items come in one seeded random order (the same at every call): the release
    shuffled its validation loader, and a fixed order keeps validations of different steps comparable.
    Under DDP the order is padded as the release's ``DistributedSampler`` padded it: ``ceil(N / world)``
    items per rank, the first items of the order repeated (up to ``world - 1`` clips count twice). Every
    rank then runs the same number of validation batches, so none waits in a collective (DDP's buffer
    broadcast before each forward, the epoch-end metric all-reduce) that another never reaches, even
    with fewer validation clips than ranks. Rank ``r`` gets positions ``r, r + world, ...`` of the order;
    one process gets every item once.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None,
                 seed: int | None = None):
        # (DistributedSampler: num_samples = ceil(N / world), total_size = num_samples * world)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.order_seed = seed

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.order_seed is None:
            order = list(range(n))
        else:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.order_seed)).tolist()
        padded = (order * math.ceil(self.total_size / max(n, 1)))[: self.total_size]
        return iter(padded[self.rank :: self.num_replicas])


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
        # the release's formats are also chosen by flags of other groups (--text_cond, --vtokens, ...)
        self.format_args = argparse.Namespace(**{**vars(args), **vars(self.args)})
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
            sequence_length=max(16, a.sequence_length),
            resolution=min(max(a.resolution, 16), DEMO_MAX_RESOLUTION), progress=True,
        )

    def prepare_data(self) -> None:
        # Lightning runs this on one process per node before setup(): generate the demo file once.
        self.data_path()

    def dataset(self, train: bool, clips_per_video: int | str | None = None) -> Dataset:
        """The dataset of a split; ``clips_per_video`` overrides ``--clips_per_video`` (None: the flag)."""
        return self._dataset(self.data_path(), train, clips_per_video)

    def _dataset(self, path: Path, train: bool, clips_per_video: int | str | None = None) -> Dataset:
        a = self.args
        per_video = a.clips_per_video if clips_per_video is None else clips_per_video
        release = release_dataset(self.format_args, path, train, per_video)
        if release is not None:
            return release
        common = dict(train=train, sequence_length=a.sequence_length, resolution=a.resolution,
                      sample_every_n_frames=a.sample_every_n_frames, random_flip=a.random_flip,
                      clips_per_video=a.clips_per_video if clips_per_video is None else clips_per_video)
        if getattr(a, "frame_rate", None) is not None:
            common["frame_rate"] = a.frame_rate
        return open_dataset(path, a.image_folder, **common)

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
        world, rank = 1, 0
        if _distributed():
            world, rank = dist.get_world_size(), dist.get_rank()
            # Our own DistributedSampler: Lightning keeps it (it only injects one when the loader has
            # none) and calls its set_epoch() every epoch, so shuffling differs between epochs.
            if train:
                sampler = DistributedSampler(dataset, shuffle=True, seed=self.seed, drop_last=False)
        if not train:  # padded under DDP: the same number of batches on every rank (ValidationSampler)
            sampler = ValidationSampler(dataset, num_replicas=world, rank=rank, seed=self.seed)
        elif a.balanced_sampler:
            classes = getattr(dataset, "classes_for_sampling", None)
            if classes is None:
                raise ValueError("--balanced_sampler needs a CoinRun folder read with "
                                 "--coinrun_v2_dataloader")
            if sampler is None:
                sampler = BalancedClassSampler(classes)
            else:  # as the release: under DDP the distributed sampler wins
                warnings.warn("--balanced_sampler is ignored under DDP (each rank takes its "
                              "DistributedSampler share, as the release did)", stacklevel=2)
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
