"""The GPU check's measurements: host syncs per training step, a sync-free token loop on CUDA graphs,
sampling and training speed as ratios to baselines run beside them. ``scripts/gpu_check.py`` runs them
after its correctness checks; each returns its line's detail or raises ``Skip`` / an error.
"""

from __future__ import annotations

import contextlib
import copy
import warnings

import torch

BASE_SIZE = ["--n_layer", "24", "--n_embd", "1024", "--n_head", "16", "--n_codes", "16384",
             "--latent", "4", "16", "16"]  # TATS-base: 24 x 1024, 16,384 codes, 1,024 tokens per clip
#: host reads per training step the guards need (tests/train/test_host_reads.py gives the rule):
#: VQGAN: one per loss guard (2) + the codebook's pair (1); fp16 adds one loss-scaler read per optimizer.
VQGAN_READS, GPT_READS = 3, 1


#: the gpu_check module that runs these checks (it sets this): its Skip and flag builders
base = None


@contextlib.contextmanager
def _cuda_syncs(device: torch.device):
    """Count CUDA's synchronizing calls (``set_sync_debug_mode("warn")``) inside the block."""
    seen: list[int] = [0]
    if device.type != "cuda":
        yield seen
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield seen
        finally:
            torch.cuda.set_sync_debug_mode(0)
    seen[0] = sum("synchroniz" in str(w.message) for w in caught)


def check_host_syncs(ctx) -> str:
    """Host reads (device syncs on a GPU) per VQGAN and GPT training step, after the first steps."""
    import train_transformer
    import train_vqgan
    from tats.gpt.lightning import TransformerModule
    from tats.vqgan.lightning import VQGANModule
    from tests.host_reads import counting_method

    fp16 = ctx.device.type == "cuda"
    precision = "16-mixed" if fp16 else "32-true"
    vq_argv = base.vqgan_argv(ctx, ctx.work / "syncs_vqgan", precision, "--max_steps", "4",
                              "--accumulate_grad_batches", "1")
    with counting_method(VQGANModule, "training_step") as vq_calls, _cuda_syncs(ctx.device) as vq_cuda:
        train_vqgan.main(vq_argv)
    gpt_argv = base.gpt_argv(ctx, ctx.work / "syncs_gpt", "--max_steps", "4", "--precision", precision)
    with counting_method(TransformerModule, "training_step") as gpt_calls:
        train_transformer.main(gpt_argv)
    vq, gpt = sum(vq_calls[-1].values()), sum(gpt_calls[-1].values())
    budget = VQGAN_READS + (2 if fp16 else 0)
    detail = (f"host reads per step: VQGAN {vq} ({precision}; {dict(vq_calls[-1])}), GPT {gpt} "
              f"(budget {budget} / {GPT_READS})")
    if ctx.device.type == "cuda":
        detail += f"; CUDA sync debug mode counted {vq_cuda[0]} syncs in {len(vq_calls)} VQGAN steps"
    assert vq <= budget and gpt <= GPT_READS, detail
    return detail


def check_sampling_sync_free(ctx) -> str:
    """Short sampling on CUDA: eager and compiled fp32 greedy equal, bf16 top-k/top-p valid, the token
    loop free of host syncs (``set_sync_debug_mode("error")``), and CUDA graphs used (no skips)."""
    from tats.gpt.load import load_transformer
    from tats.sampling import sample_short
    from tats.sampling.core import SamplingOptions, generate_tokens, kv_cache

    model = load_transformer(ctx.need("gpt_ckpt"), with_vqgan=False)
    if ctx.device.type != "cuda":
        raise base.Skip("CUDA graphs and CUDA's sync debug mode need a GPU (model loaded)")
    import torch._dynamo

    seeded = copy.deepcopy(model).to(ctx.device).eval()
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    with torch.no_grad():
        for p in seeded.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, device=ctx.device) * 0.5)
    cond = torch.arange(4, device=ctx.device) % max(model.config.n_cond_vocab, 1)
    torch._dynamo.utils.counters.clear()
    eager = sample_short(seeded, 4, cond, greedy=True, return_ids=True)
    compiled = sample_short(seeded, 4, cond, greedy=True, return_ids=True, compile=True)
    assert torch.equal(eager, compiled), "compiled fp32 greedy differs from eager"
    gpt = seeded.transformer
    prefix = cond[:, None].long()  # (B, 1): the label token
    n_new = gpt.block_size - 1
    notes = [f"fp32 greedy eager == compiled {tuple(eager.shape)}"]
    for compile_ in (False, True):
        opts = SamplingOptions(top_k=32, top_p=0.9, dtype=torch.bfloat16, compile=compile_,
                               generator=torch.Generator(device=ctx.device).manual_seed(1))
        with kv_cache(gpt, 4, torch.bfloat16, opts), torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
            generate_tokens(gpt, prefix, n_new, opts)  # warm-up: allocation, compilation
            torch.cuda.synchronize()
            torch.cuda.set_sync_debug_mode("error")
            try:
                ids = generate_tokens(gpt, prefix, n_new, opts)
            finally:
                torch.cuda.set_sync_debug_mode(0)
        assert 0 <= int(ids.min()) and int(ids.max()) < gpt.config.vocab_size, "bf16 ids out of range"
        notes.append(f"bf16 top-k/top-p {'compiled' if compile_ else 'eager'}: {n_new} tokens, 0 syncs")
    skips = int(torch._dynamo.utils.counters["inductor"]["cudagraph_skips"])
    assert skips == 0, f"inductor skipped CUDA graphs {skips} times; " + "; ".join(notes)
    return "; ".join(notes) + "; cudagraph_skips 0"


