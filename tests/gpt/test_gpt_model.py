"""GPT: release state-dict layout, mask rule, SDPA vs explicit attention, cached vs uncached decoding."""

from __future__ import annotations

import ast
import re

import pytest
import torch

from tats.gpt import GPT, GPTConfig, build_mask
from tests.numerics import assert_close_to_scale

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**kw) -> GPTConfig:
    base = dict(vocab_size=21, block_size=24, n_layer=2, n_head=2, n_embd=16, n_codes=21,
                latent_shape=(2, 3, 4))
    base.update(kw)
    return GPTConfig(**base)


def randomized(gpt: GPT) -> GPT:
    """Non-trivial weights (positions and biases are zero at init)."""
    with torch.no_grad():
        for p in gpt.parameters():
            p.normal_(0, 0.3)
    return gpt.eval()


def read_tsv(path):
    lines = path.read_text().splitlines()
    config = ast.literal_eval(re.search(r"config: (\{.*\})", lines[0]).group(1))
    rows = {}
    for line in lines:
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows[key] = (tuple(ast.literal_eval(shape)), dtype)
    return config, rows


@pytest.mark.parametrize("name", ["gpt_label_state_dict.tsv", "gpt_uncond_state_dict.tsv"])
def test_state_dict_matches_release_layout(reference_dir, name):
    n_codes = 64  # the VQGAN of vqgan_state_dict.tsv
    cfg, rows = read_tsv(reference_dir / name)
    n_cond_vocab = 0 if cfg["unconditional"] else cfg["class_cond_dim"]
    gpt = GPT(GPTConfig(vocab_size=n_codes + n_cond_vocab, block_size=cfg["block_size"],
                        n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"],
                        n_unmasked=cfg["n_unmasked"], n_codes=n_codes, n_cond_vocab=n_cond_vocab))
    ours = {f"transformer.{k}": (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in
            gpt.state_dict().items()}
    assert ours == rows


def test_build_mask_rule():
    assert torch.equal(build_mask(7, 0)[0, 0], torch.tril(torch.ones(7, 7)))
    B, n = 14, 4
    m = build_mask(B, n)[0, 0]
    assert m.shape == (B, B)
    for q in range(B):
        for k in range(B):
            first, last = k <= n, k >= B - (n - 1)
            if q >= B - (n - 1):  # the last n-1 queries see only the two ends
                expect = first or last
            else:
                expect = k <= q or first or last
            assert m[q, k] == float(expect), (q, k)
    with pytest.raises(ValueError, match="n_unmasked"):
        build_mask(6, 4)


@pytest.mark.parametrize("n_unmasked", [0, 4])
def test_sdpa_equals_explicit_attention(n_unmasked):
    gpt = randomized(GPT(tiny_config(n_unmasked=n_unmasked)))
    idx = torch.randint(0, 21, (3, 24))
    with torch.no_grad():
        fast = gpt(idx)
        gpt.set_attention_impl(False)
        slow = gpt(idx)
    assert fast.shape == (3, 24, 21)
    assert_close_to_scale(fast, slow, max_ulps=16)  # a missing 1/sqrt(d) or mask: >1e5


@pytest.mark.parametrize("static_shapes", [False, True])
def test_cached_decoding_equals_full_forward(static_shapes):
    gpt = randomized(GPT(tiny_config()))
    idx = torch.randint(0, 21, (2, 24))
    with torch.no_grad():
        full = gpt(idx)  # (B, T, V)
        gpt.set_kv_cache(2, static_shapes=static_shapes)
        pos = torch.arange(24)
        steps = [gpt(idx[:, :5], input_pos=pos[:5])]  # batched prefill (causal fast path)
        steps.append(gpt(idx[:, 5:9], input_pos=pos[5:9]))  # a later chunk (boolean-mask rows)
        for t in range(9, 24):
            steps.append(gpt(idx[:, t : t + 1], input_pos=pos[t : t + 1]))
        cached = torch.cat(steps, dim=1)
        last = gpt(idx[:, :3], input_pos=pos[:3], last_only=True)  # the cache is reusable from 0
        # last_only prefills (the last block computes one position but writes every key and value):
        # a causal square, then a chunk with mask rows, then steps that read what both wrote
        chunk = gpt(idx[:, 3:9], input_pos=pos[3:9], last_only=True)
        after = torch.cat([gpt(idx[:, t : t + 1], input_pos=pos[t : t + 1]) for t in range(9, 24)], dim=1)
    assert_close_to_scale(cached, full, max_ulps=16)  # float32 reordering: measured < 4 (tests/numerics.py)
    assert_close_to_scale(last[:, 0], full[:, 2], max_ulps=16)
    assert_close_to_scale(chunk[:, 0], full[:, 8], max_ulps=16)
    assert_close_to_scale(after, full[:, 9:], max_ulps=16)  # a key or value left unwritten: far off
    assert torch.equal(cached.argmax(-1), full.argmax(-1))
    assert not any("kv_cache" in k for k in gpt.state_dict())  # non-persistent buffers


def test_cached_greedy_tokens_equal_uncached_loop():
    gpt = randomized(GPT(tiny_config()))
    prefix = torch.tensor([[3], [7]])
    with torch.no_grad():
        seq = prefix.clone()
        for _ in range(12):  # uncached: full forward every step
            seq = torch.cat([seq, gpt(seq)[:, -1].argmax(-1, keepdim=True)], dim=1)
        gpt.set_kv_cache(2)
        pos = torch.arange(24)
        out = [prefix]
        logits = gpt(prefix, input_pos=pos[:1], last_only=True)
        for i in range(12):
            tok = logits[:, -1].argmax(-1, keepdim=True)
            out.append(tok)
            logits = gpt(tok, input_pos=pos[1 + i : 2 + i], last_only=True)
    assert torch.equal(torch.cat(out, dim=1), seq)


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_interpolation_mask_cached_ends_then_middle(use_sdpa):
    """n_unmasked model: prefill both ends at their absolute positions, then the middle one by one."""
    n = 4
    gpt = randomized(GPT(tiny_config(n_unmasked=n)))
    gpt.set_attention_impl(use_sdpa)
    B = 24
    idx = torch.randint(0, 21, (2, B))
    pos = torch.arange(B)
    with torch.no_grad():
        full = gpt(idx)
        gpt.set_kv_cache(2)
        ends_pos = torch.cat([pos[B - (n - 1) :], pos[: n + 1]])
        ends = gpt(idx[:, ends_pos], input_pos=ends_pos)
        middle = [gpt(idx[:, p : p + 1], input_pos=pos[p : p + 1]) for p in range(n + 1, B - (n - 1))]
    assert_close_to_scale(ends, full[:, ends_pos], max_ulps=16)
    assert_close_to_scale(torch.cat(middle, 1), full[:, n + 1 : B - (n - 1)], max_ulps=16)


def test_stored_mask_wins_over_config():
    src = randomized(GPT(tiny_config(n_unmasked=4)))
    dst = GPT(tiny_config(n_unmasked=0))
    assert dst.is_causal
    dst.load_state_dict(src.state_dict())
    assert not dst.is_causal
    idx = torch.randint(0, 21, (1, 24))
    with torch.no_grad():
        torch.testing.assert_close(dst.eval()(idx), src(idx))
    dst.load_state_dict(randomized(GPT(tiny_config())).state_dict())
    assert dst.is_causal


def test_config_round_trip_and_errors():
    cfg = tiny_config(cond_type="label", n_cond_vocab=5)
    again = GPTConfig.from_dict({**cfg.to_dict(), "unknown_flag": 1})
    assert again == cfg and again.latent_shape == (2, 3, 4)
    assert cfg.tokens_per_frame == 12 and cfg.n_latent_tokens == 24
    with pytest.raises(ValueError, match="cond_type"):
        tiny_config(cond_type="video")
    gpt = GPT(cfg)
    with pytest.raises(ValueError, match="block size"):
        gpt(torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(RuntimeError, match="set_kv_cache"):
        gpt(torch.zeros(1, 1, dtype=torch.long), input_pos=torch.tensor([0]))


@pytest.mark.parametrize("batch_size", [1, 2, 4, 16])
def test_cpu_decode_head_is_the_head_matmul(batch_size):
    """Both CPU layouts (transposed copy; oneDNN-packed from batch 4) give the plain head's logits."""
    from tats.gpt.model import cpu_decode_head

    weight = torch.randn(300, 32)
    head = cpu_decode_head(weight, batch_size)
    for rows in (batch_size, 1):  # the batch it was packed for, and a smaller last batch
        h = torch.randn(rows, 1, 32)
        assert_close_to_scale(head(h), h @ weight.t(), max_ulps=16)


def test_decoding_copies_follow_the_weights_and_stay_out_of_the_state_dict():
    """Fused QKV and the transposed head exist only while a cache is set, built from current weights."""
    gpt = randomized(GPT(tiny_config()))
    keys = set(gpt.state_dict())
    idx = torch.randint(0, 21, (2, 6))
    pos = torch.arange(24)
    with torch.no_grad():
        gpt.set_kv_cache(2)
        attn = gpt.blocks[0].attn
        w, b = attn.fused_qkv
        assert torch.equal(w, torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]))
        assert torch.equal(b, torch.cat([attn.query.bias, attn.key.bias, attn.value.bias]))
        h = torch.randn(2, 3, gpt.config.n_embd)
        assert_close_to_scale(gpt.decode_head(h), gpt.head(h), max_ulps=16)
        assert set(gpt.state_dict()) == keys
        gpt.clear_kv_cache()
        assert attn.fused_qkv is None and gpt.decode_head is None
        for p in gpt.parameters():  # new weights: a new cache must use them
            p.mul_(0.5)
        full = gpt(idx)
        gpt.set_kv_cache(2)
        cached = gpt(idx, input_pos=pos[:6])
    assert_close_to_scale(cached, full, max_ulps=16)
