"""The release's AudioSet-Drums layout: STFT pickles with their mp4 twins, read with the numpy-only
unpickler. The pickles hold row ``t`` = ``t / 100`` and frame ``t`` of the videos is grey ``2 t``, so the
expected features and pixels follow from the release's rules by hand."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tats.data.stft_pickles import StftPickleDataset, stft_pickle_split, video_twin
from tats.io.checkpoint import load_plain_pickle
from tests.release_formats import write_stft_drums


@pytest.fixture(scope="module")
def drums(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("AudioSet_Drums")
    stft = write_stft_drums(root, {"train": ["a", "b"], "test": ["c"]}, size=16)
    write_stft_drums(root, {"train": ["short"]}, n_frames=40, size=16)  # under the 90-frame clip
    (stft / "train" / "lonely.pickle").write_bytes((stft / "train" / "a.pickle").read_bytes())  # no mp4
    return stft


def test_twin_rule():
    assert video_twin("/d/AudioSet_Drums/stft/train/x.pickle") == Path("/d/AudioSet_Drums/video/train/x.mp4")


def test_items_follow_the_release(drums):
    with pytest.warns(RuntimeWarning, match="skipped 2 unusable") as caught:
        ds = StftPickleDataset(drums, train=True, sequence_length=8, sample_every_n_frames=2)
    message = str(caught[0].message)
    assert "lonely.pickle: no video" in message and "short.pickle: short.mp4 has 40 frames" in message
    assert len(ds) == 2 and stft_pickle_split(drums, True) is not None
    starts = set()
    for _ in range(80):
        item = ds[1]
        start = item["start"]
        starts.add(start)
        # rows start..start+7 of t / 100, scaled 2x - 1; a constant row stays constant when resized
        stft = item["stft"]
        assert stft.shape == (1, 8, 64, 16)
        expected = (2 * (start + torch.arange(8)) / 100.0 - 1).view(1, 8, 1, 1).expand(1, 8, 64, 16)
        assert torch.allclose(stft, expected, atol=1e-6)
    assert min(starts) >= 0 and max(starts) <= 90 - 8 and len(starts) > 30  # int(random() * (90 - 8 + 1))
    video = item["video"]  # frames start, start + 2, ..: grey 2 t, made 96 x 96 (the release's fixed size)
    assert video.shape == (3, 4, 96, 96) and item["path"].endswith("video/train/b.mp4")
    grey = (2 * (item["start"] + 2 * torch.arange(4))).float() / 255 - 0.5
    assert torch.allclose(video.mean(dim=(0, 2, 3)), grey, atol=2.5 / 255)
    test = StftPickleDataset(drums, train=False, sequence_length=8)
    assert test[0]["start"] == 0 and torch.allclose(test[0]["stft"][0, :, 0, 0], torch.arange(8) / 50.0 - 1)


def test_missing_pickles_name_the_layout(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match=r"no \*.pickle under .*train.*DRUMS/stft/\{train,test\}"):
        StftPickleDataset(tmp_path, sequence_length=8)


class _Payload:
    """Unpickling this runs ``open(sentinel, "w")``: the file appears if the payload ever runs."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def test_code_in_a_pickle_is_refused_and_never_runs(drums, tmp_path):
    sentinel = tmp_path / "payload_ran"
    evil = drums / "train" / "evil.pickle"
    os.link(video_twin(drums / "train" / "a.pickle"), video_twin(evil))  # a real mp4 twin
    with open(evil, "wb") as f:
        pickle.dump({"stft": np.zeros((90, 2, 2)), "x": _Payload(sentinel)}, f)
    try:
        with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle .*evil.pickle: global "
                                                          "'io.open'"):
            load_plain_pickle(evil)
        with pytest.warns(RuntimeWarning):
            ds = StftPickleDataset(drums, train=True, sequence_length=8)
        index = [i for i, (p, _) in enumerate(ds.items) if p.name == "evil.pickle"][0]
        with pytest.warns(RuntimeWarning, match=r"could not read .*evil.pickle \(refusing to unpickle"):
            item = ds[index]  # skipped, as an unreadable clip: the next pickle's item instead
        assert not item["path"].endswith("evil.mp4")
        assert not sentinel.exists()
    finally:
        evil.unlink()
        video_twin(evil).unlink()
    # plain containers and numpy arrays of every pickle protocol load
    for protocol in (2, 4, 5):
        path = tmp_path / f"ok{protocol}.pickle"
        with open(path, "wb") as f:
            data = {"rows": np.arange(6.0).reshape(2, 3), "meta": [1, "a", (2.5,)]}
            pickle.dump(data, f, protocol=protocol)
        obj = load_plain_pickle(path)
        assert np.array_equal(obj["rows"], np.arange(6.0).reshape(2, 3)) and obj["meta"] == [1, "a", (2.5,)]
