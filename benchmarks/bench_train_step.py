"""Training speed and memory: our VQGAN and GPT training steps vs the release's, same weights and batches.

Each variant (``side:precision[+option...]``, e.g. ``release:fp32``, ``ours:bf16+ckpt+compile``) trains
through Lightning in its own subprocess; the table gives the median seconds per step, the peak memory
and the ratios to the release. ``--losses N`` prints the losses of N steps side by side instead.
Variants, timing and memory: docs/benchmarks.md.

    python benchmarks/bench_train_step.py --model vqgan --repeats 2
    python benchmarks/bench_train_step.py --losses 20 --variants ours:fp32 ours:fp32+rounded ours:bf16+ckpt+cl
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repository root: tests.reference_impls

PRESETS = {
    # the sizes: a 2-core CPU runs a step in seconds
    "issue": dict(
        vqgan=dict(embedding_dim=64, n_codes=1024, n_hiddens=32, downsample=(4, 4, 4), norm_type="batch",
                   resolution=64, sequence_length=16, perceptual_weight=4.0, image_gan_weight=1.0,
                   video_gan_weight=1.0, gan_feat_weight=4.0, disc_channels=64, disc_layers=3,
                   discriminator_iter_start=0, lr=3e-5),
        vqgan_batch=2,
        gpt=dict(n_layer=4, n_head=8, n_embd=256, n_codes=16384, n_classes=101, latent_shape=(4, 16, 16)),
        gpt_batch=4,
    ),
    # UCF-101's published models (a GPU's job)
    "ucf101": dict(
        vqgan=dict(embedding_dim=256, n_codes=16384, n_hiddens=32, downsample=(4, 8, 8), norm_type="batch",
                   resolution=128, sequence_length=16, perceptual_weight=4.0, image_gan_weight=1.0,
                   video_gan_weight=1.0, gan_feat_weight=4.0, disc_channels=64, disc_layers=3,
                   discriminator_iter_start=0, lr=3e-5, no_random_restart=True),
        vqgan_batch=2,
        gpt=dict(n_layer=24, n_head=16, n_embd=1024, n_codes=16384, n_classes=101, latent_shape=(4, 16, 16)),
        gpt_batch=3,
    ),
}
DEFAULT_VARIANTS = {
    "vqgan": ["release:fp32", "ours:fp32", "ours:fp32+cl", "ours:fp32+ckpt", "ours:fp32+compile",
              "release:bf16", "ours:bf16", "ours:bf16+cl", "ours:bf16+ckpt", "ours:bf16+compile",
              "ours:bf16+ckpt+cl"],
    "gpt": ["release:fp32", "ours:fp32", "ours:fp32+compile",
            "release:bf16", "ours:bf16", "ours:bf16+compile"],
}
OPTIONS = ("ckpt", "cl", "compile", "rounded")
#: Lightning precision per variant precision (fp16: CUDA only; the VQGAN gets a loss scaler per optimizer)
PRECISIONS = {"fp32": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}


def parse_variant(spec: str) -> tuple[str, str, set[str]]:
    """``"ours:bf16+ckpt"`` -> ``("ours", "bf16", {"ckpt"})``."""
    side, _, rest = spec.partition(":")
    precision, *options = rest.split("+")
    if side not in ("ours", "release") or precision not in PRECISIONS or not set(options) <= {*OPTIONS}:
        raise SystemExit(f"bad variant {spec!r}: side ours|release, precision fp32|bf16|fp16, "
                         f"options {OPTIONS}")
    if side == "release" and options:
        raise SystemExit(f"{spec}: the release's step takes no options")
    return side, precision, set(options)


# ----------------------------------------------------------------------------- memory


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak resident set (``VmHWM``); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib(reset_worked: bool) -> float:
    if reset_worked:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux: the whole run


# ----------------------------------------------------------------------------- the worker


def _batches(model: str, preset: dict, n_steps: int, seed: int = 0) -> list[dict]:
    """Items for ``n_steps`` batches: smooth random clips (noise upsampled, in [-0.5, 0.5]) for the VQGAN,
    random codes and labels for the GPT."""
    gen = torch.Generator().manual_seed(seed)
    if model == "vqgan":
        cfg, b = preset["vqgan"], preset["vqgan_batch"]
        t, r = cfg["sequence_length"], cfg["resolution"]
        coarse = torch.rand(n_steps * b, 3, max(t // 4, 1), max(r // 8, 1), max(r // 8, 1), generator=gen)
        clips = torch.nn.functional.interpolate(coarse, size=(t, r, r), mode="trilinear") - 0.5
        return [dict(video=c) for c in clips]
    g, b = preset["gpt"], preset["gpt_batch"]
    codes = torch.randint(0, g["n_codes"], (n_steps * b, *g["latent_shape"]), generator=gen)
    labels = torch.randint(0, g["n_classes"], (n_steps * b,), generator=gen)
    return [dict(codes=c, label=int(y)) for c, y in zip(codes, labels)]


def _module(model: str, preset: dict, side: str, options: set[str], random_lpips: bool):
    from tats.gpt.config import GPTConfig
    from tats.gpt.lightning import TransformerModule
    from tats.vqgan.config import VQGANConfig
    from tats.vqgan.lightning import VQGANModule
    from tests.reference_impls import ReleaseTransformerModule, ReleaseVQGANModule

    torch.manual_seed(0)  # the same weights for every variant
    if model == "vqgan":
        config = VQGANConfig(**preset["vqgan"])
        if side == "release":
            return ReleaseVQGANModule(config, allow_random_lpips=random_lpips)
        return _rounded(VQGANModule(config, allow_random_lpips=random_lpips, channels_last="cl" in options,
                                    activation_checkpointing="ckpt" in options, compile="compile" in options),
                        options)
    g = preset["gpt"]
    t, h, w = g["latent_shape"]
    config = GPTConfig(vocab_size=g["n_codes"] + g["n_classes"], block_size=t * h * w, n_layer=g["n_layer"],
                       n_head=g["n_head"], n_embd=g["n_embd"], cond_type="label", n_cond_vocab=g["n_classes"],
                       n_codes=g["n_codes"], latent_shape=(t, h, w))
    lr = preset["gpt_batch"] * 4.5e-6  # the release's rule: batch x base_lr
    if side == "release":
        return ReleaseTransformerModule(config, None, learning_rate=lr)
    module = TransformerModule(config, None, learning_rate=lr, activation_checkpointing="ckpt" in options,
                               compile="compile" in options)
    return _rounded(module, options)


def _rounded(module: torch.nn.Module, options: set[str]) -> torch.nn.Module:
    """With the ``rounded`` option, the starting weights rounded to bf16 once (then trained in the variant's
    precision): how far an fp32 run drifts from a perturbation that small is the noise floor that bf16
    training is compared with."""
    if "rounded" in options:
        with torch.no_grad():
            for p in module.parameters():
                p.copy_(p.bfloat16().to(p.dtype))
    return module


def run_worker(args: argparse.Namespace) -> dict:
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    side, precision, options = parse_variant(args.worker)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    preset = PRESETS[args.preset]
    n_steps = args.losses or args.warmup + args.steps
    warmup = 0 if args.losses else args.warmup
    module = _module(args.model, preset, side, options, args.random_lpips)
    batch = preset["vqgan_batch"] if args.model == "vqgan" else preset["gpt_batch"]
    loader = DataLoader(_batches(args.model, preset, n_steps), batch_size=batch, shuffle=False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    class Meter(pl.Callback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.cpu: list[float] = []
            self.losses: list[list[float]] = []
            self.base = self.peak = 0.0
            self.reset_worked = False

        def on_train_start(self, trainer, pl_module) -> None:
            sync()
            self.base = torch.cuda.memory_allocated() / 2**20 if device.type == "cuda" else _rss_mib()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            sync()
            self.w0, self.c0 = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            sync()
            self.wall.append(time.perf_counter() - self.w0)
            self.cpu.append(time.process_time() - self.c0)
            if args.losses:
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                row = [float(loss)]
                if args.model == "vqgan":
                    row.append(float(trainer.callback_metrics.get("train/d_loss", float("nan"))))
                self.losses.append(row)
            if len(self.wall) == warmup:  # the timed steps start: memory peak from here on
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                else:
                    self.reset_worked = _reset_peak_rss()

        def on_train_end(self, trainer, pl_module) -> None:
            sync()
            if device.type == "cuda":
                self.peak = torch.cuda.max_memory_allocated() / 2**20
            else:
                self.peak = _peak_rss_mib(self.reset_worked)

    meter = Meter()
    amp: dict = dict(precision=PRECISIONS[precision])
    if precision == "fp16" and args.model == "vqgan":  # two optimizers: one loss scaler each
        from tats.train.scalers import PerOptimizerGradScaler

        amp = dict(plugins=[PerOptimizerGradScaler("cuda", 2)])
    trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, **amp,
                         max_steps=n_steps,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                         callbacks=[meter])
    trainer.fit(module, loader)
    timed = slice(warmup, None)
    return dict(
        wall=statistics.median(meter.wall[timed]), cpu=statistics.median(meter.cpu[timed]),
        warmup_s=sum(meter.wall[:warmup]), peak_mib=meter.peak - meter.base, base_mib=meter.base,
        losses=meter.losses, steps=len(meter.wall) - warmup,
    )


# ----------------------------------------------------------------------------- the driver


def _spawn(args: argparse.Namespace, model: str, variant: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, "--model", model,
           "--device", args.device, "--threads", str(args.threads), "--preset", args.preset,
           "--warmup", str(args.warmup), "--steps", str(args.steps), "--losses", str(args.losses)]
    if args.random_lpips:
        cmd.append("--random_lpips")
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:] or ["no output"]
    return dict(error=" | ".join(tail))


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b and math.isfinite(a) and math.isfinite(b) else "-"


def print_table(model: str, variants: list[str], runs: dict[str, list[dict]]) -> None:
    """Median over the runs of each variant, and its ratios to the release's fp32 and same-precision runs."""
    def med(v: str, key: str) -> float:
        vals = [r[key] for r in runs[v] if "error" not in r]
        return statistics.median(vals) if vals else float("nan")

    print(f"\n{model}: median over {len(next(iter(runs.values())))} run(s)")
    head = (f"{'variant':<26}{'s/step':>8}{'cpu s':>8}{'peak MiB':>10}   {'speed vs release':>26}"
            f"   {'memory vs release':>22}")
    print(head + f"\n{'':<52}{'same prec.':>13}{'fp32':>13}{'same prec.':>12}{'fp32':>10}")
    for v in variants:
        if all("error" in r for r in runs[v]):
            print(f"{v:<26}failed: {runs[v][0]['error']}")
            continue
        _, precision, _ = parse_variant(v)
        same, fp32 = f"release:{precision}", "release:fp32"
        wall, cpu, mem = med(v, "wall"), med(v, "cpu"), med(v, "peak_mib")
        cols = []
        for ref in (same, fp32):
            if ref in runs:
                cols.append(f"{_ratio(med(ref, 'wall'), wall)} ({_ratio(med(ref, 'cpu'), cpu)})")
            else:
                cols.append("-")
        mems = [_ratio(mem, med(ref, "peak_mib")) if ref in runs else "-" for ref in (same, fp32)]
        print(f"{v:<26}{wall:>8.3f}{cpu:>8.3f}{mem:>10.0f}   {cols[0]:>13}{cols[1]:>13}"
              f"{mems[0]:>12}{mems[1]:>10}")
    print("(speed: wall-time ratio, CPU-time ratio in brackets; memory: peak growth, ours / release)")


