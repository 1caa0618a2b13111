"""HDF5 layout: writer/reader round trip, clips inside video boundaries, labels, captions, errors."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch

from tats.data.hdf5 import HDF5VideoDataset, HDF5VideoWriter


def _video(n: int, base: int) -> np.ndarray:
    """uint8 (n, 6, 6, 3); frame i has grey level base + i."""
    return (base + np.arange(n, dtype=np.uint8))[:, None, None, None].repeat(6, 1).repeat(6, 2).repeat(3, 3)


def levels(video: torch.Tensor) -> list[int]:
    return ((video + 0.5) * 255).mean(dim=(0, 2, 3)).round().int().tolist()


@pytest.fixture
def h5file(tmp_path):
    path = tmp_path / "d.h5"
    with HDF5VideoWriter(path, (6, 6, 3), chunk_frames=4) as w:
        w.add("train", _video(5, 0), label=2, caption="five frames")
        w.add("train", _video(3, 100), label=0, caption="too short")
        w.add("train", _video(8, 200), label=1, caption="eight frames")
        w.add_batch("test", np.stack([_video(4, 50), _video(4, 150)]), [1, 2], ["t one", "t two"])
    return path


def test_layout_written_like_the_release(h5file):
    with h5py.File(h5file, "r") as f:
        assert f["train_data"].shape == (16, 6, 6, 3) and f["train_data"].dtype == np.uint8
        assert f["train_idx"][:].tolist() == [0, 5, 8]
        assert f["test_idx"][:].tolist() == [0, 4]
        assert f["train_label"][:].tolist() == [2, 0, 1]
        assert f["test_caption"].asstr()[:].tolist() == ["t one", "t two"]


def test_clips_never_cross_video_boundaries(h5file):
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        ds = HDF5VideoDataset(h5file, train=True, sequence_length=4, resolution=4)
    assert len(ds) == 2 and ds.n_classes == 3 and ds.has_captions
    starts = set()
    for _ in range(40):
        a, b = ds[0], ds[1]
        assert a["label"] == 2 and a["text"] == "five frames" and a["video"].shape == (3, 4, 4, 4)
        la, lb = levels(a["video"]), levels(b["video"])
        # the release's randint(0, len - seq): 5 frames -> start 0 only; 8 frames -> 0..3 (never 4)
        assert la == [0, 1, 2, 3]
        assert 200 <= lb[0] <= 203 and np.all(np.diff(lb) == 1)
        starts.add(lb[0] - 200)
    assert starts == {0, 1, 2, 3}
    # a window of 4 frames thinned to every 2nd: T = 4 / 2 = 2 frames
    test = HDF5VideoDataset(h5file, train=False, sequence_length=4, resolution=4, sample_every_n_frames=2)
    assert levels(test[0]["video"]) == [50, 52] and levels(test[1]["video"]) == [150, 152]
    assert test[1]["text"] == "t two" and test[1]["label"] == 2
    every = HDF5VideoDataset(h5file, train=True, sequence_length=4, resolution=4, clips_per_video="all")
    assert len(every) == 1 + 4 and [every[i]["start"] for i in range(5)] == [0, 0, 1, 2, 3]


def test_pickles_without_the_open_handle(h5file):
    ds = HDF5VideoDataset(h5file, train=False, sequence_length=2, resolution=4)
    ds[0]
    clone = pickle.loads(pickle.dumps(ds))  # what DataLoader workers receive
    torch.testing.assert_close(clone[1]["video"], ds[1]["video"])


def test_unlabelled_and_bad_files(tmp_path):
    path = tmp_path / "plain.hdf5"
    with h5py.File(path, "w") as f:  # the release's minimal layout: data + idx only
        f["train_data"] = np.zeros((10, 8, 8, 3), np.uint8)
        f["train_idx"] = np.array([0, 4])
    ds = HDF5VideoDataset(path, train=True, sequence_length=4, resolution=8)
    assert ds.n_classes == 1 and ds[1]["label"] == 0 and "text" not in ds[1]
    with pytest.raises(ValueError, match="test_data"):
        HDF5VideoDataset(path, train=False)
    with pytest.warns(RuntimeWarning, match="skipped 2"), pytest.raises(ValueError, match="at least 7"):
        HDF5VideoDataset(path, train=True, sequence_length=7)
    with pytest.raises(ValueError, match="not found"):
        HDF5VideoDataset(tmp_path / "nope.h5")


def test_random_flip_only_in_training(tmp_path):
    frames = np.zeros((4, 4, 4, 3), np.uint8)
    frames[:, :, 0] = 255  # bright left column: a flip moves it to the right
    path = tmp_path / "flip.h5"
    with HDF5VideoWriter(path, (4, 4, 3)) as w:
        w.add("train", frames)
        w.add("test", frames)
    left = lambda v: bool((v[:, :, :, 0] > 0).all())  # noqa: E731
    train = HDF5VideoDataset(path, train=True, sequence_length=4, resolution=4, random_flip=True)
    seen = {left(train[0]["video"]) for _ in range(30)}
    assert seen == {True, False}
    assert left(HDF5VideoDataset(path, train=True, sequence_length=4, resolution=4)[0]["video"])
    test = HDF5VideoDataset(path, train=False, sequence_length=4, resolution=4, random_flip=True)
    assert all(left(test[0]["video"]) for _ in range(10))
