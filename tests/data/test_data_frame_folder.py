"""Frame-folder dataset (Sky Time-lapse / Taichi layout): numeric order, strides, skips, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from tats.data.frame_folder import FrameFolderDataset, list_frame_folders


def write_frames(folder, n: int, pattern: str = "frame{}.png", size=(12, 10)):
    """Frame i (named by ``pattern``, unpadded numbers) is uniform grey 10 * i."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size[1], size[0], 3), 10 * i, np.uint8)).save(folder / pattern.format(i))


def levels(video: torch.Tensor) -> list[int]:
    return ((video + 0.5) * 255).mean(dim=(0, 2, 3)).round().int().tolist()


def test_numeric_order_stride_and_nested_folders(tmp_path):
    write_frames(tmp_path / "train" / "vid_a", 12)  # frame0..frame11: lexical order would put 10 after 1
    write_frames(tmp_path / "train" / "sky" / "clip_2", 9, pattern="img_{}.png")  # nested, Sky-style
    write_frames(tmp_path / "test" / "vid_b", 12)
    videos = list_frame_folders(tmp_path / "train")
    assert list(videos) == ["sky/clip_2", "vid_a"]
    assert videos["vid_a"][:4] == ["frame0.png", "frame1.png", "frame2.png", "frame3.png"]
    assert videos["vid_a"][-2:] == ["frame10.png", "frame11.png"]

    # train/ and test/ present: each split reads its own folder; T = sequence_length frames n apart
    test = FrameFolderDataset(tmp_path, train=False, sequence_length=4, resolution=8, sample_every_n_frames=2)
    item = test[0]
    assert item["video"].shape == (3, 4, 8, 8) and item["label"] == 0 and test.n_classes == 1
    assert levels(item["video"]) == [0, 20, 40, 60]  # frames 0, 2, 4, 6

    train = FrameFolderDataset(tmp_path, train=True, sequence_length=4, resolution=8, sample_every_n_frames=2)
    assert len(train) == 2  # both have more than 4 * 2 frames
    starts = set()
    for _ in range(30):
        got = levels(train[1]["video"])  # vid_a: starts 0 .. 12 - 1 - 8 = 3
        assert np.all(np.diff(got) == 20) and got[0] % 10 == 0
        starts.add(got[0] // 10)
        assert levels(train[0]["video"]) == [0, 20, 40, 60]  # clip_2: 9 frames, start 0 only
    assert starts == {0, 1, 2, 3}


def test_short_folders_warn_once_and_empty_raises(tmp_path):
    write_frames(tmp_path / "train" / "long", 8)
    write_frames(tmp_path / "train" / "short1", 3)
    write_frames(tmp_path / "train" / "short2", 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = FrameFolderDataset(tmp_path, train=True, sequence_length=6, resolution=8)
    assert len(ds) == 1
    assert len(caught) == 1 and "skipped 2" in str(caught[0].message) and "short1" in str(caught[0].message)
    (tmp_path / "test").mkdir()
    with pytest.raises(ValueError, match="no usable frame folder under .*test"):
        FrameFolderDataset(tmp_path, train=False, sequence_length=6)


def test_unreadable_frame_moves_to_next_video(tmp_path):
    write_frames(tmp_path / "train" / "a", 5)
    write_frames(tmp_path / "train" / "b", 5)
    (tmp_path / "train" / "a" / "frame2.png").write_bytes(b"corrupt")
    ds = FrameFolderDataset(tmp_path, train=True, sequence_length=4, resolution=8)
    with pytest.warns(RuntimeWarning, match="train/a"):
        assert ds[0]["path"].endswith("b")