def check_speed_sampling(ctx) -> str:
    """TATS-base tokens/s at batch 1, 16, 48 (bf16 eager and compiled) against the release-style sampler
    of the same run, each with its distance to the memory-bandwidth bound; the masked decoder against the
    GPT at batch 16."""
    import bench_decoders
    import bench_sampling

    argv = [*BASE_SIZE, "--batch_sizes", "1", "16", "48", "--modes", "short", "--dtypes", "bf16", "--impls",
            "eager", "compiled", "--repeats", "1", "--check_tokens", "16", "--argmax_positions", "64",
            "--device", "cuda"]
    dec_argv = [*BASE_SIZE, "--batch_size", "16", "--repeats", "1", "--device", "cuda"]
    if ctx.device.type != "cuda":
        raise base.Skip("TATS-base speed is measured on a GPU")
    rows = bench_sampling.main(argv)
    parts = []
    for r in rows:
        tokens = r["B"] * r["steps"]
        parts.append(f"B{r['B']} {r['impl']} {tokens / r['wall']:.0f} tok/s ({r['base'] / r['wall']:.1f}x "
                     f"release, {r['wall'] / r['steps'] * 1e3 / r['bound_ms']:.1f}x bound)")
    dec = bench_decoders.main(dec_argv)
    ratio = dec["masked"]["tokens_per_s"] / dec["autoregressive"]["tokens_per_s"]
    parts.append(f"masked B16 {dec['masked']['tokens_per_s']:.0f} tok/s = {ratio:.1f}x the GPT's")
    return "; ".join(parts)


def check_train_step_ratios(ctx) -> str:
    """Step time of each precision and option as a ratio to fp32 eager, measured in the same run
    (``benchmarks/bench_train_step.py``, the issue preset, random LPIPS weights)."""
    import bench_train_step

    vq = ["ours:fp32", "ours:fp16", "ours:bf16+ckpt+cl"]
    gpt = ["ours:fp32", "ours:bf16", "ours:bf16+compile", "ours:fp16"]
    if ctx.device.type != "cuda":
        raise base.Skip("fp16 and the step-time ratios are measured on a GPU")
    parts = []
    for model, variants in (("vqgan", vq), ("gpt", gpt)):
        runs = bench_train_step.main(["--model", model, "--variants", *variants, "--device", "cuda",
                                      "--warmup", "3", "--steps", "5", "--random_lpips"])[model]
        walls = {v: runs[v][0].get("wall", float("nan")) for v in variants}
        errors = [f"{v}: {runs[v][0]['error']}" for v in variants if "error" in runs[v][0]]
        assert not errors, "; ".join(errors)
        parts.append(f"{model} fp32 {walls['ours:fp32'] * 1e3:.0f} ms/step, " + ", ".join(
            f"{v[5:]} {walls['ours:fp32'] / walls[v]:.2f}x" for v in variants[1:]))
    return "; ".join(parts) + " (speed-up vs fp32 eager)"


CHECKS = [("host-syncs", check_host_syncs), ("sampling-sync-free", check_sampling_sync_free),
          ("speed-sampling", check_speed_sampling), ("train-step-ratios", check_train_step_ratios)]
