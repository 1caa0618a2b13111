"""Hierarchical sampling (interpolation transformer), video prediction, bounded-memory decoding."""

from __future__ import annotations

import pytest
import torch

from tats.gpt import GPT, GPTConfig
from tats.gpt.video_transformer import VideoTransformer
from tats.sampling import (
    encode_observed,
    interpolate_frames,
    interpolation_layout,
    observed_latent_frames,
    predict_frames,
    sample_hierarchical,
    sample_long,
    sample_short,
)
from tats.vqgan.config import VQGANConfig
from tats.vqgan.decode import decode_codes, temporal_radius
from tats.vqgan.model import VQGAN
from tests.numerics import assert_close_to_scale

pytestmark = pytest.mark.usefixtures("one_thread")


def gpt_model(latent_shape, n_codes=9, n_unmasked=0, every=0, vqgan=None) -> VideoTransformer:
    t, h, w = latent_shape
    cfg = GPTConfig(vocab_size=n_codes, block_size=t * h * w, n_layer=2, n_head=2, n_embd=16,
                    n_unmasked=n_unmasked, n_codes=n_codes, latent_shape=latent_shape,
                    sample_every_n_latent_frames=every)
    gpt = GPT(cfg)
    with torch.no_grad():
        for p in gpt.parameters():
            p.normal_(0, 0.5)
    return VideoTransformer(gpt, vqgan).eval()


def tiny_vqgan(downsample=(2, 2, 2)):
    cfg = VQGANConfig(embedding_dim=4, n_codes=8, n_hiddens=8, downsample=downsample, norm_type="batch",
                      sequence_length=4, resolution=8)
    vqgan = VQGAN(cfg).eval()
    with torch.no_grad():
        for p in vqgan.parameters():
            p.normal_(0, 0.3)
    return vqgan


def test_interpolation_greedy_equals_uncached():
    interp = gpt_model((3, 2, 2), n_unmasked=4)  # [start, first frame] | 1 missing frame | last frame
    assert interpolation_layout(interp.config) == (2, 4)
    first, last = torch.randint(0, 9, (2, 2, 2, 2)).unbind(0)  # (B, h, w) each
    got = interpolate_frames(interp, first, last, greedy=True)
    assert got.shape == (2, 1, 2, 2)
    # Reference: full forward of [0, first, middle so far, last[:-1]] for each middle token.
    start, middle = torch.zeros(2, 1, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long)
    seq = torch.cat([start, first.flatten(1), middle, last.flatten(1)[:, :-1]], dim=1)  # (B, 12) = block
    with torch.no_grad():
        for j in range(4):
            seq[:, 5 + j] = interp.transformer(seq)[:, 4 + j].argmax(-1)
    assert torch.equal(got.flatten(1), seq[:, 5:9])
    # the compiled decoder (both ends prefilled at their positions, the stored mask over the whole cache)
    assert torch.equal(interpolate_frames(interp, first, last, greedy=True, compile=True), got)


def test_hierarchical_structure():
    ar = gpt_model((2, 2, 2), every=2)
    interp = gpt_model((3, 2, 2), n_unmasked=4)
    out = sample_hierarchical(ar, interp, 4, 2, temporal_sample_pos=1, greedy=True)
    assert out.shape == (2, 7, 2, 2)  # (K - 1) * s + 1
    sparse = sample_long(ar, 4, 2, temporal_sample_pos=1, greedy=True)
    assert torch.equal(out[:, ::2], sparse)
    for k in range(3):
        fill = interpolate_frames(interp, sparse[:, k], sparse[:, k + 1], greedy=True)
        assert torch.equal(out[:, 2 * k + 1 : 2 * k + 2], fill)
    with pytest.raises(ValueError, match="every 3-th"):
        sample_hierarchical(gpt_model((2, 2, 2), every=3), interp, 3, 1)
    with pytest.raises(ValueError, match="n_unmasked > 0"):
        interpolation_layout(ar.config)
    with pytest.raises(ValueError, match="n_unmasked=3"):
        interpolation_layout(gpt_model((3, 2, 2), n_unmasked=3).config)


def test_observed_prefix_and_prediction():
    assert observed_latent_frames(1, 4) == 1  # BAIR: 1 observed frame
    assert observed_latent_frames(5, 4) == 2  # Kinetics: 5 observed frames
    assert observed_latent_frames(4, 4) == 1
    vqgan = tiny_vqgan()
    model = gpt_model((2, 4, 4), n_codes=8, vqgan=vqgan)
    video = torch.rand(2, 3, 8, 8, 8) - 0.5
    prefix = encode_observed(model, video, 3)  # 3 frames -> 2 latent frames, frame 2 repeated
    padded = torch.cat([video[:, :, :3], video[:, :, 2:3]], dim=2)
    assert torch.equal(prefix, vqgan.encode(padded))
    out = predict_frames(model, video, 1, greedy=True)
    assert out.shape == (2, 2, 4, 4)
    first = encode_observed(model, video, 1)
    assert torch.equal(out[:, :1], first)
    assert torch.equal(out, sample_short(model, 2, prefix_codes=first, greedy=True))
    longer = predict_frames(model, video, 1, n_latent_frames=4, greedy=True)
    assert longer.shape == (2, 4, 4, 4) and torch.equal(longer[:, :2], out)
    with pytest.raises(ValueError, match="n_observed_frames"):
        encode_observed(model, video, 0)


@pytest.mark.parametrize("downsample", [(2, 2, 2), (4, 4, 4)])
def test_chunked_decode_equals_whole(downsample):
    vqgan = tiny_vqgan(downsample)
    r = temporal_radius(vqgan)
    codes = torch.randint(0, 8, (1, 9, 2, 2))
    whole = decode_codes(vqgan, codes)
    assert whole.shape == (1, 3, 9 * downsample[0], 2 * downsample[1], 2 * downsample[2])
    chunked = decode_codes(vqgan, codes, chunk_size=2)  # overlap = measured radius
    assert_close_to_scale(chunked, whole, max_ulps=32)  # other conv batch shapes; a wrong overlap: >1e4
    short = decode_codes(vqgan, codes, chunk_size=2, overlap=r - 1)
    assert (short - whole).abs().max() > 1e-3  # the radius is tight: one frame less is not exact
    assert torch.equal(decode_codes(vqgan, codes, chunk_size=20), whole)
