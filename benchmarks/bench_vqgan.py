"""VQGAN codebook efficiency: our chunked/bincount EMA codebook vs a one-hot baseline, the rest of the
model identical: whole training steps (``--mode train``) and the codebook alone (``--mode codebook``).

    python benchmarks/bench_vqgan.py --mode all
    python benchmarks/bench_vqgan.py --mode codebook --n_vectors 65536 --n_codes 16384 --dim 256 --steps 1

docs/benchmarks.md has the baseline, how memory is measured and the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from tats.vqgan.codebook import Codebook
from tats.vqgan.config import VQGANConfig
from tats.vqgan.model import VQGAN

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests.reference_impls
from tests.reference_impls import OneHotCodebook  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _limit_memory(gb: float) -> None:
    """Cap the address space at what is mapped now plus ``gb`` GiB (so OOM raises, not swaps)."""
    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
    limit = vm + int(gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _measure(device: torch.device, setup, step, steps: int, warmup: int) -> dict:
    """Run ``warmup`` + ``steps`` calls of ``step``; steps/s and peak memory above the set-up state."""
    state = setup()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        base = _rss_mb()
    try:
        for _ in range(warmup):
            step(state)
        _sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step(state)
        _sync(device)
        elapsed = time.perf_counter() - start
    except (RuntimeError, MemoryError) as err:  # torch reports allocation failures as RuntimeError
        if "memory" not in str(err).lower() and not isinstance(err, MemoryError):
            raise
        return dict(status="OOM")
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    else:
        peak = _peak_rss_mb() - base
    return dict(status="ok", steps_per_s=steps / elapsed, peak_mb=peak)


def _codebook_cls(variant: str):
    return Codebook if variant == "ours" else OneHotCodebook


def run_train(args, variant: str, device: torch.device) -> dict:
    config = VQGANConfig(n_codes=args.n_codes, embedding_dim=args.dim, n_hiddens=args.n_hiddens,
                         downsample=tuple(args.downsample), norm_type="group",
                         sequence_length=args.sequence_length, resolution=args.resolution)

    def setup():
        torch.manual_seed(0)
        model = VQGAN(config, channels_last_3d=args.channels_last).to(device).train()
        model.codebook = _codebook_cls(variant)(config.n_codes, config.embedding_dim).to(device)
        model.codebook.initialized.fill_(True)  # same work every step (no one-off init)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        video = torch.rand(args.batch_size, 3, args.sequence_length, args.resolution, args.resolution,
                           device=device) - 0.5
        return model, opt, video

    def step(state):
        model, opt, video = state
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(video)
            loss = F.l1_loss(out["recon"].float(), video) + out["commitment_loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return _measure(device, setup, step, args.steps, args.warmup)


def run_codebook(args, variant: str, device: torch.device) -> dict:
    def setup():
        torch.manual_seed(0)
        cb = _codebook_cls(variant)(args.n_codes, args.dim).to(device).train()
        cb.initialized.fill_(True)
        z = torch.randn(1, args.dim, 1, 1, args.n_vectors, device=device)  # N latent vectors
        return cb, z

    def step(state):
        cb, z = state
        with torch.no_grad():
            cb(z)

    return _measure(device, setup, step, args.steps, args.warmup)


def _worker(args) -> None:
    device = torch.device(args.device)
    if args.mem_limit_gb and device.type == "cpu":
        _limit_memory(args.mem_limit_gb)
    fn = run_train if args.mode == "train" else run_codebook
    print("RESULT " + json.dumps(fn(args, args.worker, device)), flush=True)


def _spawn(argv: list[str], mode: str, variant: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), *argv, "--mode", mode, "--worker", variant]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    oom = proc.returncode < 0 or "memory" in tail[0].lower()
    return dict(status="OOM" if oom else f"failed: {tail[0]}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["train", "codebook", "all"], default="all")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="autocast bf16 around the training step")
    p.add_argument("--channels_last", action="store_true", help="VQGAN(channels_last_3d=True)")
    p.add_argument("--mem_limit_gb", type=float, default=8.0, help="CPU workers: address-space cap")
    # training-step sizes
    p.add_argument("--batch_size", type=int, default=2)
    p.add_argument("--sequence_length", type=int, default=8)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--n_hiddens", type=int, default=16)
    p.add_argument("--downsample", type=int, nargs=3, default=[2, 4, 4])
    p.add_argument("--n_codes", type=int, default=16384)
    p.add_argument("--dim", type=int, default=256, help="embedding_dim")
    # codebook micro-benchmark size
    p.add_argument("--n_vectors", type=int, default=16384, help="latent vectors (try 65536 on a GPU)")
    p.add_argument("--worker", choices=["ours", "onehot"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)

    raw = [a for a in (argv if argv is not None else sys.argv[1:])]
    modes = ["train", "codebook"] if args.mode == "all" else [args.mode]
    device = torch.device(args.device)
    print(f"device={device} threads={torch.get_num_threads()} n_codes={args.n_codes} dim={args.dim} "
          f"bf16={args.bf16} channels_last={args.channels_last}")
    print(f"{'benchmark':<10} {'codebook':<8} {'steps/s':>9} {'peak MiB':>10}  size")
    for mode in modes:
        size = (f"B={args.batch_size} T={args.sequence_length} res={args.resolution} "
                f"n_hiddens={args.n_hiddens} ds={args.downsample}" if mode == "train"
                else f"N={args.n_vectors}")
        results = {}
        for variant in ("ours", "onehot"):
            if device.type == "cpu":
                res = _spawn(raw, mode, variant)
            else:
                res = (run_train if mode == "train" else run_codebook)(args, variant, device)
                torch.cuda.empty_cache()
            results[variant] = res
            if res["status"] == "ok":
                print(f"{mode:<10} {variant:<8} {res['steps_per_s']:>9.3f} {res['peak_mb']:>10.1f}  {size}")
            else:
                print(f"{mode:<10} {variant:<8} {res['status']:>20}  {size}")
        a, b = results["ours"], results["onehot"]
        if a["status"] == b["status"] == "ok":
            print(f"{mode:<10} ratio    speed x{a['steps_per_s'] / b['steps_per_s']:.2f}, "
                  f"peak memory x{b['peak_mb'] / max(a['peak_mb'], 1e-9):.2f} (one-hot / ours)")


if __name__ == "__main__":
    main()
