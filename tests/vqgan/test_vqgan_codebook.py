"""EMA codebook: search, ties, EMA + Laplace math, restarts, init flag, distributed hooks, fp32."""

from __future__ import annotations

import math

import pytest
import torch

from tats.vqgan.codebook import Codebook, nearest_codes
from tests.reference_impls import OneHotCodebook, onehot_nearest_codes


def _toy(restart: bool = False, **kw) -> Codebook:
    """3 codes of width 1 at 0, 10, 20 with unit counts, already initialised."""
    cb = Codebook(3, 1, no_random_restart=not restart, restart_thres=1.0, **kw).train()
    cb.embeddings.copy_(torch.tensor([[0.0], [10.0], [20.0]]))
    cb.z_avg.copy_(cb.embeddings)
    cb.N.fill_(1.0)
    cb.initialized.fill_(True)
    return cb


def _z(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, 1, -1)  # (B=1, D=1, t=1, h=1, w=n)


@pytest.mark.parametrize("chunk", [1, 7 * 16, 1 << 24])
def test_chunked_search_matches_full_distance(chunk):
    flat, emb = torch.randn(300, 6), torch.randn(16, 6)
    assert torch.equal(nearest_codes(flat, emb, chunk_elements=chunk), onehot_nearest_codes(flat, emb))


def test_ties_go_to_lowest_index():
    emb = torch.tensor([[1.0, 0.0], [5.0, 5.0], [1.0, 0.0], [-1.0, 0.0]])  # 0 == 2; 0 and 3 equidistant
    flat = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.2, 0.1], [-1.0, 0.0]])
    assert nearest_codes(flat, emb, chunk_elements=4).tolist() == [0, 0, 0, 3]


def test_ema_laplace_commitment_perplexity_by_hand():
    cb = _toy()
    out = cb(_z([1.0, 2.0, 11.0]))  # assigned to codes 0, 0, 1
    assert out["encodings"].flatten().tolist() == [0, 0, 1]
    # N = 0.99 * 1 + 0.01 * counts(2, 1, 0); z_avg = 0.99 * (0, 10, 20) + 0.01 * sums(3, 11, 0)
    torch.testing.assert_close(cb.N, torch.tensor([1.01, 1.00, 0.99]))
    torch.testing.assert_close(cb.z_avg.flatten(), torch.tensor([0.03, 10.01, 19.8]))
    # embeddings = z_avg / ((N + 1e-7) / (3 + 3e-7) * 3), worked out in decimal arithmetic
    torch.testing.assert_close(cb.embeddings.flatten(), torch.tensor([0.02970297033, 10.01, 19.99999998]),
                               rtol=1e-6, atol=1e-7)
    # commitment = 0.25 * mean((1-0)^2, (2-0)^2, (11-10)^2) = 0.5; the lookup uses the pre-update codes
    assert out["commitment_loss"].item() == pytest.approx(0.5, rel=1e-6)
    assert out["embeddings"].flatten().tolist() == [0.0, 0.0, 10.0]
    assert out["perplexity"].item() == pytest.approx(1.8898815748, rel=1e-5)  # exp(H(2/3, 1/3))
    assert out["usage"].item() == pytest.approx(2 / 3)


def test_eval_mode_changes_nothing():
    cb = _toy(restart=True).eval()
    before = {k: v.clone() for k, v in cb.state_dict().items()}
    cb(_z([1.0, 2.0, 11.0]))
    assert all(torch.equal(before[k], v) for k, v in cb.state_dict().items())


def test_restart_replaces_only_rare_codes_with_encoder_outputs():
    cb = _toy(restart=True)
    cb(_z([1.0, 2.0, 11.0]))  # N becomes (1.01, 1.00, 0.99): only code 2 is below restart_thres 1.0
    torch.testing.assert_close(cb.embeddings[:2].flatten(), torch.tensor([0.02970297033, 10.01]))
    assert cb.embeddings[2].item() in (1.0, 2.0, 11.0)  # 3 vectors >= 3 codes: an exact output, no noise
    torch.testing.assert_close(cb.N, torch.tensor([1.01, 1.00, 0.99]))  # counts are not reset


def test_restart_tiles_with_noise_when_batch_is_smaller_than_codebook():
    d, n_codes = 4, 16
    cb = Codebook(n_codes, d)
    flat = torch.randn(3, d)  # fewer vectors than codes
    picks = cb.random_vectors(flat, n_codes)
    assert picks.shape == (n_codes, d)
    nearest = (picks[:, None] - flat[None]).norm(dim=-1).min(dim=1).values  # (16,)
    noise_std = 0.01 / math.sqrt(d)
    assert (nearest > 0).all() and (nearest < 8 * noise_std * math.sqrt(d)).all()
    assert len({tuple(p.tolist()) for p in picks}) == n_codes  # distinct picks


