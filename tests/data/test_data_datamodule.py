"""VideoDataModule: flags, dataset choice from the path, batch layout, demo default, DDP samplers."""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DistributedSampler

from tats.data.datamodule import ValidationSampler, VideoDataModule, add_data_args
from tats.data.frame_folder import FrameFolderDataset
from tats.data.hdf5 import HDF5VideoDataset


def _args(**overrides) -> argparse.Namespace:
    args = add_data_args(argparse.ArgumentParser()).parse_args([])
    args.num_workers, args.batch_size = 0, 4
    args.demo_train_clips, args.demo_test_clips = 10, 3
    vars(args).update(overrides)
    return args


def test_flags_defaults_and_shared_flags():
    args = add_data_args(argparse.ArgumentParser()).parse_args([])
    assert (args.data_path, args.sequence_length, args.resolution, args.sample_every_n_frames) == (
        None, 16, 128, 1)
    assert args.image_folder is False and args.random_flip is False
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=64)  # e.g. added by a model's flags first
    args = add_data_args(parser).parse_args(["--image_folder", "--sample_every_n_frames", "4"])
    assert args.resolution == 64 and args.image_folder and args.sample_every_n_frames == 4


def test_demo_default_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path))
    # A Namespace with more fields than ours (as the training scripts pass) and a missing one.
    args = _args(sequence_length=8, resolution=32, gpus=1, n_codes=16)
    del args.random_flip
    dm = VideoDataModule(args)
    dm.prepare_data()
    assert list((tmp_path / "demo").glob("*.h5"))
    assert dm.n_classes == 20 and dm.class_names[3] == "digit 1 moving up and down"
    assert isinstance(dm.train_dataset, HDF5VideoDataset)
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (4, 3, 8, 32, 32) and batch["video"].dtype == torch.float32
    assert batch["video"].min() >= -0.5 and batch["video"].max() <= 0.5 and batch["video"].max() > 0.2
    assert batch["label"].dtype == torch.long and batch["label"].shape == (4,)
    assert isinstance(batch["text"], list) and len(batch["text"]) == 4 and "digit" in batch["text"][0]
    assert len(dm.train_dataloader()) == 2  # 10 clips, batch 4, last partial batch dropped
    val = list(dm.val_dataloader())
    assert sum(len(b["label"]) for b in val) == 3  # evaluation keeps every clip
    v1, v2 = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    torch.testing.assert_close(v1["video"], v2["video"])  # deterministic evaluation clips


def test_upsampled_demo_and_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path))
    dm = VideoDataModule(_args(sequence_length=4, resolution=80, num_workers=1, batch_size=2))
    loader = dm.val_dataloader()
    assert loader.persistent_workers
    batch = next(iter(loader))  # demo frames are 64 px at most; the dataset upsamples to 80
    assert batch["video"].shape == (2, 3, 4, 80, 80)


def test_frame_folders_and_bad_path(tmp_path):
    for split in ("train", "test"):
        for v in range(2):
            folder = tmp_path / "sky" / split / f"v{v}"
            folder.mkdir(parents=True)
            for i in range(6):  # a clip of 5 frames needs more than 5
                Image.fromarray(np.full((10, 14, 3), 20 * i, np.uint8)).save(folder / f"{i}.jpg")
    dm = VideoDataModule(_args(data_path=str(tmp_path / "sky"), image_folder=True, sequence_length=5,
                               resolution=8, batch_size=2))
    dm.setup("fit")
    assert isinstance(dm.train_dataset, FrameFolderDataset) and dm.n_classes == 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["video"].shape == (2, 3, 5, 8, 8) and batch["label"].tolist() == [0, 0]
    with pytest.raises(ValueError, match="nothing.txt: expected a .h5/.hdf5 file or a folder"):
        VideoDataModule(_args(data_path=str(tmp_path / "nothing.txt"))).setup()


