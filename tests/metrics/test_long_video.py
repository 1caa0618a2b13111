"""Quality over time (tats.metrics.long_video): window positions, per-position FVD/KVD and digit accuracy
over draws, the real-vs-real reference, and the errors for inputs that cannot give a full result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tats.data.demo import make_demo_data
from tats.metrics.fvd import frechet_distance, polynomial_mmd
from tats.metrics.long_video import (
    WindowFeatures,
    measure_over_time,
    quality_over_time,
    window_positions,
    write_csv,
)


def test_default_positions_are_the_papers_that_fit_plus_the_last_window():
    assert window_positions(1024) == [0, 16, 32, 64, 128, 256, 512, 768, 1008]
    assert window_positions(256) == [0, 16, 32, 64, 128, 240]
    assert window_positions(40, window=16) == [0, 16, 24]
    assert window_positions(16) == [0]
    assert window_positions(100, positions=[50, 0, 50, 84]) == [0, 50, 84]


@pytest.mark.parametrize("length, positions, match", [
    (256, [0, 241], r"--positions \[241\].*\[0, 240\] on videos of 256 frames"),
    (256, [-1], r"--positions \[-1\]"),
    (8, None, "videos of 8 frames are shorter than one 16-frame window"),
])
def test_positions_past_the_video_are_errors(length, positions, match):
    with pytest.raises(ValueError, match=match):
        window_positions(length, 16, positions)


def test_fvd_per_position_follows_the_rule():
    """Generated features = real features + a position's offset c: equal covariances, so FVD = |c|^2."""
    rng = np.random.default_rng(0)
    real = [rng.normal(size=(300, 8)) for _ in range(2)]
    reference = [rng.normal(size=(300, 8)) for _ in range(2)]
    offsets = {0: 0.0, 16: 0.5, 48: 2.0}
    fake = [{p: r + c for p, c in offsets.items()} for r in real]  # per draw
    out = quality_over_time(fake, real, reference, "tats")
    assert [row["position"] for row in out["rows"]] == [0, 16, 48]
    for row, c in zip(out["rows"], offsets.values()):
        expected = 8 * c**2  # |c * ones(8)|^2
        assert row["fvd"]["mean"] == pytest.approx(expected, abs=1e-6 * max(expected, 1))
        assert row["fvd"]["std"] == pytest.approx(0, abs=1e-6)
        assert row["kvd"]["values"] == pytest.approx([polynomial_mmd(r, f[row["position"]])
                                                      for f, r in zip(fake, real)])
    rvr = out["real_vs_real"]["fvd"]
    values = [frechet_distance(r, q) for r, q in zip(real, reference)]
    assert rvr["values"] == pytest.approx(values)
    assert rvr["mean"] == pytest.approx(np.mean(values)) and rvr["std"] == pytest.approx(np.std(values))
    assert (rvr["min"], rvr["max"]) == (pytest.approx(min(values)), pytest.approx(max(values)))


def test_csv_has_a_row_per_position(tmp_path):
    rng = np.random.default_rng(1)
    real = [rng.normal(size=(50, 4))]
    out = quality_over_time([{0: real[0] + 1, 16: real[0]}], real, [rng.normal(size=(50, 4))],
                            digits=[{0: 0.5, 16: 0.25}])
    lines = write_csv(out, tmp_path / "q.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 3 and header[0] == "position"
    row = dict(zip(header, lines[2].split(",")))
    assert row["position"] == "16" and float(row["digits_mean"]) == 0.25
    assert float(row["fvd_mean"]) == pytest.approx(out["rows"][1]["fvd"]["mean"])


class _MeanColour(torch.nn.Module):
    """Stand-in for I3D whose features are the clip's mean colour per frame third (deterministic)."""

    weights_sha256 = None

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, 224, 224) -> (B, 9)
        parts = x.chunk(3, dim=2)
        return torch.cat([p.mean(dim=(2, 3, 4)) for p in parts], dim=1) * self.scale