def test_data_dependent_init_and_flag_travel_through_state_dict():
    cb = Codebook(4, 2).train()
    assert cb.state_dict()["initialized"].item() is False
    z = torch.randn(2, 2, 1, 2, 3)  # 12 vectors of width 2
    flat = z.permute(0, 2, 3, 4, 1).reshape(-1, 2)
    cb._init_from(flat)
    assert cb.initialized.item() and torch.equal(cb.N, torch.ones(4))
    rows = {tuple(r.tolist()) for r in flat}
    assert all(tuple(e.tolist()) in rows for e in cb.embeddings)  # codes are encoder outputs
    # a resumed codebook keeps its codes: the flag comes back from the state dict
    resumed = Codebook(4, 2).train()
    resumed.load_state_dict(cb.state_dict())
    assert resumed.initialized.item()
    emb = resumed.embeddings.clone()
    resumed.no_random_restart = True
    resumed(z)
    assert torch.allclose(resumed.embeddings, emb, atol=0.5)  # EMA moved them a little, no re-init


def test_release_state_dict_without_flag_counts_as_initialised():
    release_sd = {k: v for k, v in Codebook(5, 3).state_dict().items() if k != "initialized"}
    cb = Codebook(5, 3)
    cb.load_state_dict(release_sd, strict=True)
    assert cb.initialized.item()


def test_first_training_step_initialises_from_batch():
    cb = Codebook(4, 2, no_random_restart=True).train()
    z = torch.randn(1, 2, 2, 2, 2)
    cb(z)
    assert cb.initialized.item()
    # after init N = 1, then one EMA step: N = 0.99 + 0.01 * counts; counts sum to the 8 vectors
    assert cb.N.sum().item() == pytest.approx(4 * 0.99 + 0.08)


def test_injected_distributed_hooks():
    calls = {"reduce": 0, "broadcast": 0}

    def all_reduce(t):  # two identical ranks
        calls["reduce"] += 1
        t.mul_(2)

    def broadcast(t, src):
        calls["broadcast"] += 1
        assert src == 0

    cb = _toy(restart=True, all_reduce_fn=all_reduce, broadcast_fn=broadcast)
    cb(_z([1.0, 2.0, 11.0]))
    assert calls == {"reduce": 3, "broadcast": 1}  # non-finite flag, counts, sums; one restart draw
    torch.testing.assert_close(cb.N, torch.tensor([1.03, 1.01, 0.99]))  # doubled counts


def test_nonfinite_batch_leaves_the_statistics_untouched():
    cb = _toy(restart=True)
    before = {k: v.clone() for k, v in cb.state_dict().items()}
    cb(_z([1.0, float("nan"), 11.0]))
    for k, v in cb.state_dict().items():
        assert torch.equal(v, before[k]), k
    cb(_z([1.0, 2.0, 11.0]))  # a finite batch updates them again
    assert not torch.equal(cb.N, before["N"])


def test_straight_through_gradient():
    cb = _toy()
    z = _z([1.0, 2.0, 11.0]).requires_grad_()
    out = cb(z)
    (out["embeddings"] * torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 1, 1, 3)).sum().backward()
    assert z.grad.flatten().tolist() == [1.0, 2.0, 3.0]


def test_fp32_under_bf16_autocast():
    torch.manual_seed(1)
    cb = Codebook(32, 8).train()
    cb.initialized.fill_(True)
    z = torch.randn(2, 8, 2, 3, 3)
    ref = cb.codes(z)  # fp32, no autocast
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = cb(z)
    assert torch.equal(out["encodings"], ref)  # distances were not computed in bf16
    assert out["commitment_loss"].dtype == torch.float32 and out["embeddings"].dtype == torch.float32
    assert cb.N.dtype == torch.float32 and cb.embeddings.dtype == torch.float32
    # a bf16 latent (bf16 model) is upcast, searched in fp32, and handed back in bf16
    zb = z.bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_b = cb.eval()(zb)
    assert out_b["embeddings"].dtype == torch.bfloat16
    assert torch.equal(out_b["encodings"], cb.codes(zb.float()))


def test_benchmark_baseline_computes_the_same_update():
    """benchmarks/bench_vqgan.py compares against a one-hot codebook: it must do the same maths."""
    ours, base = Codebook(32, 8, no_random_restart=True), OneHotCodebook(32, 8, no_random_restart=True)
    base.load_state_dict(ours.state_dict())
    ours.initialized.fill_(True)
    base.initialized.fill_(True)
    z = torch.randn(2, 8, 2, 4, 4)
    a, b = ours.train()(z), base.train()(z)
    assert torch.equal(a["encodings"], b["encodings"])
    torch.testing.assert_close(a["perplexity"], b["perplexity"])
    for name in ("N", "z_avg", "embeddings"):
        torch.testing.assert_close(getattr(ours, name), getattr(base, name))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_autocast_fp16_codes_match_fp32():
    cb = Codebook(64, 16).cuda().train()
    cb.initialized.fill_(True)
    z = torch.randn(2, 16, 2, 8, 8, device="cuda")
    expected = cb.codes(z.half().float())  # before the EMA step moves the codes
    with torch.autocast("cuda", dtype=torch.float16):
        out = cb(z.half())
    assert torch.equal(out["encodings"], expected) and out["embeddings"].dtype == torch.float16
    assert cb.embeddings.dtype == torch.float32 and out["commitment_loss"].dtype == torch.float32
