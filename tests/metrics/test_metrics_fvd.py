"""Frechet distance, polynomial MMD (KVD), FVD preprocessing and the streaming feature extractor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tats.io.video import to_uint8
from tats.metrics.fvd import (
    I3DFeatureExtractor,
    compute_fvd_from_arrays,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    fvd_kvd_trials,
    load_features,
    polynomial_mmd,
    preprocess_for_i3d,
    save_features,
)
from tests.numerics import assert_close_to_scale
from tests.reference_impls import scipy_frechet_distance


def test_identity_and_symmetry():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 20)) @ rng.standard_normal((20, 20))
    b = rng.standard_normal((250, 20)) + 0.5
    assert frechet_distance(a, a) <= 1e-6 * np.trace(np.cov(a, rowvar=False))
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_diagonal_gaussian_closed_form():
    # FD = |mu1 - mu2|^2 + sum (sqrt(v1) - sqrt(v2))^2 for diagonal covariances
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    v1, v2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(
        expected, rel=1e-12
    )


def test_agrees_with_scipy_sqrtm_full_rank():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((400, 32)) @ rng.standard_normal((32, 32))
    b = rng.standard_normal((400, 32)) @ rng.standard_normal((32, 32)) + 0.3
    assert frechet_distance(a, b) == pytest.approx(scipy_frechet_distance(a, b), rel=1e-8)


def test_rank_deficient_is_finite_and_nonnegative():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((40, 400))  # fewer samples than dimensions: covariances of rank 39
    b = rng.standard_normal((40, 400)) * 1.5
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6 * np.trace(np.cov(a, rowvar=False)))
    # N covariance (styleganv) differs from N - 1 by the factor N / (N - 1) on the covariance terms
    assert frechet_distance(a, b, ddof=0) < fd


def test_feature_stats_ddof():
    x = np.array([[0.0], [2.0]])
    assert feature_stats(x, 1)[1][0, 0] == 2.0 and feature_stats(x, 0)[1][0, 0] == 1.0


def test_polynomial_mmd():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, 300, 400))
    same = polynomial_mmd(a, b)
    shifted = polynomial_mmd(a, b + 1.0)
    assert abs(same) < 0.05 and shifted > 1.0
    assert abs(polynomial_mmd(a, b, n_subsets=5, subset_size=100)) < 0.1
    # hand-computed two-point case: k(x, y) = (x.y / d + 1)^3 with d = 1
    x, y = np.array([[0.0], [1.0]]), np.array([[2.0], [3.0]])
    kxx = 1.0  # off-diagonal (0*1 + 1)^3
    kyy = 7.0**3
    kxy = np.mean([1.0, 1.0, 3.0**3, 4.0**3])
    assert polynomial_mmd(x, y) == pytest.approx(kxx + kyy - 2 * kxy)


def test_preprocessing():
    v = torch.zeros(2, 4, 32, 48, 3, dtype=torch.uint8)
    v[..., 0] = 255
    x = preprocess_for_i3d(v, "tats")
    assert x.shape == (2, 3, 4, 224, 224) and x.dtype == torch.float32
    assert torch.allclose(x[:, 0], torch.ones(())) and torch.allclose(x[:, 1:], -torch.ones(()))
    # styleganv keeps the aspect ratio: 32x48 -> 224x336, centre 224 crop
    ramp = (
        torch.arange(48, dtype=torch.uint8).mul(5).view(1, 1, 1, 48, 1).expand(1, 2, 32, 48, 3).contiguous()
    )
    xs, xt = preprocess_for_i3d(ramp, "styleganv"), preprocess_for_i3d(ramp, "tats")
    assert xs.shape == xt.shape == (1, 3, 2, 224, 224)
    assert xs[0, 0, 0, 0, 0] > xt[0, 0, 0, 0, 0]  # the crop cut off the dark left edge
    f = torch.rand(2, 3, 4, 8, 8) - 0.5
    u = torch.from_numpy(to_uint8(f))
    assert u.shape == (2, 4, 8, 8, 3) and u.dtype == torch.uint8
    torch.testing.assert_close(u.float() / 255 - 0.5, f.permute(0, 2, 3, 4, 1), atol=0.5 / 255 + 1e-6, rtol=0)
    with pytest.raises(ValueError, match="uint8 .B, T, H, W, C."):
        to_uint8(torch.zeros(2, 3, 4, 8, 8, dtype=torch.uint8))


class _TinyFeatures(nn.Module):
    """Stand-in for I3D: pooled colour/time statistics -> (B, 400); deterministic."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(12, 400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1:] == (3, 4, 224, 224) and x.min() >= -1 and x.max() <= 1
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, (4, 1, 1)).flatten(1)  # (B, 12)
        return self.proj(pooled)


