"""Peak memory of ``sample_short_videos.py`` at benchmark scale: streaming (ours) vs keeping every video
until the end, each run in a fresh subprocess (docs/benchmarks.md says how).

    python benchmarks/bench_sample_memory.py                       # n_sample 64, 256, 1024
    python benchmarks/bench_sample_memory.py --sizes 64 256 --resolution 64   # slower decode
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``VmHWM``; Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def make_checkpoint(folder: Path, frames: int, resolution: int) -> Path:
    """A tiny unconditional transformer whose VQGAN maps ``frames x resolution^2`` clips to 16 codes."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import save_transformer

    from tats.vqgan.config import VQGANConfig

    downsample = (frames // 4, resolution // 2, resolution // 2)  # -> a (4, 2, 2) latent grid
    vq = VQGANConfig(embedding_dim=4, n_codes=16, n_hiddens=2, downsample=downsample, norm_type="batch",
                     sequence_length=frames, resolution=resolution)
    return save_transformer(folder / "gpt_bench.ckpt", "none", vq=vq)


def worker(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    if args.mode == "streaming":
        from tats.cli.sample import main

        main(["--gpt_ckpt", args.ckpt, "--n_sample", str(args.n_sample), "--batch_size",
              str(args.batch_size), "--save", args.out, "--save_name", "streaming", "--device", "cpu",
              "--no_progress"])
    else:
        from tats.gpt.load import load_transformer
        from tats.io.video import to_uint8
        from tats.sampling import sample_short

        model = load_transformer(args.ckpt)
        videos = []  # every video kept until the end
        gen = torch.Generator().manual_seed(0)
        for start in range(0, args.n_sample if args.mode == "in_memory" else 0, args.batch_size):
            size = min(args.batch_size, args.n_sample - start)
            codes = sample_short(model, size, generator=gen)
            with torch.inference_mode():
                videos.append(to_uint8(model.vqgan.decode(codes)))  # (b, T, H, W, C)
        if videos:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            np.save(Path(args.out) / "samples.npy", np.concatenate(videos))
    print(json.dumps({"mode": args.mode, "n_sample": args.n_sample, "peak_rss_mb": round(peak_rss_mb(), 1),
                      "seconds": round(time.perf_counter() - t0, 1)}))


def measure(mode: str, n_sample: int, ckpt: Path, out: Path, batch_size: int, fixed_malloc: bool) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--n_sample", str(n_sample), "--ckpt", str(ckpt),
           "--out", str(out / f"{mode}_{n_sample}"), "--batch_size", str(batch_size)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if fixed_malloc:
        # glibc raises its mmap threshold (up to 32 MiB) after large frees, after which freed decoder
        # activations stay in a fragmented heap and RSS creeps up with the number of batches. A fixed
        # threshold returns every large block to the OS, so the peak reflects the data a run keeps.
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{mode} n_sample={n_sample} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024], help="--n_sample values")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--frames", type=int, default=16, help="frames per video (multiple of 4)")
    p.add_argument("--resolution", type=int, default=32, help="frame side in pixels (power of two)")
    p.add_argument("--default_malloc", action="store_true",
                   help="keep glibc's dynamic mmap threshold (allocator creep shows in both modes)")
    p.add_argument("--worker", choices=("streaming", "in_memory", "floor"), default=None,
                   help=argparse.SUPPRESS)
    p.add_argument("--n_sample", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--ckpt", default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.mode = args.worker
        worker(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ckpt = make_checkpoint(tmp, args.frames, args.resolution)
        video_mb = args.frames * args.resolution**2 * 3 / 2**20
        print(f"videos: {args.frames} x {args.resolution}x{args.resolution} x 3 uint8 = {video_mb:.3f} MiB "
              f"each; batch {args.batch_size}; CPU, 1 thread; "
              f"{'default glibc malloc' if args.default_malloc else 'MALLOC_MMAP_THRESHOLD_=131072'}")
        floor = measure("floor", 0, ckpt, tmp, args.batch_size, not args.default_malloc)["peak_rss_mb"]
        print(f"floor (imports + models, no sampling): {floor:.0f} MiB")
        print(f"{'n_sample':>8} {'videos MiB':>10} {'streaming MiB':>14} {'in-memory MiB':>14} {'ratio':>6} "
              f"{'stream s':>9} {'in-mem s':>9}")
        rows = []
        for n in args.sizes:
            s = measure("streaming", n, ckpt, tmp, args.batch_size, not args.default_malloc)
            m = measure("in_memory", n, ckpt, tmp, args.batch_size, not args.default_malloc)
            rows.append({"n_sample": n, "streaming": s, "in_memory": m})
            print(f"{n:>8} {n * video_mb:>10.1f} {s['peak_rss_mb']:>14.0f} {m['peak_rss_mb']:>14.0f} "
                  f"{m['peak_rss_mb'] / s['peak_rss_mb']:>6.2f} {s['seconds']:>9.1f} {m['seconds']:>9.1f}")
            for mode in ("streaming", "in_memory"):
                for f in (tmp / f"{mode}_{n}").rglob("samples.npy"):
                    f.unlink()  # keep the temporary folder small
        growth_s = rows[-1]["streaming"]["peak_rss_mb"] - rows[0]["streaming"]["peak_rss_mb"]
        growth_m = rows[-1]["in_memory"]["peak_rss_mb"] - rows[0]["in_memory"]["peak_rss_mb"]
        print(f"growth from n={args.sizes[0]} to n={args.sizes[-1]}: streaming {growth_s:+.0f} MiB, "
              f"in-memory {growth_m:+.0f} MiB")


if __name__ == "__main__":
    main()
