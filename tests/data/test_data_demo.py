"""Moving-digits demo data: determinism, layout, captions agree with labels and with the motion."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest

from tats.data.demo import label_names, make_demo_data

SMALL = dict(n_train=24, n_test=6, sequence_length=8, resolution=32, progress=False)
ONE = re.compile(r"^the digit (\d) is moving (left and right|up and down)$")
TWO = re.compile(r"^digit (\d) is moving (left and right|up and down) and digit (\d) is moving "
                 r"(left and right|up and down)$")
MOTIONS = ["left and right", "up and down"]


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("demo") / "a.h5", seed=3, **SMALL)


def test_deterministic_byte_identical(demo_file, tmp_path):
    again = make_demo_data(tmp_path / "b.h5", seed=3, **SMALL)
    other = make_demo_data(tmp_path / "c.h5", seed=4, **SMALL)
    with h5py.File(demo_file, "r") as f, h5py.File(again, "r") as g, h5py.File(other, "r") as h:
        for key in ("train_data", "train_idx", "train_label", "test_data", "test_label"):
            np.testing.assert_array_equal(f[key][:], g[key][:])
        assert f["train_caption"].asstr()[:].tolist() == g["train_caption"].asstr()[:].tolist()
        assert not np.array_equal(f["train_data"][:], h["train_data"][:])


def test_layout_labels_and_captions(demo_file):
    with h5py.File(demo_file, "r") as f:
        assert f["train_data"].shape == (24 * 8, 32, 32, 3) and f["train_data"].dtype == np.uint8
        assert f["train_idx"][:].tolist() == list(range(0, 24 * 8, 8))
        assert f["test_data"].shape == (6 * 8, 32, 32, 3)
        params = json.loads(f.attrs["tats_demo"])
        assert params["resolution"] == 32 and params["seed"] == 3
        names = json.loads(f.attrs["label_names"])
        assert names == label_names() and len(names) == 20 and names[7] == "digit 3 moving up and down"
        captions = f["train_caption"].asstr()[:].tolist() + f["test_caption"].asstr()[:].tolist()
        labels = f["train_label"][:].tolist() + f["test_label"][:].tolist()
    n_two = 0
    for caption, label in zip(captions, labels):
        m = ONE.match(caption) or TWO.match(caption)
        assert m, caption
        n_two += m.re is TWO
        assert label == int(m.group(1)) * 2 + MOTIONS.index(m.group(2))  # first digit's (digit, motion)
    assert 0 < n_two < len(captions)  # both kinds present


def test_single_digits_move_along_the_captioned_axis(demo_file):
    with h5py.File(demo_file, "r") as f:
        clips = f["train_data"][:].reshape(24, 8, 32, 32, 3)[..., 0].astype(float)
        captions = f["train_caption"].asstr()[:].tolist()
    ys, xs = np.arange(32)[:, None], np.arange(32)[None, :]
    checked = 0
    for clip, caption in zip(clips, captions):
        m = ONE.match(caption)
        if not m:
            continue
        mass = clip.sum(axis=(1, 2))
        assert (mass > 0).all()  # the digit is visible in every frame
        cy = (clip * ys).sum(axis=(1, 2)) / mass
        cx = (clip * xs).sum(axis=(1, 2)) / mass
        moving, still = (cx, cy) if m.group(2) == "left and right" else (cy, cx)
        assert np.ptp(still) < 1e-6 and np.ptp(moving) > 3
        checked += 1
    assert checked >= 3


def test_reuse_and_regenerate(demo_file, tmp_path):
    mtime = demo_file.stat().st_mtime_ns
    assert make_demo_data(demo_file, seed=3, **SMALL) == demo_file
    assert demo_file.stat().st_mtime_ns == mtime  # same parameters: not regenerated
    path = make_demo_data(tmp_path / "x.h5", seed=0, **SMALL)
    make_demo_data(path, seed=0, **{**SMALL, "n_test": 2})  # same path, new parameters: rewritten
    with h5py.File(path, "r") as f:
        assert f["test_idx"].shape == (2,)
    with pytest.raises(ValueError, match="unknown motion"):
        make_demo_data(tmp_path / "y.h5", motions=("sideways",), **SMALL)


def test_default_path_under_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    path = make_demo_data(n_train=2, n_test=1, sequence_length=4, resolution=16, progress=False)
    assert path.parent == tmp_path / "cache" / "demo" and path.suffix == ".h5"