def test_extractor_streams_batches_and_cache_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = _TinyFeatures()
    videos = torch.randint(0, 256, (7, 4, 16, 16, 3), dtype=torch.uint8)
    ext = I3DFeatureExtractor(model, batch_size=3, progress=False)
    ext.update(videos[:5])
    ext.update(videos[5:].numpy())
    feats = ext.compute()
    whole = I3DFeatureExtractor(model, batch_size=16, progress=False)
    whole.update(videos)
    assert feats.shape == (7, 400) and feats.dtype == np.float64
    assert_close_to_scale(torch.from_numpy(feats), torch.from_numpy(whole.compute()), max_ulps=16)
    save_features(tmp_path / "real.npz", feats, protocol="tats", weights="abc")
    back, meta = load_features(tmp_path / "real.npz")
    np.testing.assert_array_equal(back, feats)
    assert meta == {"protocol": "tats", "weights": "abc"}


def test_compute_fvd_from_arrays_and_trials():
    torch.manual_seed(0)
    model = _TinyFeatures()
    real = torch.randint(0, 128, (12, 4, 16, 16, 3), dtype=torch.uint8)
    fake = torch.randint(100, 256, (12, 4, 16, 16, 3), dtype=torch.uint8)
    same = compute_fvd_from_arrays(real, real, i3d=model, progress=False)
    diff = compute_fvd_from_arrays(real, fake, i3d=model, progress=False)
    assert same["fvd"] < 1e-6 * diff["fvd"] and diff["fvd"] > 0
    assert diff["n_real"] == diff["n_fake"] == 12 and diff["protocol"] == "tats"
    rng = np.random.default_rng(0)
    t = fvd_kvd_trials(
        rng.standard_normal((50, 8)), rng.standard_normal((50, 8)) + 2, n_trials=3, sample_size=20
    )
    assert len(t["fvd_trials"]) == 3 and t["fvd_std"] > 0 and t["fvd"] > 10


class _ScriptedI3D(nn.Module):
    """Stand-in for StyleGAN-V's TorchScript I3D: same call signature, (B, 400) features."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 400)

    def forward(
        self, x: torch.Tensor, rescale: bool = True, resize: bool = True, return_features: bool = False
    ) -> torch.Tensor:
        f = self.proj(x.mean(dim=(2, 3, 4)))
        return f if return_features else f.softmax(-1)


def test_compute_fvd_script_smoke(tmp_path, capsys, load_script):
    import json

    from tats.io.video import write_frames
    from tats.metrics.i3d import TorchScriptI3D, load_i3d

    torch.manual_seed(0)
    torch.jit.script(_ScriptedI3D()).save(str(tmp_path / "i3d_torchscript.pt"))
    i3d = load_i3d(tmp_path / "i3d_torchscript.pt")
    assert isinstance(i3d, TorchScriptI3D) and len(i3d.weights_sha256) == 64
    rng = np.random.default_rng(0)
    np.save(tmp_path / "real.npy", rng.integers(0, 120, (6, 5, 16, 16, 3), dtype=np.uint8))
    for i in range(4):  # the generated side as a folder of videos
        write_frames(rng.integers(100, 256, (5, 16, 16, 3), dtype=np.uint8), tmp_path / "fake" / f"{i}.gif")
    mod = load_script("scripts/compute_fvd.py")
    argv = [
        "--real",
        str(tmp_path / "real.npy"),
        "--fake",
        str(tmp_path / "fake"),
        "--n_frames",
        "4",
        "--i3d_path",
        str(tmp_path / "i3d_torchscript.pt"),
        "--cache_dir",
        str(tmp_path / "cache"),
        "--batch_size",
        "4",
        "--out",
        str(tmp_path / "fvd.json"),
    ]
    with pytest.warns(UserWarning, match="4 generated vs 6 real clips is not comparable"):
        first = mod.main(argv)
        second = mod.main(argv)
    saved = json.loads((tmp_path / "fvd.json").read_text())
    assert first["n_real"] == 6 and first["n_fake"] == 4 and first["frames"] == 4
    # the release's protocol by default: up to 2048 per side, real clips a seeded draw, truncation
    assert (first["real"]["max_videos"], first["fake"]["max_videos"]) == (2048, 2048)
    assert (first["real_split"], first["real_seed"], first["real_selection"], first["uint8"]) == (
        "train", 0, "random", "truncate")
    assert "not comparable" in saved["warning"]
    assert first["fvd"] > 0 and saved["fvd"] == pytest.approx(first["fvd"])
    assert saved["i3d_weights_sha256"] == i3d.weights_sha256 and saved["protocol"] == "tats"
    assert not first["real"]["cached"] and second["real"]["cached"]
    assert second["fvd"] == pytest.approx(first["fvd"], rel=1e-9)
    with pytest.raises(SystemExit):
        mod.main(argv + ["--n_trials", "3"])  # trials need --sample_size
    with pytest.warns(UserWarning, match="3 generated vs 5 real"):
        fewer = mod.main(argv + ["--n_real", "5", "--n_sample", "3", "--real_seed", "1"])
    assert (fewer["n_real"], fewer["n_fake"], fewer["real_seed"], fewer["real"]["available"]) == (5, 3, 1, 6)
    capsys.readouterr()
