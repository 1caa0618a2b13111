"""Sampling throughput: our static-KV-cache sampler vs a concatenating-cache baseline.

The baseline, written here, decodes the way the release's sampler does: the past keys/values of
every step are kept as a list, concatenated into one tensor at every step and concatenated again
with the new key/value in every layer (``torch.cat``), and the head computes full-vocabulary logits
at every input position (the whole window at each prefill). Both run the same weights in the same
process, greedy, so their tokens must agree (checked).

    python benchmarks/bench_sampling.py                      # CPU: 4 layers x 256, 4x16x16 latents
    python benchmarks/bench_sampling.py --device cuda --dtype bf16 --compile --n_layer 24 --n_embd 1024

Prints tokens/s and latent/pixel frames/s of short (one 1024-token window) and long (sliding
window, ``--long_frames`` latent frames with ``temporal_sample_pos`` 1) sampling, and the ratios.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from einops import rearrange

from tats.gpt import GPT, GPTConfig
from tats.gpt.load import VideoTransformer
from tats.sampling import sample_long, sample_short
from tats.sampling.short import precision


@torch.inference_mode()
def baseline_forward(gpt: GPT, idx: torch.Tensor, past: list[torch.Tensor] | None, offset: int):
    """One step of the concatenating sampler. ``past``: list of ``(L, 2, B, nh, T_i, hd)`` tensors."""
    T = idx.shape[1]
    x = gpt.tok_emb(idx) + gpt.pos_emb[:, offset : offset + T]
    full_past = torch.cat(past, dim=-2) if past else None  # regrown every step
    presents = []
    for i, block in enumerate(gpt.blocks):
        a = block.attn
        h = block.ln1(x)
        q, k, v = (rearrange(m(h), "b t (nh hd) -> b nh t hd", nh=a.n_head)
                   for m in (a.query, a.key, a.value))
        presents.append(torch.stack((k, v)))
        if full_past is not None:
            k = torch.cat((full_past[i, 0], k), dim=-2)
            v = torch.cat((full_past[i, 1], v), dim=-2)
        att = (q @ k.transpose(-2, -1)) / k.shape[-1] ** 0.5
        if full_past is None and T > 1:
            att = att.masked_fill(a.mask[:, :, :T, :T] == 0, float("-inf"))
        y = rearrange(F.softmax(att, dim=-1) @ v, "b nh t hd -> b t (nh hd)")
        x = x + a.proj(y)
        x = x + block.mlp(block.ln2(x))
    logits = gpt.head(gpt.ln_f(x))  # (B, T, V): every position
    return logits, torch.stack(presents)


@torch.inference_mode()
def baseline_generate(gpt: GPT, prefix: torch.Tensor, steps: int) -> torch.Tensor:
    past: list[torch.Tensor] = []
    x, out = prefix, []
    for n in range(steps):
        logits, present = baseline_forward(gpt, x, past, 0 if n == 0 else prefix.shape[1] + n - 1)
        past.append(present)
        x = logits[:, -1].argmax(-1, keepdim=True)
        out.append(x)
    return torch.cat(out, dim=1)


@torch.inference_mode()
def baseline_long(gpt: GPT, cond: torch.Tensor, n_frames: int, hw: int, p: int = 1) -> torch.Tensor:
    ids = baseline_generate(gpt, cond, p * hw)
    for f in range(p, n_frames):
        window = torch.cat([cond, ids[:, (f - p) * hw : f * hw]], dim=1)
        ids = torch.cat([ids, baseline_generate(gpt, window, hw)], dim=1)
    return ids


def timed(fn, device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_head", type=int, default=8)
    ap.add_argument("--n_embd", type=int, default=256)
    ap.add_argument("--n_codes", type=int, default=16384)
    ap.add_argument("--n_classes", type=int, default=101)
    ap.add_argument("--latent", type=int, nargs=3, default=(4, 16, 16), metavar=("T", "H", "W"))
    ap.add_argument("--dt", type=int, default=4, help="pixel frames per latent frame (for frames/s)")
    ap.add_argument("--batch_size", type=int, default=1)
    ap.add_argument("--long_frames", type=int, default=6, help="latent frames of the long sample (0: skip)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, mps")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the GPT (static-shape KV cache)")
    ap.add_argument("--skip_baseline", action="store_true")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    t, h, w = args.latent
    cfg = GPTConfig(vocab_size=args.n_codes + args.n_classes, block_size=t * h * w, n_layer=args.n_layer,
                    n_head=args.n_head, n_embd=args.n_embd, cond_type="label", n_cond_vocab=args.n_classes,
                    n_codes=args.n_codes, latent_shape=(t, h, w))
    torch.manual_seed(0)
    gpt = GPT(cfg).to(device).eval()
    model = VideoTransformer(gpt).eval()
    B, L, hw = args.batch_size, t * h * w, h * w
    print(f"device={device} dtype={args.dtype} compile={args.compile} threads={torch.get_num_threads()} "
          f"model={args.n_layer}x{args.n_embd} vocab={cfg.vocab_size} latent={t}x{h}x{w} batch={B}")
    if args.compile:
        gpt.static_kv = True  # fixed shapes: no recompilation per position
        model.transformer = torch.compile(gpt)
        # Warm-up: one graph per input length (1-token steps, the short and the long prefill).
        sample_short(model, B, cond=0, greedy=True, dtype=dtype)
        if args.long_frames:
            sample_long(model, 2, B, cond=0, greedy=True, dtype=dtype)

    cond = torch.zeros(B, 1, dtype=torch.long, device=device)
    ours, t_ours = timed(lambda: sample_short(model, B, cond=0, greedy=True, dtype=dtype, return_ids=True),
                         device)
    print(f"short ours:     {B * L / t_ours:9.1f} tokens/s  {B * t / t_ours:7.2f} latent frames/s  "
          f"{B * t * args.dt / t_ours:7.2f} frames/s  ({t_ours:.2f} s)")
    if not args.skip_baseline:
        with precision(device, dtype):
            base, t_base = timed(lambda: baseline_generate(gpt, cond, L), device)
        print(f"short baseline: {B * L / t_base:9.1f} tokens/s  ({t_base:.2f} s)  "
              f"speed-up x{t_base / t_ours:.1f}  tokens equal: {torch.equal(base, ours)}")
    if args.long_frames:
        n = args.long_frames
        ours, t_ours = timed(
            lambda: sample_long(model, n, B, cond=0, greedy=True, dtype=dtype, return_ids=True), device
        )
        print(f"long ours:      {B * n * hw / t_ours:9.1f} tokens/s  {B * n / t_ours:7.2f} latent frames/s  "
              f"{B * n * args.dt / t_ours:7.2f} frames/s  ({t_ours:.2f} s, {n} latent frames)")
        if not args.skip_baseline:
            with precision(device, dtype):
                base, t_base = timed(lambda: baseline_long(gpt, cond, n, hw), device)
            print(f"long baseline:  {B * n * hw / t_base:9.1f} tokens/s  ({t_base:.2f} s)  "
                  f"speed-up x{t_base / t_ours:.1f}  tokens equal: {torch.equal(base, ours.flatten(1))}")


if __name__ == "__main__":
    main()
