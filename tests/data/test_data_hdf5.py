"""HDF5 layout: writer/reader round trip, clips inside video boundaries, labels, captions, errors."""

from __future__ import annotations

import pickle
import warnings

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
    with pytest.warns(UserWarning, match="train_idx holds video starts only"):
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


def test_index_of_starts_only_keeps_every_video_and_warns_once(tmp_path):
    # three videos of 6, 5 and 7 frames; frame j of a split has grey level j. Written with h5py, not our
    # writer: a starts-only index [0, 6, 11] (VideoGPT's BAIR layout) and starts plus end [0, 6, 11, 18]
    frames = np.arange(18, dtype=np.uint8)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)
    starts_only, with_end = tmp_path / "starts.h5", tmp_path / "with_end.h5"
    for path, idx in ((starts_only, [0, 6, 11]), (with_end, [0, 6, 11, 18])):
        with h5py.File(path, "w") as f:
            for split in ("train", "test"):
                f[f"{split}_data"], f[f"{split}_idx"], f[f"{split}_label"] = frames, idx, [0, 1, 2]

    def first_frames(ds):
        return [levels(ds[i]["video"])[0] for i in range(len(ds))]

    # our rule: every entry starts a video, the last runs to the end: 0..6, 6..11, 11..18 (the release's
    # HDF5Dataset drops the last entry: 0..6 and 6..18, two videos)
    with pytest.warns(UserWarning, match=r"starts\.h5: train_idx holds video starts only.*release"):
        train = HDF5VideoDataset(starts_only, train=True, sequence_length=5, resolution=4)
    assert len(train) == 3 and [train[i]["label"] for i in range(3)] == [0, 1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per file: not again, nor for its other split
        test = HDF5VideoDataset(starts_only, train=False, sequence_length=5, resolution=4)
        assert first_frames(test) == [0, 6, 11]
        # a last entry equal to the frame count is the end, as the release reads it: the same 3 videos
        end = HDF5VideoDataset(with_end, train=False, sequence_length=5, resolution=4)
        assert first_frames(end) == [0, 6, 11]
        # files our writer made hold starts only by design (attrs["tats_idx"]): read without a warning
        ours = tmp_path / "ours.h5"
        with HDF5VideoWriter(ours, (4, 4, 3)) as w:
            for a, b in ((0, 6), (6, 11), (11, 18)):
                w.add("test", frames[a:b])
        written = HDF5VideoDataset(ours, train=False, sequence_length=5, resolution=4)
        assert first_frames(written) == [0, 6, 11]
