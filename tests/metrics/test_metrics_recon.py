"""PSNR / SSIM / LPIPS on videos (B, C, T, H, W)."""

from __future__ import annotations

import math

import pytest
import torch

from tats.metrics.recon import lpips_video, psnr, ssim
from tests.numerics import assert_close_to_scale


def test_psnr_hand_computed():
    x = torch.zeros(1, 3, 2, 4, 4)
    y = x.clone()
    y[:, :, 0] += 0.1  # frame 0: MSE 0.01 -> 20 dB
    y[:, :, 1, :2] += 0.2  # frame 1: half the pixels off by 0.2 -> MSE 0.02 -> 10 log10(50)
    expected = (20.0 + 10 * math.log10(50.0)) / 2
    assert psnr(x, y).item() == pytest.approx(expected, rel=1e-6)
    # the same in uint8 (range 255): an offset of 51 on [0, 255] is 0.2 of the range -> 13.98 dB
    a = torch.full((1, 1, 1, 8, 8), 100, dtype=torch.uint8)
    assert psnr(a, a + 51).item() == pytest.approx(10 * math.log10(1 / 0.04), rel=1e-6)


def test_psnr_identities():
    x = torch.rand(3, 3, 4, 8, 8) - 0.5
    assert torch.all(psnr(x, x) == 100.0)
    y = x + 0.05 * torch.randn_like(x)
    torch.testing.assert_close(psnr(x, y), psnr(y, x))
    assert psnr(x, y).shape == (3,)
    with pytest.raises(ValueError, match="mixed dtypes"):
        psnr(x, (x + 0.5).mul(255).to(torch.uint8))


def test_ssim_identities_and_constant_offset():
    x = torch.rand(2, 3, 3, 16, 16) - 0.5
    torch.testing.assert_close(ssim(x, x), torch.ones(2))
    y = (x + 0.1 * torch.randn_like(x)).clamp(-0.5, 0.5)
    s = ssim(x, y)
    assert torch.all(s < 1) and torch.all(s > 0)
    torch.testing.assert_close(s, ssim(y, x))
    # constant frames a, b: variances and covariance vanish, so SSIM = (2ab + C1) / (a^2 + b^2 + C1),
    # with intensities in [0, 1] (float videos are shifted by +0.5)
    a, b = 0.7, 0.4
    c1 = 0.01**2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 1, 1, 12, 12), a - 0.5), torch.full((1, 1, 1, 12, 12), b - 0.5))
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # uint8 and float inputs of the same video agree (data ranges 255 and 1)
    u = torch.randint(0, 256, (1, 3, 2, 16, 16), dtype=torch.uint8)
    v = torch.randint(0, 256, (1, 3, 2, 16, 16), dtype=torch.uint8)
    assert_close_to_scale(ssim(u, v), ssim(u.float() / 255 - 0.5, v.float() / 255 - 0.5), max_ulps=64)
    with pytest.raises(ValueError, match="window"):
        ssim(torch.zeros(1, 1, 1, 8, 8), torch.zeros(1, 1, 1, 8, 8))


def test_lpips_video_uses_frames():
    class MeanAbs(torch.nn.Module):  # stand-in distance, input must be in [-1, 1]
        def forward(self, a, b):
            assert a.min() >= -1 and a.max() <= 1 and a.shape[1] == 3
            return (a - b).abs().mean(dim=(1, 2, 3), keepdim=True)

    x = torch.rand(2, 1, 3, 8, 8) - 0.5
    y = x.clone()
    y[1, :, 2] += 0.25  # video 1, frame 2 differs by 0.25 -> 0.5 in [-1, 1] units
    d = lpips_video(x, y, MeanAbs(), frames_per_batch=4)
    assert d.shape == (2,)
    torch.testing.assert_close(d, torch.tensor([0.0, 0.5 / 3]))


def test_lpips_video_moves_the_frames_to_the_models_device():
    """uint8 clips on the CPU, LPIPS elsewhere (the meta device stands in for a GPU: it refuses CPU
    inputs as CUDA does): the frames go to the model, the distances stay on its device."""
    from tats.metrics.lpips import LPIPS

    x = torch.randint(0, 256, (2, 3, 4, 16, 16), dtype=torch.uint8)
    d = lpips_video(x, x.clone(), LPIPS().to("meta"), frames_per_batch=3)
    assert d.device.type == "meta" and d.shape == (2,)


def test_lazy_package_exports():
    import tats.metrics as M
    from tats.metrics.fvd import frechet_distance

    assert M.frechet_distance is frechet_distance and M.psnr is psnr
    with pytest.raises(AttributeError):
        M.not_a_metric  # noqa: B018
