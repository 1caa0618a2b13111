"""Short and long sampling: release greedy parity, window placement, cached == uncached, shapes."""

from __future__ import annotations

import pytest
import torch

from tats.gpt import GPT, GPTConfig
from tats.gpt.load import load_transformer
from tats.gpt.video_transformer import VideoTransformer
from tats.sampling import context_frames, sample_long, sample_short, spatial_origin
from tests.reference_impls import baseline_filter, greedy_uncached

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_model(cond_type="label", latent_shape=(3, 2, 3), n_cond_vocab=4, n_codes=9) -> VideoTransformer:
    t, h, w = latent_shape
    cfg = GPTConfig(vocab_size=n_codes + n_cond_vocab, block_size=t * h * w, n_layer=2, n_head=2,
                    n_embd=16, cond_type=cond_type, n_cond_vocab=n_cond_vocab, n_codes=n_codes,
                    latent_shape=latent_shape)
    gpt = GPT(cfg)
    with torch.no_grad():
        for p in gpt.parameters():
            p.normal_(0, 0.5)
    return VideoTransformer(gpt).eval()


def test_release_greedy_short_and_long(fixtures_dir):
    io = torch.load(fixtures_dir / "gpt_label_io.pt")
    model = load_transformer(fixtures_dir / "gpt_label.ckpt", with_vqgan=False)
    labels = io["cond"][:, 0]
    ids = sample_short(model, 2, cond=labels, greedy=True, return_ids=True)
    assert torch.equal(ids, io["greedy_ids"])
    codes = sample_short(model, 2, cond=labels, greedy=True)
    assert codes.shape == (2, 2, 8, 8)
    assert torch.equal(codes, (io["greedy_ids"] - 5).clamp(0, 47).view(2, 2, 8, 8))
    assert int(io["long_temporal_sample_pos"]) == 1
    long_ids = sample_long(model, 5, 2, cond=labels, temporal_sample_pos=1, greedy=True, return_ids=True)
    assert torch.equal(long_ids, io["long_greedy_ids"])


def test_context_frames_at_start_middle_end():
    p = 2
    assert list(context_frames(0, p)) == []  # the first p frames form one short sample
    assert list(context_frames(1, p)) == [0]
    assert list(context_frames(2, p)) == [0, 1]
    assert list(context_frames(5, p)) == [3, 4]  # middle: the previous p frames, at window positions from 0
    assert list(context_frames(9, p)) == [7, 8]  # end of a 10-frame video
    assert list(context_frames(9, 1)) == [8]


def test_spatial_origin_centred_and_clamped():
    grid, win = (6, 8), (2, 4)
    assert spatial_origin(0, 0, grid, win) == (0, 0)
    assert spatial_origin(3, 4, grid, win) == (2, 2)  # centred: (3 - 1, 4 - 2)
    assert spatial_origin(5, 7, grid, win) == (4, 4)  # clamped at the far corner
    assert spatial_origin(2, 1, grid, win) == (1, 0)


@pytest.mark.parametrize("p", [1, 2])
def test_long_greedy_equals_uncached_windows(p):
    model = tiny_model()
    gpt, hw, n = model.transformer, 6, 5
    got = sample_long(model, n, 2, cond=torch.tensor([1, 3]), temporal_sample_pos=p, greedy=True,
                      return_ids=True)
    cond = torch.tensor([[1], [3]])
    ref = greedy_uncached(gpt, cond, p * hw)  # first p frames: one short sample
    for f in range(p, n):
        window = torch.cat([cond, ref[:, (f - p) * hw : f * hw]], dim=1)
        ref = torch.cat([ref, greedy_uncached(gpt, window, hw)], dim=1)
    assert got.shape == (2, n, 2, 3)
    assert torch.equal(got.flatten(1), ref)


