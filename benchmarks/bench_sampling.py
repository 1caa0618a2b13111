"""Sampling throughput: our samplers (eager and compiled, fp32 and bf16) vs the release's sampler on the
same weights in the same run, with the memory-traffic bound of each configuration.

    TORCHINDUCTOR_CACHE_DIR=$(mktemp -d) python benchmarks/bench_sampling.py --threads 2 --repeats 3
    python benchmarks/bench_sampling.py --batch_sizes 16 --modes short --dtypes fp32 --impls compiled
    python benchmarks/bench_sampling.py --device cuda --n_layer 24 --n_embd 1024 --n_head 16 \\
        --batch_sizes 16 --dtypes bf16 --impls eager compiled            # TATS-base size on a GPU

docs/benchmarks.md says what each sampler does, how rows are timed and what the columns mean.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from tats.gpt import GPT, GPTConfig
from tats.gpt.video_transformer import VideoTransformer
from tats.sampling import sample_long, sample_short
from tats.sampling.compiled import float32_step_weights
from tats.sampling.long import context_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.reference_impls
from tests.reference_impls import baseline_generate, baseline_long  # noqa: E402

DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of ``fn()``."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def bandwidth(device: torch.device) -> float:
    """Bytes per second of a read of 512 MiB (far beyond any cache), best of 5."""
    x = torch.ones(128 * 2**20, device=device)  # 512 MiB of float32
    best = min(timed(lambda: x.sum(), device) for _ in range(5))
    return x.numel() * 4 / best


def build_model(args: argparse.Namespace, device: torch.device) -> VideoTransformer:
    t, h, w = args.latent
    cfg = GPTConfig(vocab_size=args.n_codes + args.n_classes, block_size=t * h * w, n_layer=args.n_layer,
                    n_head=args.n_head, n_embd=args.n_embd, cond_type="label", n_cond_vocab=args.n_classes,
                    n_codes=args.n_codes, latent_shape=(t, h, w))
    torch.manual_seed(0)
    return VideoTransformer(GPT(cfg).to(device).eval()).eval()


# ---------------------------------------------------------------------------- the traffic bound
def step_positions(args: argparse.Namespace, mode: str) -> list[int]:
    """The cache length read by every token step of one sample (prefills excluded)."""
    t, h, w = args.latent
    hw, n_cond = h * w, 1
    if mode == "short":
        return [n_cond + i for i in range(t * hw)]
    p, out = args.temporal_sample_pos, []
    out += [n_cond + i for i in range(p * hw)]  # the first p frames: one short sample
    for f in range(p, args.long_frames):
        ctx = len(context_frames(f, p))
        out += [n_cond + ctx * hw + i for i in range(hw)]
    return out


def bound_ms_per_step(args: argparse.Namespace, gpt: GPT, B: int, mode: str, dtype: str, impl: str,
                      bytes_per_s: float) -> float:
    """Milliseconds per token step if the step only had to read its bytes once at ``bytes_per_s``."""
    cfg = gpt.config
    layer_params = sum(p.numel() for n, p in gpt.named_parameters() if n.startswith("blocks."))
    bf16_weights = dtype == "bf16" and impl == "compiled" and not float32_step_weights(
        gpt.pos_emb.device, DTYPES[dtype])
    weight_bytes = 2 if bf16_weights else 4
    kv_bytes = 2 if dtype == "bf16" else 4
    positions = step_positions(args, mode)
    kv = B * cfg.n_layer * 2 * cfg.n_embd * kv_bytes * sum(positions) / len(positions)
    per_step = layer_params * weight_bytes + gpt.head.weight.numel() * 4 + kv
    return per_step / bytes_per_s * 1e3


# ---------------------------------------------------------------------------- runs
@dataclass
class Setting:
    mode: str
    dtype: str
    impl: str


def our_runner(args, model: VideoTransformer, B: int, s: Setting) -> Callable[[], torch.Tensor]:
    kw = dict(cond=0, top_k=args.top_k, top_p=args.top_p, dtype=DTYPES[s.dtype], compile=s.impl == "compiled",
              generator=torch.Generator(device=model.transformer.pos_emb.device).manual_seed(0))
    if s.mode == "short":
        return lambda: sample_short(model, B, **kw)
    return lambda: sample_long(model, args.long_frames, B, temporal_sample_pos=args.temporal_sample_pos, **kw)


def base_runner(args, gpt: GPT, B: int, mode: str) -> Callable[[], torch.Tensor]:
    t, h, w = args.latent
    cond = torch.zeros(B, 1, dtype=torch.long, device=gpt.pos_emb.device)
    kw = dict(top_k=args.top_k, top_p=args.top_p)
    if mode == "short":
        return lambda: baseline_generate(gpt, cond, t * h * w, **kw)
    return lambda: baseline_long(gpt, cond, args.long_frames, h * w, p=args.temporal_sample_pos, **kw)


def greedy_checks(args, model: VideoTransformer, B: int, impls: list[str]) -> dict[str, object]:
    """Greedy tokens of ours (each impl, fp32) vs the baseline over ``--check_tokens`` tokens, and the
    share of positions where bf16's argmax differs from fp32's (teacher-forced on the fp32 sample)."""
    gpt = model.transformer
    device = gpt.pos_emb.device
    n = min(args.check_tokens, gpt.block_size - 1)
    cond = torch.zeros(B, 1, dtype=torch.long, device=device)
    base = baseline_generate(gpt, cond, n, greedy=True)
    out: dict[str, object] = {}
    ids = None
    for impl in impls:
        ids = sample_short(model, B, cond=0, greedy=True, return_ids=True, compile=impl == "compiled")
        out[f"greedy_{impl}"] = bool(torch.equal(ids[:, :n], base))
    # the fp32 greedy sample as input (its last token predicts nothing in the window)
    seq = torch.cat([cond, ids], dim=1)[:, : min(args.argmax_positions, gpt.block_size)]
    fp32 = gpt(seq).argmax(-1)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        bf16 = gpt(seq).argmax(-1)
    out["bf16_argmax_differs"] = float((fp32 != bf16).float().mean())
    return out


@torch.inference_mode()
def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n_layer", type=int, default=4)
    ap.add_argument("--n_head", type=int, default=8)
    ap.add_argument("--n_embd", type=int, default=256)
    ap.add_argument("--n_codes", type=int, default=16384)
    ap.add_argument("--n_classes", type=int, default=101)
    ap.add_argument("--latent", type=int, nargs=3, default=(4, 16, 16), metavar=("T", "H", "W"))
    ap.add_argument("--batch_sizes", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--modes", nargs="+", default=["short", "long"], choices=["short", "long"])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=sorted(DTYPES))
    ap.add_argument("--impls", nargs="+", default=["eager", "compiled"], choices=["eager", "compiled"])
    ap.add_argument("--long_frames", type=int, default=8, help="latent frames of the long sample")
    ap.add_argument("--temporal_sample_pos", type=int, default=3, help="context frames of the window")
    ap.add_argument("--top_k", type=int, default=32)
    ap.add_argument("--top_p", type=float, default=0.9)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of every sampler (median)")
    ap.add_argument("--check_tokens", type=int, default=64, help="greedy tokens compared before timing")
    ap.add_argument("--argmax_positions", type=int, default=512,
                    help="positions of the fp32 greedy sample over which bf16's argmax is compared")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: the default)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    ap.add_argument("--skip_baseline", action="store_true")
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    model = build_model(args, device)
    gpt = model.transformer
    bw = bandwidth(device)
    t, h, w = args.latent
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu x{torch.get_num_threads()}"
    print(f"device={name} model={args.n_layer}x{args.n_embd} heads={args.n_head}"
          f" vocab={gpt.config.vocab_size} latent={t}x{h}x{w}"
          f" long={args.long_frames} frames, window {args.temporal_sample_pos}"
          f" top_k={args.top_k} top_p={args.top_p} repeats={args.repeats} (median)"
          f" memory bandwidth {bw / 1e9:.1f} GB/s", flush=True)
    rows: list[dict] = []
    for B in args.batch_sizes:
        checks = greedy_checks(args, model, B, args.impls)
        print(f"B={B}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in checks.items()), flush=True)
        for mode in args.modes:
            settings = [Setting(mode, d, i) for d in args.dtypes for i in args.impls]
            ours = {s.dtype + "/" + s.impl: our_runner(args, model, B, s) for s in settings}
            warm = {}
            for key, fn in ours.items():  # compiles (once per batch size, precision and rule) and warms up
                warm[key] = timed(fn, device)
            times: dict[str, list[float]] = {key: [] for key in ours}
            base_times: list[float] = []
            base = None if args.skip_baseline else base_runner(args, gpt, B, mode)
            for _ in range(args.repeats):
                if base is not None:
                    base_times.append(timed(base, device))
                for key, fn in ours.items():
                    times[key].append(timed(fn, device))
            n_steps = len(step_positions(args, mode))
            base_s = statistics.median(base_times) if base_times else float("nan")
            for s in settings:
                key = s.dtype + "/" + s.impl
                wall = statistics.median(times[key])
                bound = bound_ms_per_step(args, gpt, B, mode, s.dtype, s.impl, bw)
                rows.append(dict(B=B, mode=mode, dtype=s.dtype, impl=s.impl, wall=wall, base=base_s,
                                 steps=n_steps, bound_ms=bound, warm=warm[key], **checks))
                print_row(rows[-1], flush=True)
    print()
    print_table(rows)
    return rows


HEADER = (f"{'B':>3} {'mode':<5} {'dtype':<5} {'impl':<8} | {'tok/s':>8} {'ms/step':>8} {'x base':>7} | "
          f"{'bound ms':>8} {'x bound':>7} | {'base tok/s':>10} | {'first run s':>11}")


def print_row(r: dict, flush: bool = False) -> None:
    tokens = r["B"] * r["steps"]
    ms = r["wall"] / r["steps"] * 1e3
    print(f"{r['B']:>3} {r['mode']:<5} {r['dtype']:<5} {r['impl']:<8} | {tokens / r['wall']:>8.0f} "
          f"{ms:>8.3f} {r['base'] / r['wall']:>7.2f} | {r['bound_ms']:>8.3f} {ms / r['bound_ms']:>7.2f} | "
          f"{tokens / r['base']:>10.0f} | {r['warm']:>11.1f}", flush=flush)


def print_table(rows: list[dict]) -> None:
    print(HEADER)
    print("-" * len(HEADER))
    for r in rows:
        print_row(r)
    print("ms/step: one token for each of the B videos; x base: baseline wall time / ours; bound: the "
          "step's bytes / measured bandwidth; first run: compile (compiled) and warm-up, apart from the "
          "timed runs.")


if __name__ == "__main__":
    main()