def print_losses(model: str, variants: list[str], runs: dict[str, list[dict]]) -> None:
    names = ["loss"] if model == "gpt" else ["ae", "disc"]
    print(f"\n{model}: losses per step (relative difference of each bf16 or rounded run from the fp32 run of "
          "its side)")
    cols = [f"{v}:{n}" for v in variants for n in names]
    print("step " + "".join(f"{c:>24}" for c in cols))
    n = min(len(runs[v][0].get("losses", [])) for v in variants)
    for i in range(n):
        cells = []
        for v in variants:
            side, precision, options = parse_variant(v)
            ref = f"{side}:fp32" if precision == "bf16" else None  # (or the rounded fp32 run's)
            for j in range(len(names)):
                x = runs[v][0]["losses"][i][j]
                cell = f"{x:.5f}"
                if ref is None and "rounded" in options:
                    ref = f"{side}:fp32"
                if ref in runs and not options - {"ckpt", "cl", "rounded"}:
                    y = runs[ref][0]["losses"][i][j]
                    cell += f" ({(x - y) / abs(y):+.1e})" if y else ""
                cells.append(f"{cell:>24}")
        print(f"{i:>4} " + "".join(cells))


def main(argv: list[str] | None = None) -> dict[str, dict[str, list[dict]]] | None:
    """Runs the benchmark; returns ``{model: {variant: [one dict per run]}}`` (``wall``, ``cpu``,
    ``peak_mib``, ... or ``error``)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["vqgan", "gpt", "all"], default="all")
    p.add_argument("--variants", nargs="+", default=None,
                   help="side:precision[+ckpt][+cl][+compile]; default: a set per model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--preset", choices=sorted(PRESETS), default="issue")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--losses", type=int, default=0, help="print the losses of this many steps instead")
    p.add_argument("--random_lpips", action="store_true",
                   help="random LPIPS weights instead of fetching the real ones (same cost)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        warnings.filterwarnings("ignore")
        print("RESULT " + json.dumps(run_worker(args)), flush=True)
        return
    models = ["vqgan", "gpt"] if args.model == "all" else [args.model]
    print(f"device={args.device} threads={args.threads} torch={torch.__version__} preset={args.preset} "
          f"warmup={args.warmup} steps={args.steps} repeats={args.repeats} "
          f"load={os.getloadavg()[0]:.2f}")
    results = {}
    for model in models:
        variants = args.variants or DEFAULT_VARIANTS[model]
        for v in variants:
            parse_variant(v)
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for r in range(1 if args.losses else args.repeats):
            order = variants if r % 2 == 0 else variants[::-1]
            for v in order:
                res = _spawn(args, model, v)
                runs[v].append(res)
                if "error" in res:
                    print(f"run {r + 1} {model} {v:<24} failed: {res['error']}", flush=True)
                elif not args.losses:
                    print(f"run {r + 1} {model} {v:<24} {res['wall']:7.3f} s/step (cpu {res['cpu']:.3f}), "
                          f"peak +{res['peak_mib']:.0f} MiB, warm-up {res['warmup_s']:.0f} s, "
                          f"load {os.getloadavg()[0]:.2f}", flush=True)
        if args.losses:
            print_losses(model, variants, runs)
        else:
            print_table(model, variants, runs)
        results[model] = runs
    return results


if __name__ == "__main__":
    main()
