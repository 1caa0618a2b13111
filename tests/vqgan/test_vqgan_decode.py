"""Decoding long code sequences: overlapping windows decoded on their own disagree (TATS issue 31), decoding
with the decoder's context does not, and the cross-fade of chunk overlaps follows its weights."""

from __future__ import annotations

import pytest
import torch

from tats.vqgan.config import VQGANConfig
from tats.vqgan.decode import decode_codes, overlapping_window_difference, temporal_radius
from tats.vqgan.model import VQGAN


def random_vqgan(norm_type: str = "batch", n_hiddens: int = 8) -> VQGAN:
    cfg = VQGANConfig(embedding_dim=4, n_codes=8, n_hiddens=n_hiddens, downsample=(2, 2, 2),
                      norm_type=norm_type, sequence_length=4, resolution=8)
    vqgan = VQGAN(cfg).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in vqgan.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return vqgan


def test_overlapping_windows_agree_only_with_the_decoders_context():
    vqgan = random_vqgan()
    codes = torch.randint(0, 8, (2, 10, 2, 2), generator=torch.Generator().manual_seed(1))
    r = temporal_radius(vqgan)
    alone = overlapping_window_difference(vqgan, codes, window=2)  # each training-length window on its own
    assert alone["max"] > 5 and alone["mean"] > 0.5  # uint8 levels: visibly different frames
    assert alone["pairs"] == 8 * 2  # latent frames 1..8 are in two windows each, 2 pixel frames apiece
    ctx = overlapping_window_difference(vqgan, codes, window=2, context=r)
    assert ctx["max"] < 1e-3  # float32 rounding of other conv shapes only (a level is 1)
    short = overlapping_window_difference(vqgan, codes, window=2, context=r - 1)
    assert short["max"] > 1e-2  # the radius is the least context that makes windows agree


def test_blend_without_overlap_is_the_cut_decode():
    vqgan = random_vqgan("group", n_hiddens=32)
    codes = torch.randint(0, 8, (1, 7, 2, 2), generator=torch.Generator().manual_seed(2))
    cut = decode_codes(vqgan, codes, chunk_size=3, overlap=0)
    assert torch.equal(decode_codes(vqgan, codes, chunk_size=3, overlap=0, blend=True), cut)


def test_blend_cross_fades_the_overlap_by_distance_to_the_cut_ends():
    """Two chunks of 3 latent frames with 1 of overlap (dt = 2): chunk 0 decodes latent 0..3 (its right end
    cut), chunk 1 latent 2..5 (its left end cut); frames they share mix by distance to each cut end."""
    vqgan = random_vqgan("group", n_hiddens=32)
    codes = torch.randint(0, 8, (1, 6, 2, 2), generator=torch.Generator().manual_seed(3))
    out = decode_codes(vqgan, codes, chunk_size=3, overlap=1, blend=True)
    a, b = vqgan.decode(codes[:, 0:4]), vqgan.decode(codes[:, 2:6])  # pixel frames 0..7 and 4..11
    for f in range(12):
        w0 = min(8 - f - 0.5, 3.0) if f < 8 else 0.0  # chunk 0: cut at 8, weights capped at overlap*dt + 1
        w1 = min(f - 4 + 0.5, 3.0) if f >= 4 else 0.0  # chunk 1: cut at 4
        expected = (w0 * (a[:, :, f] if f < 8 else 0) + w1 * (b[:, :, f - 4] if f >= 4 else 0)) / (w0 + w1)
        torch.testing.assert_close(out[:, :, f], expected, rtol=1e-5, atol=1e-5 * a.abs().max().item())
    cut = decode_codes(vqgan, codes, chunk_size=3, overlap=1)
    assert torch.equal(cut[:, :, 4], a[:, :, 4]) and torch.equal(cut[:, :, 6], b[:, :, 2])  # own frames
    assert (out[:, :, 5] - cut[:, :, 5]).abs().max() > 1e-4  # the blended border frame differs from the cut


@pytest.mark.parametrize("bad", [dict(chunk_size=0), dict(chunk_size=2, overlap=-1)])
def test_bad_chunking_is_an_error(bad):
    with pytest.raises(ValueError, match="chunk_size must be >= 1 and overlap >= 0"):
        decode_codes(random_vqgan(), torch.zeros(1, 4, 2, 2, dtype=torch.long), **bad)