def test_spatial_window_greedy_equals_uncached():
    model = tiny_model(cond_type="none", n_cond_vocab=0, latent_shape=(2, 2, 3))
    gpt = model.transformer
    H, W, n = 3, 5, 3
    got = sample_long(model, n, 1, temporal_sample_pos=1, greedy=True, sample_resolution=(H, W),
                      return_ids=True)
    ref = torch.zeros(1, n, H, W, dtype=torch.long)
    with torch.no_grad():
        for f in range(n):
            for y in range(H):
                for x in range(W):
                    oy, ox = spatial_origin(y, x, (H, W), (2, 3))
                    past = ref[:, max(0, f - 1) : f, oy : oy + 2, ox : ox + 3].reshape(1, -1)
                    cur = ref[:, f, oy : oy + 2, ox : ox + 3].reshape(1, -1)[:, : (y - oy) * 3 + (x - ox)]
                    window = torch.cat([torch.zeros(1, 1, dtype=torch.long), past, cur], dim=1)
                    ref[:, f, y, x] = gpt(window)[:, -1].argmax(-1)
    assert torch.equal(got, ref)


def test_shapes_and_options():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    codes = sample_short(model, 3, cond=2, top_k=5, top_p=0.9, temperature=0.8, generator=g)
    assert codes.shape == (3, 3, 2, 3) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 9
    again = sample_short(model, 3, cond=2, top_k=5, top_p=0.9, temperature=0.8,
                         generator=torch.Generator().manual_seed(0))
    assert torch.equal(codes, again)
    prefix = torch.randint(0, 9, (3, 1, 2, 3))
    cont = sample_short(model, 3, cond=[0, 1, 2], prefix_codes=prefix)
    assert torch.equal(cont[:, :1], prefix)
    assert sample_long(model, 2, 2, cond=1, temporal_sample_pos=2).shape == (2, 2, 2, 3)  # shorter than p
    assert sample_long(model, 7, 2, cond=1, sample_resolution=(3, 4), top_k=3).shape == (2, 7, 3, 4)
    bf16 = sample_short(model, 2, cond=1, dtype=torch.bfloat16)
    assert bf16.shape == (2, 3, 2, 3)
    with pytest.raises(ValueError, match="temporal_sample_pos"):
        sample_long(model, 6, 1, cond=1, temporal_sample_pos=3)
    with pytest.raises(ValueError, match="smaller"):
        sample_long(model, 6, 1, cond=1, sample_resolution=1)
    long_prefix = sample_long(model, 6, 3, cond=1, prefix_codes=prefix, greedy=True)
    assert torch.equal(long_prefix[:, :1], prefix)


def test_benchmark_smoke(load_script):
    """The benchmark runs on a tiny model; our greedy tokens equal the release-style sampler's."""
    bench = load_script("benchmarks/bench_sampling.py")
    rows = bench.main(["--n_layer", "1", "--n_embd", "16", "--n_head", "2", "--n_codes", "12",
                       "--n_classes", "3", "--latent", "2", "2", "3", "--long_frames", "3",
                       "--temporal_sample_pos", "1", "--device", "cpu", "--batch_sizes", "1", "2",
                       "--repeats", "1", "--top_k", "5", "--top_p", "0.9", "--threads", "1",
                       "--impls", "eager"])
    assert [(r["B"], r["mode"], r["dtype"]) for r in rows] == [
        (b, m, d) for b in (1, 2) for m in ("short", "long") for d in ("fp32", "bf16")]
    assert all(r["greedy_eager"] for r in rows)  # greedy tokens of both samplers agree
    assert all(r["wall"] > 0 and r["base"] > 0 and r["bound_ms"] > 0 for r in rows)
    assert {r["steps"] for r in rows if r["mode"] == "long"} == {3 * 6}  # 3 frames of 2 x 3 tokens
    assert all(0 <= r["bf16_argmax_differs"] <= 1 for r in rows)


def test_baseline_filter_is_the_reference_rule():
    """The release-style in-place filter (the benchmark's baseline) keeps what filter_logits keeps."""
    from tats.sampling import filter_logits

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0)) * 2
    for k, p in ((5, 1.0), (20, 0.7), (0, 0.5)):
        assert torch.equal(baseline_filter(logits.clone(), k, p), filter_logits(logits, k or None, p))
