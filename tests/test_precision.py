"""Float32 policy (tats.precision): TF32 off wherever numbers are compared or stored, and the device,
dtype and TF32 state of FVD features in their cache key and results.

TF32 only changes CUDA kernels, but the flags are process-wide settings that exist on every build, so
recording them inside the computations shows the policy on the CPU too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tats.metrics.fvd import I3DFeatureExtractor, source_features
from tats.precision import no_tf32, numerics, tf32_enabled

ON = {"conv": True, "matmul": True}
OFF = {"conv": False, "matmul": False}


@pytest.fixture
def tf32_on():
    """Both kinds of TF32 allowed, as a training run on an Ampere GPU may set them (restored after)."""
    saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    yield
    torch.set_float32_matmul_precision(saved[0])
    torch.backends.cudnn.allow_tf32 = saved[1]


class RecordingFeatures(nn.Module):
    """A stand-in I3D: (B, 3, T, 224, 224) -> (B, 400), recording the TF32 flags it runs under."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(3, 400)
        self.flags: list[dict[str, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.flags.append(tf32_enabled())
        return self.proj(x.mean(dim=(2, 3, 4)).to(self.proj.weight.dtype))


def test_no_tf32_turns_both_off_and_restores(tf32_on):
    assert tf32_enabled() == ON
    with no_tf32():
        assert tf32_enabled() == OFF
    assert tf32_enabled() == ON
    assert torch.get_float32_matmul_precision() == "high"


def test_i3d_features_are_computed_without_tf32(tf32_on):
    model = RecordingFeatures()
    ext = I3DFeatureExtractor(model, batch_size=2, progress=False)
    ext.update(torch.randint(0, 256, (3, 4, 8, 8, 3), dtype=torch.uint8))
    assert model.flags == [OFF, OFF]  # two batches
    assert tf32_enabled() == ON
    assert ext.numerics == {"device": "cpu", "dtype": "float32", "tf32": False}


def test_codebook_encoding_runs_without_tf32(tf32_on, monkeypatch):
    from tests.tiny_models import CLIP_SHAPE, build_vqgan

    vqgan = build_vqgan()
    seen = []
    encoder_forward, addmm = vqgan.encoder.forward, torch.addmm

    def encoder(x):
        seen.append(("encoder", tf32_enabled()))
        return encoder_forward(x)

    def distances(*args, **kwargs):
        seen.append(("distances", tf32_enabled()))
        return addmm(*args, **kwargs)

    monkeypatch.setattr(vqgan.encoder, "forward", encoder)
    monkeypatch.setattr(torch, "addmm", distances)
    codes = vqgan.encode(torch.rand(1, *CLIP_SHAPE) - 0.5)
    assert codes.shape == (1, 4, 2, 2)
    assert seen == [("encoder", OFF), ("distances", OFF)]
    vqgan.codebook.train()(torch.randn(2, 4, 1, 2, 2))  # the training forward's distances too
    assert seen[-1] == ("distances", OFF)
    assert tf32_enabled() == ON


def test_feature_cache_key_holds_device_and_precision(tmp_path, monkeypatch):
    """Real features cached from one device or dtype are never served to another."""
    import tats.precision

    np.save(tmp_path / "real.npy", np.random.default_rng(0).integers(0, 256, (4, 2, 8, 8, 3), dtype=np.uint8))
    spec, cache = str(tmp_path / "real.npy"), tmp_path / "cache"
    model = RecordingFeatures()
    kw = dict(n_frames=2, resolution=8, cache=cache, progress=False)
    feats, meta = source_features(spec, model, **kw)
    assert (meta["device"], meta["dtype"], meta["tf32"], meta["cached"]) == ("cpu", "float32", False, False)
    assert source_features(spec, model, **kw)[1]["cached"]  # same numerics: reused
    wide, meta64 = source_features(spec, model.double(), **kw)
    assert meta64["dtype"] == "float64" and not meta64["cached"]
    monkeypatch.setattr(tats.precision, "device_name", lambda device: "cuda (a GPU)")
    gpu = source_features(spec, model.float(), **kw)[1]
    assert gpu["device"] == "cuda (a GPU)" and not gpu["cached"]
    assert len(list(cache.glob("*.npz"))) == 3
    np.testing.assert_allclose(wide, feats, rtol=1e-5)


def test_numerics_of_a_model():
    expected = {"device": "cpu", "dtype": "bfloat16", "tf32": False}
    assert numerics(nn.Linear(2, 2).to(torch.bfloat16)) == expected