@pytest.mark.parametrize("n_clips, world", [(3, 4), (9, 4), (1, 8)])
def test_every_rank_gets_the_same_number_of_validation_batches(n_clips, world, monkeypatch):
    """Under DDP a rank with fewer validation batches than another (none at all when the set is smaller
    than the world) leaves the others waiting in a collective: the split is padded to ceil(N / world)
    clips per rank, and together the ranks still see every clip."""
    import tats.data.datamodule as datamodule

    dm = VideoDataModule(_args(batch_size=2))
    clips = [dict(video=torch.full((3, 2, 4, 4), float(i))) for i in range(n_clips)]  # clip i holds i
    dm.train_dataset = dm.val_dataset = clips
    monkeypatch.setattr(datamodule, "_distributed", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda group=None: world)
    per_rank = math.ceil(n_clips / world)
    seen = []
    for rank in range(world):
        monkeypatch.setattr(dist, "get_rank", lambda group=None, r=rank: r)
        batches = list(dm.val_dataloader())
        assert len(batches) == math.ceil(per_rank / 2)
        ids = [int(v) for b in batches for v in b["video"][:, 0, 0, 0, 0]]
        assert len(ids) == per_rank
        seen += ids
    assert set(seen) == set(range(n_clips))


def test_validation_sampler_pads_one_fixed_order():
    data = list(range(10))
    # ceil(10 / 3) = 4 positions per rank; the order's first 2 items fill the last 2 (padding)
    shards = [list(ValidationSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert shards == [[0, 3, 6, 9], [1, 4, 7, 0], [2, 5, 8, 1]]
    assert [len(ValidationSampler(data, num_replicas=3, rank=r)) for r in range(3)] == [4, 4, 4]
    assert list(ValidationSampler(data, num_replicas=1, rank=0)) == data  # one process: each item once
    # a seeded order: shuffled like the release's validation loader, the same at every validation
    shards = [list(ValidationSampler(data, num_replicas=3, rank=r, seed=5)) for r in range(3)]
    order = [shards[r % 3][r // 3] for r in range(12)]  # the padded order, position by position
    assert sorted(order[:10]) == data and order[:10] != data and order[10:] == order[:2]
    assert shards[0] == list(ValidationSampler(data, num_replicas=3, rank=0, seed=5))


def test_validation_order_is_a_fixed_random_subset(tmp_path, monkeypatch):
    """With --limit_val_batches, validation must see a random subset of the test clips (all classes), not
    the first videos in path order."""
    monkeypatch.setenv("TATS_CACHE", str(tmp_path))
    dm = VideoDataModule(_args(sequence_length=4, resolution=16, demo_test_clips=40, batch_size=8, seed=3))
    dm.setup()
    first = next(iter(dm.val_dataloader()))["index"].tolist()
    assert first == next(iter(dm.val_dataloader()))["index"].tolist()  # the same at every validation
    assert first != list(range(8)) and len(set(first)) == 8 and max(first) >= 8
    every = [i for b in dm.val_dataloader() for i in b["index"].tolist()]
    assert sorted(every) == list(range(40))
    args = add_data_args(argparse.ArgumentParser()).parse_args(["--clips_per_video", "all"])
    assert args.clips_per_video == "all"
    dm = VideoDataModule(_args(sequence_length=4, resolution=16, clips_per_video=3))
    dm.setup()
    assert len(dm.train_dataset) == 3 * 10 and len(dm.val_dataset) == 3 * 3


def test_samplers_under_torch_distributed(tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        dm = VideoDataModule(_args(sequence_length=4, resolution=16))
        train, val = dm.train_dataloader(), dm.val_dataloader()
        assert type(train.sampler) is DistributedSampler and train.sampler.shuffle
        assert isinstance(val.sampler, ValidationSampler) and len(val.sampler) == len(dm.val_dataset)
        train.sampler.set_epoch(0)
        first = list(train.sampler)
        train.sampler.set_epoch(1)
        assert sorted(first) == sorted(train.sampler) and first != list(train.sampler)
    finally:
        dist.destroy_process_group()
