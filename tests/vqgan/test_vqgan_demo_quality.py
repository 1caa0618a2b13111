"""scripts/vqgan_demo_quality.py: the whole-set code perplexity and the pass/fail rule of the demo goal."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tats.metrics.codebook import code_perplexity

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quality(load_script):
    return load_script("scripts/vqgan_demo_quality.py")


def test_code_perplexity_identities():
    assert code_perplexity(torch.zeros(2, 2, 4, 4, dtype=torch.long), 64) == pytest.approx(1.0)
    uniform = torch.arange(24).repeat(5).view(5, 2, 3, 4)  # 24 codes, each 5 times
    assert code_perplexity(uniform, 64) == pytest.approx(24.0)
    # 3/4 of the positions on one code (a background), the rest spread evenly over 16 others
    codes = torch.cat([torch.zeros(48, dtype=torch.long), torch.arange(1, 17)])
    h = -(0.75 * math.log(0.75) + 16 * (1 / 64) * math.log(1 / 64))
    assert code_perplexity(codes, 64) == pytest.approx(math.exp(h))
    with pytest.raises(ValueError, match="beyond n_codes"):
        code_perplexity(torch.tensor([0, 64]), 64)


def test_pass_fail_rule(quality):
    assert quality.failures(0.45, 0.04, 20.0, 64) == []
    assert quality.failures(0.45, 0.225, 16.01, 64) == []  # exactly halved passes
    (msg,) = quality.failures(0.45, 0.30, 20.0, 64)
    assert "did not halve" in msg
    (msg,) = quality.failures(0.45, 0.04, 16.0, 64)  # perplexity must be ABOVE n_codes / 4
    assert "perplexity 16.00 <= n_codes / 4 = 16" in msg
    assert len(quality.failures(0.45, float("nan"), float("nan"), 64)) == 2  # NaN never passes


def test_evaluate_counts_every_test_position(quality):
    from tats.vqgan.config import VQGANConfig
    from tats.vqgan.model import VQGAN

    torch.manual_seed(0)
    vqgan = VQGAN(VQGANConfig(n_hiddens=2, embedding_dim=4, n_codes=16, downsample=(2, 4, 4),
                              norm_type="batch", sequence_length=4, resolution=16))
    video = torch.rand(5, 3, 4, 16, 16) - 0.5
    res = quality.evaluate(vqgan, video, batch_size=2)  # batches of 2, 2, 1
    with torch.no_grad():
        codes = vqgan(video)["codes"]  # (5, 2, 4, 4), eval mode: the same codes in one batch
    assert res["positions"] == codes.numel() == 160
    assert res["perplexity"] == pytest.approx(code_perplexity(codes, 16), abs=0.01)
    assert res["codes_used"] == codes.unique().numel() and res["recon"].shape == (2, 3, 4, 16, 16)
