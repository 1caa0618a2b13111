"""Iterative parallel decoding of the masked model (tats.sampling.masked): the unmasking schedule, given
codes kept, the sliding window for long videos, and the dispatch of sample_short / sample_long."""

from __future__ import annotations

import math

import pytest
import torch

import tats.sampling.masked as masked_sampling
from tats.gpt.masked import MaskedTransformer
from tats.gpt.video_transformer import VideoTransformer
from tats.sampling import SamplingOptions, sample_long, sample_short
from tats.sampling.masked import masked_decode, remaining_masked, sample_long_masked, sample_short_masked
from tests.tiny_models import N_CLASSES, N_CODES, gpt_config

pytestmark = pytest.mark.usefixtures("one_thread")


def masked_model(seed: int = 1, **kw) -> VideoTransformer:
    """A tiny label-conditional masked model (latent grid (4, 2, 2)) with peaked random weights."""
    torch.manual_seed(seed)
    net = MaskedTransformer(gpt_config("label", objective="masked", **kw)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    return VideoTransformer(net)


def window(model, labels: list[int], given: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
    """Condition ids then [MASK] everywhere except the codes in ``given`` (video position -> codes)."""
    c = model.config
    ids = torch.full((len(labels), c.block_size), c.mask_id)
    ids[:, 0] = torch.tensor(labels)
    for pos, codes in (given or {}).items():
        ids[:, 1 + pos] = codes + c.n_cond_vocab
    return ids


# ------------------------------------------------------------------------------------- the schedule
def test_remaining_masked_is_the_cosine_schedule():
    # floor(10 cos(pi/8)) = 9, floor(10 cos(pi/4)) = 7, floor(10 cos(3 pi/8)) = 3, then none
    assert remaining_masked(10, 4) == [9, 7, 3, 0]
    n, S = 128, 12
    expected = [math.floor(n * math.cos(math.pi / 2 * (s + 1) / S)) for s in range(S - 1)] + [0]
    assert remaining_masked(n, S) == expected
    # few codes: at least one is fixed per step, so they run out before the last step
    assert remaining_masked(3, 12) == [2, 1, 0]
    assert remaining_masked(5, 1) == [0]
    with pytest.raises(ValueError):
        remaining_masked(5, 0)


def test_each_step_sees_the_scheduled_number_of_masks():
    model = masked_model()
    seen = []
    model.transformer.register_forward_pre_hook(
        lambda mod, args: seen.append(int((args[0] == model.config.mask_id).sum(1)[0])))
    given = {0: torch.tensor([3, 4]), 5: torch.tensor([1, 2])}
    ids = window(model, [1, 7], given)
    out = masked_decode(model, ids, SamplingOptions(steps=4, generator=torch.Generator().manual_seed(0)))
    # 14 masked, then floor(14 cos(pi/8)) = 12, floor(14 cos(pi/4)) = 9, floor(14 cos(3 pi/8)) = 5
    assert seen == [14, 12, 9, 5]
    assert not (out == model.config.mask_id).any()
    assert torch.equal(out[:, [0, 1, 6]], ids[:, [0, 1, 6]])  # the condition and the given codes
    assert out[:, 1:].min() >= N_CLASSES and out[:, 1:].max() < N_CLASSES + N_CODES


def test_a_fully_given_window_is_returned_unchanged():
    model = masked_model()
    codes = torch.randint(0, N_CODES, (2, 16))
    ids = window(model, [0, 5], {p: codes[:, p] for p in range(16)})

    def no_forward(*a, **k):
        raise AssertionError("nothing to fill: no forward pass")

    model.transformer.forward = no_forward
    out = masked_decode(model, ids, SamplingOptions(steps=12))
    assert torch.equal(out, ids) and out is not ids
    prefix = codes.view(2, 4, 2, 2)
    assert torch.equal(sample_short_masked(model, 2, [0, 5], prefix_codes=prefix), prefix)


def test_one_greedy_step_is_the_argmax_of_one_forward():
    model = masked_model()
    ids = window(model, [2, 9])
    logits = model.transformer(ids)  # (B, 16, n_codes)
    out = masked_decode(model, ids, SamplingOptions(steps=1, greedy=True))
    assert torch.equal(out[:, 1:] - N_CLASSES, logits.argmax(-1))


def test_greedy_fixes_the_most_confident_codes_first():
    model = masked_model()
    ids = window(model, [4])
    probs = model.transformer(ids).softmax(-1)[0]  # (16, n_codes)
    first = masked_decode(model, ids, SamplingOptions(steps=16, greedy=True))  # one code per step
    # after step 1 only the most confident position is fixed, at its argmax: the 16-step run's code there
    best = int(probs.max(-1).values.argmax())
    assert int(first[0, 1 + best]) - N_CLASSES == int(probs[best].argmax())


def test_seeded_draws_repeat_and_seeds_differ():
    model = masked_model()
    a = sample_short(model, 3, 1, generator=torch.Generator().manual_seed(0), top_p=0.9)
    b = sample_short(model, 3, 1, generator=torch.Generator().manual_seed(0), top_p=0.9)
    c = sample_short(model, 3, 1, generator=torch.Generator().manual_seed(1), top_p=0.9)
    assert a.shape == (3, 4, 2, 2) and torch.equal(a, b) and not torch.equal(a, c)
    greedy = sample_short(model, 3, 1, greedy=True, steps=3)
    assert torch.equal(greedy, sample_short(model, 3, 1, greedy=True, steps=3))


# ------------------------------------------------------------------------------------- long videos
def test_long_sampling_keeps_the_context_frames(monkeypatch):
    model = masked_model()
    calls = []
    real = masked_sampling.masked_decode

    def recording(model_, ids, options, progress=False):
        out = real(model_, ids, options, progress)
        calls.append((ids.clone(), out.clone()))
        return out

    monkeypatch.setattr(masked_sampling, "masked_decode", recording)
    n, t, hw, p = 7, 4, 4, 2
    codes = sample_long(model, n, 2, cond=[3, 8], temporal_sample_pos=p,
                        generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, n, 2, 2)
    # windows start at latent frames 0, 2, 4 (t - p = 2 new frames each; frame 7 of the last is dropped)
    assert len(calls) == 3
    flat = codes.view(2, n, hw) + N_CLASSES
    for i, first in enumerate([0, 2, 4]):
        inp, out = calls[i]
        frames = inp[:, 1:].view(2, t, hw)
        given = (frames != model.config.mask_id).all(-1)  # (B, t) whole frames given
        assert given.tolist() == [[False] * t if i == 0 else [True] * p + [False] * (t - p)] * 2
        if i:  # the context is the video's previous frames, and the window returns it unchanged
            assert torch.equal(frames[:, :p], flat[:, first : first + p])
            assert torch.equal(out[:, 1:].view(2, t, hw)[:, :p], frames[:, :p])
        span = min(t, n - first)
        assert torch.equal(out[:, 1:].view(2, t, hw)[:, :span], flat[:, first : first + span])
    assert torch.equal(calls[0][0][:, 0], torch.tensor([3, 8]))  # the condition in every window


def test_long_sampling_continues_given_frames():
    model = masked_model()
    given = torch.randint(0, N_CODES, (2, 5, 2, 2))
    out = sample_long(model, 9, 2, cond=1, temporal_sample_pos=3, prefix_codes=given,
                      generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 9, 2, 2) and torch.equal(out[:, :5], given)
    short = sample_long(model, 2, 2, cond=1, temporal_sample_pos=1, prefix_codes=given[:, :1],
                        generator=torch.Generator().manual_seed(0))
    assert short.shape == (2, 2, 2, 2) and torch.equal(short[:, :1], given[:, :1])


def test_long_sampling_flags():
    model = masked_model()
    with pytest.raises(ValueError, match="temporal_sample_pos"):
        sample_long_masked(model, 8, 1, cond=1, temporal_sample_pos=4)
    with pytest.raises(ValueError, match="trained latent size"):
        sample_long(model, 8, 1, cond=1, sample_resolution=4)
    with pytest.raises(ValueError, match="compile"):
        sample_short(model, 1, 1, compile=True)


def test_draw_with_confidence_scores_the_filtered_distribution():
    from tats.sampling.masked import draw_with_confidence

    logits = torch.randn(500, 12, generator=torch.Generator().manual_seed(0)) * 3
    g = torch.Generator().manual_seed(1)
    codes, logp = draw_with_confidence(logits, SamplingOptions(top_k=1, generator=g))
    assert torch.equal(codes, logits.argmax(-1)) and torch.equal(logp, torch.zeros(500))
    codes, logp = draw_with_confidence(logits, SamplingOptions(top_k=3, temperature=2.0, generator=g))
    top3 = logits.topk(3, -1)
    assert (codes[:, None] == top3.indices).any(-1).all()
    rank = (codes[:, None] == top3.indices).float().argmax(-1, keepdim=True)  # (500, 1) in the top 3
    expected = (top3.values / 2.0).log_softmax(-1).gather(-1, rank).squeeze(-1)
    assert torch.allclose(logp, expected, atol=1e-5)
    codes, logp = draw_with_confidence(logits, SamplingOptions(generator=g))  # no filter
    assert torch.allclose(logp, logits.log_softmax(-1).gather(-1, codes[:, None]).squeeze(-1), atol=1e-5)
    codes, logp = draw_with_confidence(logits, SamplingOptions(greedy=True, top_k=3))
    assert torch.equal(codes, logits.argmax(-1))


def test_frame_prediction_keeps_the_observed_frames(tmp_path):
    from tats.gpt.load import load_transformer
    from tats.sampling import encode_observed, predict_frames
    from tests.tiny_models import CLIP_SHAPE, save_transformer

    model = load_transformer(save_transformer(tmp_path / "m.ckpt", "label", objective="masked"))
    video = torch.rand(2, *CLIP_SHAPE, generator=torch.Generator().manual_seed(0)) - 0.5
    observed = encode_observed(model, video, 3)  # 3 pixel frames -> 2 latent frames (dt = 2)
    g = torch.Generator().manual_seed(0)
    codes = predict_frames(model, video, 3, n_latent_frames=7, cond=[1, 2], generator=g, steps=3)
    assert codes.shape == (2, 7, 2, 2) and torch.equal(codes[:, :2], observed)
