"""Classifier-free guidance (tats.sampling.guidance) in the GPT's token loop and in masked decoding: scale 1
is the unguided sampler exactly, other scales follow u + s (c - u) of one batched forward."""

from __future__ import annotations

import pytest
import torch

from tats.gpt.model import GPT
from tats.gpt.video_transformer import VideoTransformer
from tats.sampling import sample_long, sample_short
from tats.sampling.guidance import guide_logits, with_null_rows
from tests.numerics import assert_close_to_scale
from tests.sampling.test_sampling_masked import masked_model
from tests.tiny_models import N_CLASSES, gpt_config

pytestmark = pytest.mark.usefixtures("one_thread")


def guided_gpt(seed: int = 0, null_cond: bool = True) -> VideoTransformer:
    torch.manual_seed(seed)
    gpt = GPT(gpt_config("label", null_cond=null_cond)).eval()
    with torch.no_grad():
        for p in gpt.parameters():
            p.copy_(torch.randn(p.shape) * 0.5)
    return VideoTransformer(gpt)


def test_guide_logits_rule():
    c, u = torch.randn(3, 7), torch.randn(3, 7)
    both = torch.cat([c, u])
    assert torch.equal(guide_logits(both, 1.0), c)  # scale 1: the conditional logits, bit for bit
    assert torch.equal(guide_logits(both, 3.0), u + 3.0 * (c - u))
    assert torch.equal(guide_logits(both, 0.0), u)  # scale 0: unconditional


def test_scale_one_equals_the_unguided_sampler_exactly():
    for model in (guided_gpt(), masked_model(null_cond=True)):
        long = {"n_latent_frames": 6, "temporal_sample_pos": 2}
        for sampler, kw in ((sample_short, {}), (sample_long, long)):
            args = dict(batch_size=3, cond=[1, 4, 7], top_p=0.9, **kw)
            plain = sampler(model, generator=torch.Generator().manual_seed(5), **args)
            one = sampler(model, generator=torch.Generator().manual_seed(5), cfg_scale=1.0, **args)
            assert torch.equal(plain, one), (model.objective, sampler.__name__)


def test_batched_forward_gives_the_separate_conditional_and_unconditional_logits():
    model = guided_gpt()
    cfg = model.config
    ids = torch.cat([torch.tensor([[2], [5]]), torch.randint(0, 16, (2, 9)) + N_CLASSES], 1)
    both = with_null_rows(ids, cfg)
    assert torch.equal(both[2:, 0], torch.full((2,), cfg.null_id)) and torch.equal(both[2:, 1:], ids[:, 1:])
    logits = model.transformer(both)
    assert_close_to_scale(logits[:2], model.transformer(ids), max_ulps=64, what="conditional rows")
    assert_close_to_scale(logits[2:], model.transformer(both[2:]), max_ulps=64, what="unconditional rows")


def _reference_guided_greedy(gpt: GPT, cond_prefix: torch.Tensor, null_prefix: torch.Tensor, n: int,
                             scale: float) -> torch.Tensor:
    """Greedy guided decoding without a cache: two full forwards per token, argmax of u + s (c - u)."""
    c_seq, u_seq, out = cond_prefix, null_prefix, []
    for _ in range(n):
        c, u = gpt(c_seq)[:, -1], gpt(u_seq)[:, -1]
        token = (u + scale * (c - u)).argmax(-1, keepdim=True)
        out.append(token)
        c_seq, u_seq = torch.cat([c_seq, token], 1), torch.cat([u_seq, token], 1)
    return torch.cat(out, 1)


@pytest.mark.parametrize("scale", [2.0, 4.0])
def test_guided_gpt_follows_the_reference(scale):
    model = guided_gpt()
    cfg = model.config
    labels = torch.tensor([[1], [6]])
    null = torch.full_like(labels, cfg.null_id)
    ids = sample_short(model, 2, labels[:, 0], greedy=True, cfg_scale=scale, return_ids=True)
    with torch.no_grad():
        expected = _reference_guided_greedy(model.transformer, labels, null, cfg.n_latent_tokens, scale)
    assert torch.equal(ids, expected)
    assert not torch.equal(ids, sample_short(model, 2, labels[:, 0], greedy=True, return_ids=True))
    # long videos: every window is guided; frame f follows the p previous frames (as the GPT's windows)
    n, p, hw = 6, 2, 4
    ids = sample_long(model, n, 2, labels[:, 0], temporal_sample_pos=p, greedy=True, cfg_scale=scale,
                      return_ids=True)  # (ids, not codes: a drawn condition id stays as drawn)
    flat = ids.view(2, n * hw)
    with torch.no_grad():
        first = _reference_guided_greedy(model.transformer, labels, null, p * hw, scale)
        assert torch.equal(flat[:, : p * hw], first)
        for f in range(p, n):
            ctx = flat[:, (f - p) * hw : f * hw]
            frame = _reference_guided_greedy(model.transformer, torch.cat([labels, ctx], 1),
                                             torch.cat([null, ctx], 1), hw, scale)
            assert torch.equal(flat[:, f * hw : (f + 1) * hw], frame), f


def test_guided_spatial_window_runs():
    model = guided_gpt()
    codes = sample_long(model, 3, 2, [1, 2], temporal_sample_pos=1, sample_resolution=3, cfg_scale=3.0,
                        generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 3, 3, 3)


def test_guided_masked_step_is_the_guided_argmax():
    model = masked_model(null_cond=True)
    cfg = model.config
    labels = torch.tensor([3, 11])
    out = sample_short(model, 2, labels, greedy=True, steps=1, cfg_scale=3.0, return_ids=True)
    ids = torch.full((2, cfg.block_size), cfg.mask_id)
    ids[:, 0] = labels
    null = ids.clone()
    null[:, 0] = cfg.null_id
    with torch.no_grad():
        c, u = model.transformer(ids), model.transformer(null)
    assert not torch.allclose(c, u)  # the null condition is another input
    assert torch.equal(out - N_CLASSES, (u + 3.0 * (c - u)).argmax(-1))
    assert not torch.equal(out, sample_short(model, 2, labels, greedy=True, steps=1, return_ids=True))


def test_guidance_needs_a_null_condition_and_the_eager_loop():
    with pytest.raises(ValueError, match="cond_drop"):
        sample_short(guided_gpt(null_cond=False), 1, 1, cfg_scale=2.0)
    with pytest.raises(ValueError, match="cond_drop"):
        sample_short(masked_model(), 1, 1, cfg_scale=2.0)
    with pytest.raises(ValueError, match="compile"):
        sample_short(guided_gpt(), 1, 1, cfg_scale=2.0, compile=True)
