"""The release's text HDF5, semantic-map HDF5 pairs and token files, on files the tests write. Frame ``j``
of a split holds the value ``j`` (tokens: ``1000 j + 10 y + x``), so every expected clip is worked out from
the release's index rules by hand."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch

from tats.data.datamodule import VideoDataModule, add_data_args
from tats.data.release_hdf5 import SmapHDF5Dataset, TextHDF5Dataset, TokenHDF5Dataset
from tats.data.samplers import BalancedClassSampler
from tests.release_formats import (
    write_smap_hdf5,
    write_text_descriptions,
    write_token_hdf5,
    write_video_hdf5,
)


def test_text_hdf5_videos_alternatives_and_starts(tmp_path):
    # index [0, 10, 17, 29] (3 videos and the end): the release drops the last entry, so videos are
    # 0..10, 10..17 and 17..29 (the last one to the end of the data)
    path = write_video_hdf5(tmp_path / "v.h5", {"train": [10, 7, 12], "test": [9]})
    write_text_descriptions(tmp_path, {"train": [["a red", "a blue"], ["only"], ["x", "y", "z"]],
                                       "test": [["t"]]})
    ds = TextHDF5Dataset(path, train=True, sequence_length=6, resolution=8)
    assert len(ds) == 3
    # video 1 has 7 frames: a start in [0, 7 - 6) = {0}: frames 10..15
    item = ds[1]
    assert item["text"] == "only" and item["video"].shape == (3, 6, 8, 8)
    assert torch.allclose(item["video"][0, :, 0, 0], torch.arange(10, 16) / 255.0 - 0.5)
    # video 2: starts in [0, 12 - 6) = 0..5, first frame 17 + start
    firsts = {round((ds[2]["video"][0, 0, 0, 0].item() + 0.5) * 255) for _ in range(80)}
    assert firsts == set(range(17, 23))
    assert {ds[0]["text"] for _ in range(30)} == {"a red", "a blue"}
    assert {ds[2]["text"] for _ in range(40)} == {"x", "y", "z"}
    # evaluation: the first window
    test = TextHDF5Dataset(path, train=False, sequence_length=6, resolution=8)
    assert len(test) == 1 and test[0]["text"] == "t" and test[0]["video"][0, 0, 0, 0].item() == -0.5


def test_text_hdf5_quirks_and_errors(tmp_path):
    # an index of starts only ([0, 10, 17]): the release's last video runs from 10 to the end (29)
    path = write_video_hdf5(tmp_path / "v.h5", {"train": [10, 7, 12]}, sentinel=False)
    write_text_descriptions(tmp_path, {"train": [["a"], ["b"], ["c"]]})
    ds = TextHDF5Dataset(path, train=True, sequence_length=6, resolution=8)
    assert len(ds) == 2 and int(ds.windows.n_starts[1]) == 19 - 6
    # a video of exactly seq frames has no start in [0, 0): skipped and counted
    short = write_video_hdf5(tmp_path / "s.h5", {"train": [6, 9]})
    with pytest.warns(RuntimeWarning, match="skipped 1 unusable"):
        assert len(TextHDF5Dataset(short, sequence_length=6, resolution=8)) == 1
    (tmp_path / "train_text_description.txt").unlink()
    with pytest.raises(ValueError, match="train_text_description.txt not found"):
        TextHDF5Dataset(path, sequence_length=6, resolution=8)
    write_text_descriptions(tmp_path, {"train": [["a"]]})
    with pytest.raises(ValueError, match="1 lines for 2 videos"):
        TextHDF5Dataset(path, sequence_length=6, resolution=8)
    with pytest.raises(ValueError, match="--sample_every_n_frames 2"):
        TextHDF5Dataset(path, sequence_length=6, resolution=8, sample_every_n_frames=2)


def test_captions_split_at_newlines_only(tmp_path):
    # NEL, a form feed and U+2028 inside captions are text, not line ends (str.splitlines would split
    # there and give video 1 the caption "b" and video 2 the caption "c\u2028d")
    path = write_video_hdf5(tmp_path / "v.h5", {"train": [8, 8, 8]})
    write_text_descriptions(tmp_path, {"train": [["a\x85b"], ["c\x0cd"], ["e\u2028f"]]})
    ds = TextHDF5Dataset(path, train=True, sequence_length=6, resolution=8)
    assert [ds[i]["text"] for i in range(3)] == ["a\x85b", "c\x0cd", "e\u2028f"]
    # Windows line ends are newlines too
    (tmp_path / "train_text_description.txt").write_bytes(b"a\r\nb\r\nc\r\n")
    ds = TextHDF5Dataset(path, train=True, sequence_length=6, resolution=8)
    assert [ds[i]["text"] for i in range(3)] == ["a", "b", "c"]


def test_smap_pairs_every_window_onehot(tmp_path):
    video = write_video_hdf5(tmp_path / "video.h5", {"train": [8, 9]})
    smap = write_smap_hdf5(tmp_path / "smap.h5", {"train": [8, 9]}, n_classes=5)
    ds = SmapHDF5Dataset(video, smap, sequence_length=4, resolution=8, channels=(3, 5))
    # every window between consecutive index entries [0, 8, 17]: 8 - 4 + 1 + 9 - 4 + 1 = 11
    assert len(ds) == 11
    item = ds[6]  # window 1 of video 1: frames 9..12
    assert torch.allclose(item["video"][0, :, 0, 0], torch.arange(9, 13) / 255.0 - 0.5)
    onehot = item["video_smap"]  # (5, T, 8, 8): label j % 5 on the left half, 0 on the right, minus 0.5
    assert onehot.shape == (5, 4, 8, 8)
    for t, j in enumerate(range(9, 13)):
        left = torch.full((5,), -0.5)
        left[j % 5] = 0.5
        assert torch.equal(onehot[:, t, 3, 0], left)
        assert torch.equal(onehot[:, t, 3, 7], torch.tensor([0.5, -0.5, -0.5, -0.5, -0.5]))
    swapped = SmapHDF5Dataset(smap, video, sequence_length=4, resolution=8, channels=(5, 3))[6]
    assert torch.equal(swapped["video_smap"], onehot) and torch.equal(swapped["video"], item["video"])
    with pytest.raises(ValueError, match="one file must be the 3-channel video"):
        SmapHDF5Dataset(video, smap, sequence_length=4, resolution=8, channels=(3, 3))
    too_few = SmapHDF5Dataset(video, smap, sequence_length=4, resolution=8, channels=(3, 4))
    with pytest.warns(RuntimeWarning, match="label 4 does not fit 4 one-hot"):
        # frames 9..12 and the next video's first window 8..11 hold label 4: skipped, the next usable
        # window is video 0's first
        assert too_few[6]["index"] == 0
    with pytest.raises(ValueError, match="needs --data_path2"):
        SmapHDF5Dataset(video, None, sequence_length=4, resolution=8)


def test_token_crops_and_boxes(tmp_path):
    path = write_token_hdf5(tmp_path / "tokens.h5", {"train": [6, 7], "test": [6]}, grid=6)
    ds = TokenHDF5Dataset(path, train=True, sequence_length=4, resolution=6, spatial_length=3,
                          sample_every_n_frames=2)
    assert len(ds) == 2 and ds.latent_shape == (2, 3, 3)
    boxes = set()
    for _ in range(300):
        item = ds[1]  # video 1: latent frames 6..12, starts in [0, 7 - 4) = 0..2
        y0, y1, x0, x1 = item["cbox"].tolist()
        assert y1 - y0 == 3 and x1 - x0 == 3 and 0 <= y0 <= 3 and 0 <= x0 <= 3
        boxes.add((y0, x0))
        j0 = round(item["codes"][0, 0, 0].item() - 10 * y0 - x0) // 1000
        assert 6 <= j0 <= 8
        j, y, x = np.meshgrid([j0, j0 + 2], np.arange(y0, y1), np.arange(x0, x1), indexing="ij")
        assert torch.equal(item["codes"], torch.from_numpy(1000 * j + 10 * y + x))
    assert len(boxes) == 16  # every crop position 0..3 x 0..3
    test = TokenHDF5Dataset(path, train=False, sequence_length=4, resolution=6, spatial_length=3)
    item = test[0]  # evaluation: start 0, the centred crop (6 - 3) // 2 = 1
    assert item["cbox"].tolist() == [1, 4, 1, 4] and item["codes"][0, 0, 0].item() == 11
    with pytest.raises(ValueError, match="--resolution 8: .* 6x6 grids; pass --resolution 6"):
        TokenHDF5Dataset(path, sequence_length=4, resolution=8, spatial_length=3)
    with pytest.raises(ValueError, match="--spatial_length 15 must lie in"):
        TokenHDF5Dataset(path, sequence_length=4, resolution=6)  # the release's default crop of 15


def test_datamodule_picks_the_release_readers(tmp_path):
    video = write_video_hdf5(tmp_path / "v.h5", {"train": [10, 9], "test": [9]})
    write_text_descriptions(tmp_path, {"train": [["a"], ["b"]], "test": [["c"]]})
    args = add_data_args(argparse.ArgumentParser()).parse_args(
        ["--data_path", str(video), "--sequence_length", "4", "--resolution", "8"])
    args.text_cond = True
    dm = VideoDataModule(args)
    dm.setup()
    assert isinstance(dm.train_dataset, TextHDF5Dataset) and dm.n_classes == 0
    args.text_cond, args.smap_cond, args.data_path2 = False, 1, str(video)
    args.image_channels2 = 4
    dm = VideoDataModule(args)
    dm.setup()
    assert isinstance(dm.train_dataset, SmapHDF5Dataset)


def test_balanced_sampler_is_uniform_over_classes():
    # 10 items: class 0 on items 0..7, class 1 on item 8, class 2 on item 9 and item 7; item 3 also
    # has no other class; a draw picks a class (1/3 each), then one of its items
    table = torch.zeros(10, 3, dtype=torch.long)
    table[:8, 0] = 1
    table[8, 1] = 1
    table[[7, 9], 2] = 1
    sampler = BalancedClassSampler(table, num_samples=6000, generator=torch.Generator().manual_seed(0))
    draws = list(sampler)
    assert len(draws) == 6000 and all(table[i, c] == 1 for i, c in draws)
    classes = np.bincount([c for _, c in draws], minlength=3) / 6000
    assert np.allclose(classes, 1 / 3, atol=0.03)
    items = np.bincount([i for i, _ in draws], minlength=10) / 6000
    # item 8 alone carries class 1: 1/3; item 9: half of class 2 = 1/6; items 0..6: 1/8 of class 0 each
    assert abs(items[8] - 1 / 3) < 0.03 and abs(items[9] - 1 / 6) < 0.03 and abs(items[0] - 1 / 24) < 0.015
    with pytest.raises(ValueError, match="no item has any class"):
        BalancedClassSampler(torch.zeros(4, 2))
