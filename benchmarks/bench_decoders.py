"""Sampling throughput of the two decoders: the GPT (one token per step, KV cache) vs the masked-token
model (parallel decoding, ``--steps`` forward passes per clip), on the same latent grid and sizes.

Reports per model the median wall and CPU time, tokens per second and the sequential forward passes
per clip; how it measures: docs/benchmarks.md.

    python benchmarks/bench_decoders.py                        # random weights, the demo's sizes, CPU
    python benchmarks/bench_decoders.py --gpt_ckpt GPT.ckpt --masked_ckpt MASKED.ckpt   # trained models
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from tats.gpt.config import GPTConfig
from tats.gpt.masked import MaskedConfig, MaskedTransformer
from tats.gpt.model import GPT
from tats.gpt.video_transformer import VideoTransformer
from tats.sampling import SamplingOptions, sample_short
from tats.sampling.masked import remaining_masked


def sequential_forwards(model: VideoTransformer, steps: int) -> int:
    """Forward passes one clip needs one after the other: the GPT's prefill and one per further code;
    the masked model's steps (fewer when the codes run out first)."""
    n = model.config.n_latent_tokens
    return len(remaining_masked(n, steps)) if model.objective == "masked" else n


def time_decoders(
    models: Mapping[str, VideoTransformer],
    batch_size: int,
    cond: Any,
    options: Callable[[int], SamplingOptions],
    repeats: int = 3,
) -> dict[str, dict[str, float]]:
    """Median timings of :func:`sample_short` for each model, run alternately ``repeats`` times after
    one warm-up each. ``options(seed)`` gives the draw of one run. Returns per model ``wall_s``,
    ``cpu_s``, ``tokens_per_s`` (wall), ``tokens_per_cpu_s``, ``sequential_forwards``, ``tokens``."""
    times: dict[str, dict[str, list[float]]] = {name: {"wall": [], "cpu": []} for name in models}
    for r in range(repeats + 1):
        for name, model in models.items():
            w0, c0 = time.perf_counter(), time.process_time()
            sample_short(model, batch_size, cond, options(r))
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # (a no-op for a CPU run)
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            if r:  # run 0 warms up (allocations, the KV cache, first-call dispatch)
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(cpu)
    out = {}
    for name, model in models.items():
        tokens = batch_size * model.config.n_latent_tokens
        wall, cpu = statistics.median(times[name]["wall"]), statistics.median(times[name]["cpu"])
        out[name] = dict(wall_s=round(wall, 4), cpu_s=round(cpu, 4), tokens=tokens,
                         tokens_per_s=round(tokens / wall, 1), tokens_per_cpu_s=round(tokens / cpu, 1),
                         sequential_forwards=sequential_forwards(model, options(0).steps))
    return out


def random_models(n_layer: int, n_head: int, n_embd: int, latent: Sequence[int], n_codes: int,
                  n_classes: int) -> dict[str, VideoTransformer]:
    """A GPT and a masked model of the same sizes with random weights (label-conditional)."""
    torch.manual_seed(0)
    L = latent[0] * latent[1] * latent[2]
    common = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, cond_type="label", n_cond_vocab=n_classes,
                  n_codes=n_codes, latent_shape=tuple(latent), vocab_size=n_codes + n_classes)
    gpt = GPT(GPTConfig(block_size=L, **common)).eval()
    masked = MaskedTransformer(MaskedConfig(block_size=1 + L, **common)).eval()
    return {"autoregressive": VideoTransformer(gpt), "masked": VideoTransformer(masked)}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpt_ckpt", default=None, help="a trained GPT (default: random weights, demo sizes)")
    p.add_argument("--masked_ckpt", default=None, help="a trained masked model (with --gpt_ckpt)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--steps", type=int, default=12, help="masked decoding steps")
    p.add_argument("--top_p", type=float, default=0.9)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--n_layer", type=int, default=4)
    p.add_argument("--n_head", type=int, default=4)
    p.add_argument("--n_embd", type=int, default=128)
    p.add_argument("--latent", type=int, nargs=3, default=(2, 8, 8), help="t h w of a clip's codes")
    p.add_argument("--n_codes", type=int, default=64)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.gpt_ckpt or args.masked_ckpt:
        if not (args.gpt_ckpt and args.masked_ckpt):
            raise SystemExit("pass both --gpt_ckpt and --masked_ckpt (or neither, for random weights)")
        from tats.gpt.load import load_transformer

        models = {"autoregressive": load_transformer(args.gpt_ckpt, with_vqgan=False),
                  "masked": load_transformer(args.masked_ckpt, with_vqgan=False)}
    else:
        models = random_models(args.n_layer, args.n_head, args.n_embd, args.latent, args.n_codes, 20)
    models = {name: m.to(device) for name, m in models.items()}
    cond = torch.arange(args.batch_size, device=device) % models["masked"].config.n_cond_vocab

    def options(seed: int) -> SamplingOptions:
        generator = torch.Generator(device=device).manual_seed(seed)
        return SamplingOptions(top_p=args.top_p, steps=args.steps, generator=generator)

    res = time_decoders(models, args.batch_size, cond, options, args.repeats)
    print(f"batch {args.batch_size}, {args.device}, {torch.get_num_threads()} thread(s), "
          f"masked steps {args.steps}")
    for name, r in res.items():
        print(f"{name:>15}: {r['tokens_per_s']:>9.1f} tokens/s wall ({r['wall_s']:.3f} s), "
              f"{r['tokens_per_cpu_s']:>9.1f} per CPU s, {r['sequential_forwards']} sequential forwards")
    ratio = res["masked"]["tokens_per_s"] / res["autoregressive"]["tokens_per_s"]
    print(f"masked / autoregressive tokens/s: {ratio:.2f}x wall, "
          f"{res['masked']['tokens_per_cpu_s'] / res['autoregressive']['tokens_per_cpu_s']:.2f}x CPU time")
    return res


if __name__ == "__main__":
    main()
