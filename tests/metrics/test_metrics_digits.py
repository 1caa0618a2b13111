"""The demo's digit classifier: it learns the digits of one-digit clips and scores videos by them."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from tats.data.demo import make_demo_data
from tats.metrics.digits import digit_accuracy, load_or_train_digit_classifier, one_digit_frames


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("digits") / "demo.h5", n_train=400, n_test=60,
                          sequence_length=8, resolution=32, progress=False)


def test_one_digit_frames_keep_only_clips_with_one_digit(demo):
    frames, digits = one_digit_frames(demo, "test")
    with h5py.File(demo, "r") as f:
        captions = [c.decode() for c in f["test_caption"][:]]
        labels = f["test_label"][:]
        data = f["test_data"][:].reshape(60, 8, 32, 32, 3)
    one = [i for i, c in enumerate(captions) if c.startswith("the digit")]
    assert 0 < len(one) < 60
    assert frames.shape == (8 * len(one), 1, 32, 32)
    assert digits.tolist() == np.repeat(labels[one] // 2, 8).tolist()
    assert torch.equal(frames[8, 0], torch.from_numpy(data[one[1], 0]).float().mean(-1) / 255.0 - 0.5)


def test_classifier_reads_held_out_digits_and_reloads_from_cache(demo, tmp_path):
    cache = tmp_path / "clf.pt"
    clf = load_or_train_digit_classifier(demo, cache, epochs=6, batch_size=32, every=1, progress=False)
    assert cache.is_file()
    frames, digits = one_digit_frames(demo, "test")
    with torch.no_grad():
        acc = (clf(frames).argmax(1) == digits).float().mean().item()
    assert acc > 0.8, acc  # chance is 0.1
    again = load_or_train_digit_classifier(demo, cache)
    with torch.no_grad():
        assert torch.equal(again(frames), clf(frames))

    videos = frames.view(-1, 8, 1, 32, 32).transpose(1, 2).expand(-1, 3, -1, -1, -1)  # (B, 3, 8, 32, 32)
    clip_digits = digits[::8]
    right = digit_accuracy(clf, videos, clip_digits)
    wrong = digit_accuracy(clf, videos, (clip_digits + 1) % 10)
    assert right["frames"] == pytest.approx(acc)
    assert right["videos"] > 0.8 and wrong["frames"] < 0.1 and wrong["videos"] < 0.1
    blank = digit_accuracy(clf, torch.full((4, 3, 8, 32, 32), -0.5), [0, 1, 2, 3])
    assert blank["frames"] <= 0.25  # one fixed guess for every blank frame: right for at most one video