class _Brightness(torch.nn.Module):
    """Stand-in digit classifier: a bright frame reads 3, a dark one 5."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (N, 1, R, R) in [-0.5, 0.5]
        bright = frames.mean(dim=(1, 2, 3)) > -0.3
        logits = torch.zeros(len(frames), 10)
        logits[bright, 3] = logits[~bright, 5] = 1.0
        return logits


def test_window_digit_accuracy_is_the_share_of_frames_read_as_the_digit():
    videos = np.zeros((2, 32, 16, 16, 3), np.uint8)
    videos[:, :20] = 200  # frames 0..19 bright (read 3), 20..31 dark (read 5)
    wf = WindowFeatures(_MeanColour(), "tats", [0, 8, 16], window=16, digit_classifier=_Brightness(),
                        progress=False)
    wf.update(videos, np.array([3, 3]))
    assert wf.digit_accuracy() == {0: 1.0, 8: 12 / 16, 16: 4 / 16}
    assert {p: f.shape for p, f in wf.features().items()} == {0: (2, 9), 8: (2, 9), 16: (2, 9)}


def test_fvd_at_a_subset_of_positions_digits_at_all():
    videos = np.zeros((2, 32, 16, 16, 3), np.uint8)
    videos[:, :20] = 200
    wf = WindowFeatures(_MeanColour(), "tats", [0, 8, 16], window=16, digit_classifier=_Brightness(),
                        progress=False, fvd_positions=[0, 16])
    wf.update(videos, np.array([3, 3]))
    feats, digits = wf.features(), wf.digit_accuracy()
    assert sorted(feats) == [0, 16] and digits == {0: 1.0, 8: 12 / 16, 16: 4 / 16}
    rng = np.random.default_rng(0)
    real, reference = [rng.normal(size=(40, 9))], [rng.normal(size=(40, 9))]
    fake = [{p: f + 1 for p, f in feats.items()}]
    rows = quality_over_time(fake, real, reference, "tats", [digits])["rows"]
    assert [("fvd" in r, r["digits"]["mean"]) for r in rows] == [(True, 1.0), (False, 0.75), (True, 0.25)]
    with pytest.raises(ValueError, match=r"FVD positions \[4\] must be among the positions \[0, 8\]"):
        WindowFeatures(None, "tats", [0, 8], fvd_positions=[4], progress=False)


@pytest.fixture
def demo_file(tmp_path):
    return make_demo_data(tmp_path / "digits.h5", n_train=40, n_test=4, sequence_length=16, resolution=16,
                          progress=False)


def _long_videos(n: int, length: int, seed: int) -> np.ndarray:
    """Videos whose second half is noise: quality falls at the later windows."""
    rng = np.random.default_rng(seed)
    v = np.full((n, length, 16, 16, 3), 20, np.uint8)
    v[:, length // 2 :] = rng.integers(0, 256, size=(n, length - length // 2, 16, 16, 3), dtype=np.uint8)
    return v


def test_measure_over_time_end_to_end(demo_file):
    """Two draws against the demo's training windows: the noisy half scores worse, the reference is
    drawn apart from the real set, and the mean over draws is that of the draws."""
    positions, n = [0, 48], 6

    def draw(k):
        yield _long_videos(4, 64, k), None
        yield _long_videos(2, 64, 10 + k), None

    out = measure_over_time([draw(0), draw(1)], _MeanColour(), str(demo_file), positions, n, n_real=12,
                            resolution=16, cache=None, progress=False)
    first, last = out["rows"]
    assert last["fvd"]["mean"] > 10 * first["fvd"]["mean"]
    assert len(first["fvd"]["values"]) == 2 and first["fvd"]["mean"] == pytest.approx(
        np.mean(first["fvd"]["values"]))
    assert out["real"]["seeds"] == [0, 1] and out["real_available"] == 40 and out["n_real"] == 12
    assert out["real_vs_real"]["fvd"]["mean"] > 0  # two disjoint real sets differ


def test_too_few_real_windows_is_an_error_naming_the_numbers(demo_file):
    sampled = []

    def draw():
        sampled.append(1)  # must never run: the real set is checked first
        yield _long_videos(2, 32, 0), None

    with pytest.raises(ValueError, match=r"--n_real 39: .* need 41; --data_path .* has 40 windows"):
        measure_over_time([draw()], _MeanColour(), str(demo_file), [0], n_videos=2, n_real=39,
                          resolution=16, cache=None, progress=False)
    assert sampled == []
    # 38 + 2 = 40 fit exactly
    out = measure_over_time([draw()], _MeanColour(), str(demo_file), [0], n_videos=2, n_real=38,
                            resolution=16, cache=None, progress=False)
    assert out["real_available"] == 40 and sampled == [1]


def test_a_real_set_shorter_than_the_window_is_an_error(tmp_path):
    short = tmp_path / "short.npy"
    np.save(short, np.zeros((20, 8, 16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match=r"--data_path .*short.npy: clips of 8 frames .* shorter than the "
                                         r"16"):
        measure_over_time([iter([])], _MeanColour(), str(short), [0], n_videos=2, n_real=4, resolution=16,
                          cache=None, progress=False)


def test_a_draw_with_too_few_videos_is_an_error(demo_file):
    with pytest.raises(ValueError, match="draw 0 gave 2 videos, expected 3"):
        measure_over_time([iter([(_long_videos(2, 32, 0), None)])], _MeanColour(), str(demo_file), [0],
                          n_videos=3, n_real=4, resolution=16, cache=None, progress=False)
