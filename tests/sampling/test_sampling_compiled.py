"""Compiled decoding (tats.sampling.compiled) and the draw from given uniforms it uses.

Compiling costs seconds per graph (C++ kernels built by inductor), so the compiled tests share one
fixture model and one batch size, and cover greedy parity with the release, seeded reproducibility,
cache reuse across batches and rebuilding after a weight update.
"""

from __future__ import annotations

import pytest
import torch

from tats.gpt.load import load_transformer
from tats.sampling import sample_long, sample_short
from tats.sampling.compiled import decoder_for, float32_step_weights
from tats.sampling.filtering import DrawRule, draw_full_with_uniform, draw_with_uniform, filter_logits

pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------- the draw from uniforms
@pytest.mark.parametrize("rule", [DrawRule(), DrawRule(top_k=5), DrawRule(top_k=5, top_p=0.6),
                                  DrawRule(top_p=0.5), DrawRule(temperature=2.0, top_k=7, top_p=0.9)])
def test_draw_with_uniform_follows_the_full_filter(rule):
    """Frequencies over a grid of uniforms equal the full filter's probabilities (inverse CDF rule)."""
    logits = torch.randn(1, 40, generator=torch.Generator().manual_seed(3)) * 2
    n = 20000
    u = (torch.arange(n, dtype=torch.float32) + 0.5) / n  # evenly spread: the CDF, read off exactly
    tokens, tied = draw_with_uniform(logits.expand(n, -1), u, rule)
    assert not tied.any()
    freq = torch.bincount(tokens, minlength=40).float() / n
    want = filter_logits(logits / rule.temperature, rule.top_k or None,
                         rule.top_p if rule.top_p < 1 else None).softmax(-1)[0]
    assert (freq - want).abs().max() < 2 / n + 1e-6  # each bin is off by at most one grid step


def test_draw_with_uniform_flags_ties_outside_the_k():
    logits = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.0], [3.0, 2.5, 2.0, 1.0, 0.0]])
    tokens, tied = draw_with_uniform(logits, torch.tensor([0.99, 0.99]), DrawRule(top_k=3))
    # row 0: the 3rd largest (2.0) is tied with... no: 3, 2, 2 are the top 3 and nothing else is 2.0
    assert tied.tolist() == [False, False]
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, 0.0]])  # top-2 = {3, one of the 2s}: the others tie
    u = torch.tensor([0.999])
    tokens, tied = draw_with_uniform(logits, u, DrawRule(top_k=2))
    assert tied.tolist() == [True]
    full = draw_full_with_uniform(logits, u, DrawRule(top_k=2))  # the full filter keeps every 2.0
    assert full.item() == 3  # u near 1 lands on the last kept token in id order
    exact, tied = draw_with_uniform(logits, u, DrawRule(top_k=2), exact_ties=True)
    assert exact.item() == 3 and not tied.any()
    greedy, _ = draw_with_uniform(torch.tensor([[0.0, 5.0, 1.0]]), torch.zeros(1), DrawRule(greedy=True))
    assert greedy.item() == 1


def test_draw_rule_of_sampling_settings():
    assert DrawRule.of(top_k=None, top_p=0.8, release_compat=True) == DrawRule()  # top_p ignored
    assert DrawRule.of(top_k=0, top_p=0.8, release_compat=True) == DrawRule(top_p=0.8)
    assert DrawRule.of(top_k=None, top_p=0.8) == DrawRule(top_p=0.8)
    with pytest.raises(ValueError, match="temperature"):
        DrawRule.of(temperature=0)


def test_decoding_logits_are_float32_under_bf16_autocast():
    """A bf16 head rounds logits into ties (top-k then keeps more than k): decoding runs it in float32."""
    from tats.gpt import GPT, GPTConfig

    cfg = GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16, n_codes=50,
                    latent_shape=(2, 2, 2))
    gpt = GPT(cfg).eval()
    gpt.set_kv_cache(2, dtype=torch.bfloat16)
    idx = torch.randint(0, 50, (2, 3))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = gpt(idx, input_pos=torch.arange(3), last_only=True)
    assert logits.dtype == torch.float32 and gpt.blocks[0].attn.kv_cache.k.dtype == torch.bfloat16


# ------------------------------------------------------------------------------ compiled decoding
@pytest.fixture(scope="module")
def release_model(fixtures_dir_module):
    return load_transformer(fixtures_dir_module / "gpt_label.ckpt", with_vqgan=False)


@pytest.fixture(scope="module")
def fixtures_dir_module():
    from tests.conftest import FIXTURES

    if not FIXTURES.is_dir():
        pytest.skip(f"release fixtures not found at {FIXTURES}")
    return FIXTURES


def test_compiled_greedy_equals_the_release(release_model, fixtures_dir_module):
    io = torch.load(fixtures_dir_module / "gpt_label_io.pt")
    labels = io["cond"][:, 0]
    ids = sample_short(release_model, 2, cond=labels, greedy=True, return_ids=True, compile=True)
    assert torch.equal(ids, io["greedy_ids"])
    long_ids = sample_long(release_model, 5, 2, cond=labels, temporal_sample_pos=1, greedy=True,
                           return_ids=True, compile=True)
    assert torch.equal(long_ids, io["long_greedy_ids"])


def test_compiled_sampling_is_seeded_and_reuses_its_graphs_and_cache(release_model):
    kw = dict(cond=torch.tensor([1, 3]), top_k=10, top_p=0.9, compile=True)
    a = sample_short(release_model, 2, generator=torch.Generator().manual_seed(0), **kw)
    decoder = decoder_for(release_model.transformer, 2, DrawRule(top_k=10, top_p=0.9))
    cache = release_model.transformer.blocks[0].attn.kv_cache.k
    b = sample_short(release_model, 2, generator=torch.Generator().manual_seed(0), **kw)
    c = sample_short(release_model, 2, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the second batch ran on the same decoder and the same cache tensors: nothing was rebuilt
    assert decoder_for(release_model.transformer, 2, DrawRule(top_k=10, top_p=0.9)) is decoder
    assert release_model.transformer.blocks[0].attn.kv_cache.k is cache
    # the draws follow the same uniforms as the uncompiled rule: replay them eagerly
    g = torch.Generator().manual_seed(0)
    u = torch.rand(128, 2, generator=g)
    gpt = release_model.transformer
    prefix = release_model.cond_tokens(torch.tensor([1, 3]), 2)
    with torch.no_grad():
        gpt.set_kv_cache(2)
        logits = gpt(prefix, input_pos=torch.arange(1), last_only=True)[:, -1]
        tokens = []
        for i in range(128):
            tok, tied = draw_with_uniform(logits, u[i], DrawRule(top_k=10, top_p=0.9))
            assert not tied.any()
            tokens.append(tok)
            if i < 127:
                logits = gpt(tok[:, None], input_pos=torch.tensor([i + 1]), last_only=True)[:, -1]
    eager = release_model.ids_to_codes(torch.stack(tokens, 1), release_model.config.latent_shape)
    assert torch.equal(eager, a)


def test_compiled_decoder_is_rebuilt_when_the_weights_change(release_model):
    gpt = release_model.transformer
    rule = DrawRule(greedy=True)
    before = sample_short(release_model, 2, cond=torch.tensor([0, 1]), greedy=True, compile=True)
    decoder = decoder_for(gpt, 2, rule)
    state = {k: v.clone() for k, v in gpt.state_dict().items()}
    try:
        with torch.no_grad():
            gpt.head.weight.mul_(-1.0)  # in place, as an optimizer step would: the argmax moves
        after = sample_short(release_model, 2, cond=torch.tensor([0, 1]), greedy=True, compile=True)
        assert decoder_for(gpt, 2, rule) is not decoder
        eager = sample_short(release_model, 2, cond=torch.tensor([0, 1]), greedy=True)
        assert torch.equal(after, eager) and not torch.equal(after, before)
    finally:
        gpt.load_state_dict(state)


def test_compiled_bf16_step_keeps_float32_weights_over_a_bf16_cache(release_model):
    """Without AMX a compiled bf16 step runs in float32 over the bf16 cache its prefill wrote: its logits
    equal an eager float32 step over that same cache within float32 rounding (a step under bf16 autocast
    is off by bf16 rounding, about 1e-2 of the logits' range, which this rejects)."""
    if not float32_step_weights(torch.device("cpu"), torch.bfloat16):
        pytest.skip("this CPU has AMX: its compiled bf16 step runs under autocast")
    gpt = release_model.transformer
    decoder = decoder_for(gpt, 2, DrawRule(greedy=True), torch.bfloat16)
    prefix = release_model.cond_tokens(torch.tensor([1, 3]), 2)  # (2, P)
    P, u = prefix.shape[1], torch.zeros(2)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), decoder.settings():
        token = decoder.prefill(prefix, torch.arange(P), P, u)
        decoder.step(token, torch.arange(P, P + 1), P + 1, u)
    assert gpt.blocks[0].attn.kv_cache.k.dtype == torch.bfloat16
    compiled = decoder.logits.clone()
    with torch.no_grad():  # the same cache tensors, the eager explicit-math step, no autocast
        eager = gpt(token[:, None], input_pos=torch.arange(P, P + 1), last_only=True, kv_len=P + 1)[:, -1]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = gpt(token[:, None], input_pos=torch.arange(P, P + 1), last_only=True, kv_len=P + 1)[:, -1]
    scale = eager.abs().max()
    assert (compiled - eager).abs().max() <= 1e-5 * scale
    assert (bf16 - eager).abs().max() > 1e-3 * scale  # the rule would catch a bf16 step


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_compiled_decoding_never_syncs_and_matches_the_cpu(fixtures_dir):
    io = torch.load(fixtures_dir / "gpt_label_io.pt")
    model = load_transformer(fixtures_dir / "gpt_label.ckpt", with_vqgan=False).cuda()
    labels = io["cond"][:, 0].cuda()
    sample_short(model, 2, cond=labels, greedy=True, compile=True)  # compile and record the graphs
    torch.cuda.set_sync_debug_mode("error")  # a device-to-host sync in the token loop raises
    try:
        ids = sample_short(model, 2, cond=labels, greedy=True, return_ids=True, compile=True)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(ids.cpu(), io["greedy_ids"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_eager_token_loop_never_syncs(fixtures_dir):
    """The cache length comes from the host and ties are settled on the device: no step waits."""
    model = load_transformer(fixtures_dir / "gpt_label.ckpt", with_vqgan=False).cuda()
    labels = torch.tensor([1, 4], device="cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    sample_short(model, 2, cond=labels, top_k=10, top_p=0.9, generator=g)  # warm-up (allocations)
    torch.cuda.set_sync_debug_mode("error")
    try:
        codes = sample_short(model, 2, cond=labels, top_k=10, top_p=0.9, generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            sample_short(model, 2, cond=labels, greedy=True, dtype=torch.bfloat16)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert codes.shape == (2, 2, 8, 8)


def test_compiled_decoders_are_bounded_and_a_smaller_batch_reuses_a_larger_one(tmp_path):
    """A ragged last batch runs on the full batch's graphs (rows padded, not a second decoder and
    cache); other draw rules at the same batch share one KV cache; at most MAX_DECODERS are kept."""
    from tats.sampling.compiled import MAX_DECODERS
    from tests.tiny_models import save_transformer

    model = load_transformer(save_transformer(tmp_path / "gpt.ckpt", "label", with_vqgan=False),
                             with_vqgan=False)
    gpt, greedy = model.transformer, DrawRule(greedy=True)
    cond = torch.tensor([0, 1, 2])
    whole = sample_short(model, 3, cond=cond, greedy=True, compile=True)
    decoder = decoder_for(gpt, 3, greedy)
    ragged = sample_short(model, 2, cond=cond[:2], greedy=True, compile=True)
    assert decoder_for(gpt, 2, greedy) is decoder and gpt._compiled_decoders == [decoder]
    assert torch.equal(ragged, sample_short(model, 2, cond=cond[:2], greedy=True))  # eager
    assert torch.equal(ragged, whole[:2])
    top_k = decoder_for(gpt, 3, DrawRule(top_k=4))
    assert top_k is not decoder and top_k.state.caches[0] is decoder.state.caches[0]  # one cache
    decoder_for(gpt, 3, DrawRule(top_k=5))
    assert MAX_DECODERS == 2 and len(gpt._compiled_decoders) == 2 and decoder not in gpt._compiled_decoders
