"""GPU and multi-GPU readiness: the code paths that only run on GPUs, exercised in one go.

    bash scripts/gpu_check.sh               # every check on this machine's GPUs
    bash scripts/gpu_check.sh --cpu-smoke   # the checks' CPU paths at tiny sizes (part of the test suite)

Prints ``PASS name (seconds): detail``, ``FAIL name (seconds): reason`` or ``SKIP name: why`` per
check, then a summary; exits with 1 when a check failed. Later checks use the files of earlier ones
(under ``--work``). Nothing is downloaded. The checks, what each must hold, and the weights they
use: docs/gpu_check.md.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # train_vqgan.py, train_transformer.py and tests/ helpers
sys.path[1:1] = [str(ROOT / "scripts"), str(ROOT / "benchmarks")]  # gpu_check_more, the benchmarks
import gpu_check_more  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
NEAR_TIE = 1e-4  # relative gap between two candidates below which float32 rounding may pick either
FEATURE_AGREEMENT = 1e-4  # GPU vs CPU float32 (no TF32): features, relative to their largest magnitude
FVD_AGREEMENT = 1e-3  # ... and FVD (a difference of traces: relative errors grow)


class Skip(Exception):
    """The check does not apply here (e.g. needs two GPUs)."""


gpu_check_more.base = sys.modules[__name__]  # its checks use this module's Skip and flag builders


@dataclass(frozen=True)
class Sizes:
    resolution: int
    sequence_length: int
    batch_size: int
    n_hiddens: int
    n_codes: int
    embedding_dim: int
    disc_channels: int
    disc_layers: int
    vq_steps: int
    gpt_steps: int
    n_layer: int
    n_head: int
    n_embd: int
    n_train: int
    n_test: int
    fvd_frames: int
    n_predict: int


GPU_SIZES = Sizes(resolution=64, sequence_length=16, batch_size=4, n_hiddens=32, n_codes=256,
                  embedding_dim=64, disc_channels=16, disc_layers=2, vq_steps=30, gpt_steps=30, n_layer=4,
                  n_head=4, n_embd=128, n_train=64, n_test=16, fvd_frames=16, n_predict=4)
# (one discriminator layer: each of its Conv3d then sees at least 4 of the 8 frames, the kernel depth; on
# fewer, the CPU bf16 Conv3d weight gradient of PyTorch 2.14 is garbage)
SMOKE_SIZES = Sizes(resolution=16, sequence_length=8, batch_size=2, n_hiddens=16, n_codes=32, embedding_dim=8,
                    disc_channels=8, disc_layers=1, vq_steps=3, gpt_steps=3, n_layer=1, n_head=2, n_embd=16,
                    n_train=8, n_test=4, fvd_frames=10, n_predict=2)
DOWNSAMPLE = (2, 4, 4)
# where the checks leave their files in the work folder (so --only can reuse an earlier run's)
LEFT_IN_WORK = {"vqgan_ckpt": ("vqgan_bf16-mixed/checkpoints/last.ckpt",
                               "vqgan_16-mixed/checkpoints/last.ckpt"),
                "codes": ("codes.h5",), "gpt_ckpt": ("gpt/checkpoints/last.ckpt",)}


@dataclass
class Context:
    """What the checks share: sizes, device, work folder and the files earlier checks wrote."""

    smoke: bool
    work: Path
    sizes: Sizes
    device: torch.device
    n_gpus: int
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def accelerator(self) -> list[str]:
        return ["--accelerator", "gpu" if self.device.type == "cuda" else "cpu", "--devices", "1"]

    def need(self, name: str) -> Path:
        """A file an earlier check wrote: in this run, or left in ``--work`` by an earlier run."""
        if name not in self.files:
            found = [self.work / rel for rel in LEFT_IN_WORK.get(name, ()) if (self.work / rel).is_file()]
            if not found:
                raise Skip(f"needs the {name} of an earlier check, which did not pass")
            self.files[name] = found[0]
        return self.files[name]

    @property
    def latent_tokens(self) -> int:
        s = self.sizes
        return (s.sequence_length // DOWNSAMPLE[0]) * (s.resolution // DOWNSAMPLE[1]) ** 2


# ------------------------------------------------------------------------------------------- set-up
def prepare(ctx: Context) -> None:
    """Demo data and LPIPS weights in the work folder."""
    from tats.data.demo import make_demo_data
    from tats.io.checkpoint import save_checkpoint
    from tats.io.fetch import SOURCES, cache_dir
    from tats.metrics.lpips import LPIPS

    s = ctx.sizes
    lpips_file = SOURCES["lpips"].converted_name
    ctx.files["demo"] = make_demo_data(ctx.work / "demo.h5", n_train=s.n_train, n_test=s.n_test,
                                       sequence_length=max(16, s.sequence_length + 2 * DOWNSAMPLE[0]),
                                       resolution=s.resolution,
                                       progress=False)
    if (cache_dir() / lpips_file).is_file():
        ctx.files["lpips"] = cache_dir()
    else:  # seeded random VGG16 features in the converted-file layout: LPIPS runs, values are not LPIPS's
        torch.manual_seed(0)
        state = LPIPS().state_dict()
        for key in [k for k in state if k.startswith("lin")]:
            state[key] = state[key].abs()  # non-negative heads, as trained ones: distances >= 0
        save_checkpoint({"state_dict": state, "meta": {"kind": "lpips", "source": "random"}},
                        ctx.work / "lpips" / lpips_file)
        ctx.files["lpips"] = ctx.work / "lpips"


# ------------------------------------------------------------------------------------------- checks
def check_cuda_tests(ctx: Context) -> str:
    if ctx.device.type != "cuda":
        raise Skip("no GPU (the suite runs tests/test_cuda.py and skips it)")
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", str(ROOT / "tests")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        raise AssertionError(f"pytest -m cuda: {last}\n{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return last


def vqgan_argv(ctx: Context, root: Path, precision: str, *extra: str) -> list[str]:
    s = ctx.sizes
    sizes = {"batch_size": s.batch_size, "resolution": s.resolution, "sequence_length": s.sequence_length,
             "embedding_dim": s.embedding_dim, "n_codes": s.n_codes, "n_hiddens": s.n_hiddens,
             "disc_channels": s.disc_channels, "disc_layers": s.disc_layers, "max_steps": s.vq_steps}
    gan_and_lpips_from_step_0 = {"discriminator_iter_start": 0, "perceptual_weight": 4, "image_gan_weight": 1,
                                 "video_gan_weight": 1, "gan_feat_weight": 4}
    flags = [f for k, v in {**sizes, **gan_and_lpips_from_step_0}.items() for f in (f"--{k}", str(v))]
    return [*ctx.accelerator, "--precision", precision, "--data_path", str(ctx.files["demo"]),
            "--default_root_dir", str(root), "--no_resume", "--seed", "0", "--num_workers", "0", *flags,
            "--downsample", *map(str, DOWNSAMPLE), "--norm_type", "batch",
            "--lpips_cache_dir", str(ctx.files["lpips"]), "--gradient_clip_val", "1.0",
            "--limit_val_batches", "1", "--num_sanity_val_steps", "0", "--progress_bar_refresh_rate", "0",
            "--log_videos_every_n_steps", "0", *extra]


def _train_vqgan(ctx: Context, precision: str, *extra: str) -> str:
    import train_vqgan
    from tats.train.scalers import PerOptimizerGradScaler

    root = ctx.work / f"vqgan_{precision}"
    trainer, module = train_vqgan.main(vqgan_argv(ctx, root, precision, *extra))
    steps = ctx.sizes.vq_steps
    assert trainer.global_step == steps, f"stopped at step {trainer.global_step} of {steps}"
    skipped = module.nonfinite_ae.total + module.nonfinite_disc.total
    assert skipped == 0, f"{skipped} steps skipped as non-finite"
    bad = [k for k, v in trainer.callback_metrics.items() if not torch.isfinite(v).all()]
    assert not bad, f"non-finite metrics {bad}"
    assert torch.isfinite(module.vqgan.codebook.embeddings).all(), "non-finite codebook"
    plugin = trainer.precision_plugin
    scales = ""
    if precision == "16-mixed" and ctx.device.type == "cuda":
        assert isinstance(plugin, PerOptimizerGradScaler), f"precision plugin {type(plugin).__name__}"
        scales = ", loss scales " + " / ".join(f"{s.get_scale():g}" for s in plugin.scalers)
    ctx.files["vqgan_ckpt"] = root / "checkpoints" / "last.ckpt"
    recon = float(trainer.callback_metrics.get("train/recon_loss", torch.tensor(float("nan"))))
    return (f"{steps} steps, GAN + LPIPS from step 0, recon loss {recon:.4f}, 0 skipped, "
            f"{module.fp32_fallbacks} fp16 forwards rerun in fp32{scales}")


def check_vqgan_fp16(ctx: Context) -> str:
    if ctx.device.type != "cuda":
        import train_vqgan
        from tats.train.flags import parse_args_with_config

        parse_args_with_config(train_vqgan.build_parser(),
                               vqgan_argv(ctx, ctx.work / "x", "16-mixed", "--accumulate_grad_batches", "2"))
        raise Skip("fp16 autocast needs CUDA (command line parsed)")
    return _train_vqgan(ctx, "16-mixed", "--accumulate_grad_batches", "2")


def check_vqgan_bf16(ctx: Context) -> str:
    return _train_vqgan(ctx, "bf16-mixed")


def check_extract_codes(ctx: Context) -> str:
    import h5py
    from einops import rearrange

    from tats.data import VideoDataModule
    from tats.vqgan.load import load_vqgan

    ckpt, s = ctx.need("vqgan_ckpt"), ctx.sizes
    out = ctx.work / "codes.h5"
    _script("extract_codes").main([
        "--vqgan_ckpt", str(ckpt), "--data_path", str(ctx.files["demo"]), "--output", str(out),
        "--sequence_length", str(s.sequence_length), "--resolution", str(s.resolution),
        "--device", str(ctx.device), "--batch_size", "8"])
    with h5py.File(out, "r") as f:
        device_codes = torch.from_numpy(f["test_codes"][:]).long()  # (N, t, h, w)
        encoded_on = str(f.attrs["encoded_on"])
    dm = VideoDataModule(argparse.Namespace(data_path=str(ctx.files["demo"]), resolution=s.resolution,
                                            sequence_length=s.sequence_length, num_workers=0))
    dm.setup()
    video = torch.stack([dm.val_dataset[i]["video"] for i in range(len(dm.val_dataset))])  # the same clips
    vqgan = load_vqgan(ckpt)
    with torch.no_grad():
        z = vqgan.encode_latents(video)  # (N, D, t, h, w) on the CPU
    cpu_codes = vqgan.codebook.codes(z)
    assert device_codes.shape == cpu_codes.shape, f"{tuple(device_codes.shape)} vs {tuple(cpu_codes.shape)}"
    differ = device_codes != cpu_codes
    gap = 0.0
    if differ.any():  # allowed only where both codes are (almost) equally near on the CPU
        flat = rearrange(z, "n d t h w -> n t h w d")[differ].double()
        emb = vqgan.codebook.embeddings.double()
        d_dev = (flat - emb[device_codes[differ]]).pow(2).sum(-1)
        d_cpu = (flat - emb[cpu_codes[differ]]).pow(2).sum(-1)
        gap = float(((d_dev - d_cpu) / d_cpu.clamp_min(1e-30)).max())
        assert gap <= NEAR_TIE, (f"{int(differ.sum())} of {differ.numel()} codes differ from the CPU's, "
                                 f"not only at near-ties (relative distance gap {gap:.2e})")
    ctx.files["codes"] = out
    return (f"{differ.numel()} test codes encoded on {encoded_on}; {int(differ.sum())} differ from the CPU's"
            + (f" (near-ties, gap <= {gap:.1e})" if differ.any() else ""))


class _RecompileCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "Recompiling function" in record.getMessage():
            self.count += 1


def gpt_argv(ctx: Context, root: Path, *extra: str) -> list[str]:
    """``train_transformer.py`` flags for the demo codes of the earlier checks (``extra`` appended)."""
    codes, vqgan, s = ctx.need("codes"), ctx.need("vqgan_ckpt"), ctx.sizes
    return [*ctx.accelerator, "--vtokens", "--data_path", str(codes), "--vqvae", str(vqgan),
            "--default_root_dir", str(root), "--no_resume", "--seed", "0", "--num_workers", "0",
            "--batch_size", str(s.batch_size), "--sequence_length", str(s.sequence_length),
            "--resolution", str(s.resolution), "--n_layer", str(s.n_layer), "--n_head", str(s.n_head),
            "--n_embd", str(s.n_embd), "--block_size", str(ctx.latent_tokens), "--base_lr", "1e-4",
            "--limit_val_batches", "1", "--num_sanity_val_steps", "0", "--progress_bar_refresh_rate", "0",
            *extra]


def check_transformer(ctx: Context) -> str:
    import torch._dynamo

    import train_transformer

    s = ctx.sizes
    compiled = ctx.device.type == "cuda"
    root = ctx.work / "gpt"
    argv = gpt_argv(ctx, root, "--max_steps", str(s.gpt_steps), "--precision", "bf16-mixed",
                    "--activation_checkpointing", *(["--compile"] if compiled else []))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    counter, dynamo_log = _RecompileCounter(), logging.getLogger("torch._dynamo")
    torch._logging.set_logs(recompiles=True)
    dynamo_log.addHandler(counter)
    try:
        trainer = train_transformer.main(argv)
    finally:
        dynamo_log.removeHandler(counter)
        torch._logging.set_logs()
    assert trainer.global_step == s.gpt_steps, f"stopped at step {trainer.global_step} of {s.gpt_steps}"
    assert trainer.precision == "bf16-mixed", trainer.precision
    loss = float(trainer.callback_metrics["train/loss"])
    assert math.isfinite(loss), f"loss {loss}"
    ctx.files["gpt_ckpt"] = root / "checkpoints" / "last.ckpt"
    if not compiled:
        return f"{s.gpt_steps} steps bf16 + activation checkpointing, loss {loss:.3f} (compile: GPU only)"
    breaks = torch._dynamo.utils.counters["graph_break"]
    limit = getattr(torch._dynamo.config, "recompile_limit", None) or torch._dynamo.config.cache_size_limit
    detail = (f"{s.gpt_steps} compiled bf16 steps with activation checkpointing, loss {loss:.3f}; "
              f"{sum(breaks.values())} graph breaks, {counter.count} recompiles (limit {limit})")
    assert not breaks, f"{detail}; first break: {next(iter(breaks))[:300]}"
    assert counter.count < limit, detail
    return detail


def _first_difference(a: torch.Tensor, b: torch.Tensor) -> str:
    idx = (a != b).nonzero()[0].tolist()
    n = int((a != b).sum())
    return f"first at {idx} ({int(a[tuple(idx)])} vs {int(b[tuple(idx)])}), {n} of {a.numel()} differ"


def _long_greedy(model, n_latent: int, cond: torch.Tensor, pos: int, dtype=None,
                 compile: bool = False) -> torch.Tensor:
    from tats.sampling import sample_long

    return sample_long(model, n_latent, len(cond), cond=cond, temporal_sample_pos=pos, greedy=True,
                       dtype=dtype, return_ids=True, compile=compile).cpu()


def check_long_sampling(ctx: Context) -> str:
    import copy

    from tats.gpt.load import load_transformer
    from tats.gpt.video_transformer import VideoTransformer

    on_cpu = ctx.device.type == "cpu"  # (the smoke run: the device side is the CPU side, computed once)
    trained_cpu = load_transformer(ctx.need("gpt_ckpt"), with_vqgan=False)
    cfg = trained_cpu.config
    t = cfg.latent_shape[0]
    n_latent, pos = t + 2, max(t - 1, 1)  # two latent frames past the training window
    cond = torch.arange(4) % max(cfg.n_cond_vocab, 1)
    notes = []
    # 1. seeded weights of std 0.5: well-separated logits, so fp32 greedy must agree token for token
    seeded = VideoTransformer(copy.deepcopy(trained_cpu.transformer)).eval()
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in seeded.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    ref = _long_greedy(seeded, n_latent, cond[:2], pos)
    got = ref if on_cpu else _long_greedy(copy.deepcopy(seeded).to(ctx.device), n_latent, cond[:2], pos)
    if not torch.equal(ref, got):
        rel = _tie_gap(seeded, ref, got, cond[:2], pos)
        raise AssertionError(f"seeded model: {ctx.device} greedy differs from the CPU's, "
                             f"{_first_difference(ref, got)}; there the CPU's logits are {rel:.1e} apart")
    notes.append(f"seeded model {tuple(got.shape)} equal")
    if not on_cpu:  # the compiled decoder (CUDA graphs over the static cache) must decode the same tokens
        device_model = copy.deepcopy(seeded).to(ctx.device)
        compiled = _long_greedy(device_model, n_latent, cond[:2], pos, compile=True)
        assert torch.equal(compiled, got), "compiled decoding: " + _first_difference(got, compiled)
        notes.append("compiled (CUDA graphs) equal")
    # 2. the release fixture, when the reference folder is there
    if (FIXTURES / "gpt_label.ckpt").is_file() and not on_cpu:
        from tats.io.checkpoint import load_checkpoint

        io = load_checkpoint(FIXTURES / "gpt_label_io.pt")
        release = load_transformer(FIXTURES / "gpt_label.ckpt", with_vqgan=False, device=ctx.device)
        ids = _long_greedy(release, 5, io["cond"][:, 0], int(io["long_temporal_sample_pos"]))
        assert torch.equal(ids, io["long_greedy_ids"]), "release fixture: " + \
            _first_difference(io["long_greedy_ids"], ids)
        notes.append("release fixture equal")
    elif not on_cpu:
        notes.append(f"release fixture not compared ({FIXTURES} is not on this machine)")
    # 3. the trained model: fp32 on the device vs the CPU (a barely trained model has close logits:
    #    a difference must start at a near-tie of the CPU's logits), then bf16
    trained = load_transformer(ctx.need("gpt_ckpt"), with_vqgan=False, device=ctx.device)
    ref = _long_greedy(trained_cpu, n_latent, cond, pos)
    got = ref if on_cpu else _long_greedy(trained, n_latent, cond, pos)
    if torch.equal(ref, got):
        notes.append("trained model equal")
    else:
        rel = _tie_gap(trained_cpu, ref, got, cond, pos)
        assert rel <= NEAR_TIE, (f"trained model: {_first_difference(ref, got)}, where the CPU's logits are "
                                 f"{rel:.1e} apart (no near-tie)")
        notes.append(f"trained model {_first_difference(ref, got)} (a near-tie: logits {rel:.1e} apart)")
    bf16 = _long_greedy(trained, n_latent, cond, pos, dtype=torch.bfloat16)
    assert bf16.shape == ref.shape and int(bf16.min()) >= 0 and int(bf16.max()) < cfg.vocab_size, \
        f"bf16 ids {tuple(bf16.shape)} in [{int(bf16.min())}, {int(bf16.max())}], vocabulary {cfg.vocab_size}"
    notes.append(f"bf16 agrees with fp32 on {float((bf16 == got).float().mean()):.1%} of tokens")
    return f"{n_latent} latent frames x {len(cond)}, window {pos}, fp32 vs CPU: " + "; ".join(notes)


def _tie_gap(model, ref: torch.Tensor, got: torch.Tensor, cond: torch.Tensor, pos: int) -> float:
    """Where the device's greedy ids ``got`` first leave the CPU's ``ref`` (both ``(B, n, H, W)``): the CPU
    logit of the CPU's token minus that of the device's, relative to the logits' spread. At least 0 (the
    CPU's greedy token is the largest there); close to 0: a near-tie."""
    from tats.sampling.long import context_frames

    b, f = (ref != got).nonzero()[0].tolist()[:2]  # (B, n, H, W): the first difference in sampling order
    frame_ref, frame_got = ref[b, f].flatten(), got[b, f].flatten()  # (H*W,) ids of that latent frame
    k = int((frame_ref != frame_got).nonzero()[0])
    # the window that token was drawn from: condition, its context frames (from position 0), the frame so far
    frames = list(context_frames(f, pos)) if f >= pos else list(range(f))
    prefix = torch.cat([model.cond_tokens(cond[b : b + 1], 1, torch.device("cpu")),
                        *(ref[b : b + 1, j].flatten(1) for j in frames), frame_ref[None, :k]], dim=1)
    with torch.no_grad():
        logits = model.transformer(prefix)[0, -1].double()  # (vocab,) on the CPU
    return float(logits[frame_ref[k]] - logits[frame_got[k]]) / float(logits.max() - logits.min())


def check_predict_frames(ctx: Context) -> str:
    from tats.metrics.lpips import LPIPS
    from tats.metrics.recon import lpips_video

    s = ctx.sizes
    out = ctx.work / "predict"
    metrics = _script("predict_frames").main([
        "--gpt_ckpt", str(ctx.need("gpt_ckpt")), "--data_path", str(ctx.files["demo"]),
        "--n_observed", str(DOWNSAMPLE[0]), "--n_frames", str(s.sequence_length + 2 * DOWNSAMPLE[0]),
        "--n_sample", str(s.n_predict),
        "--batch_size", str(s.n_predict), "--greedy", "--device", str(ctx.device), "--save", str(ctx.work),
        "--save_name", "predict", "--lpips_cache_dir", str(ctx.files["lpips"]), "--no_progress"])
    assert "lpips" in metrics, metrics.get("lpips_note")
    real = torch.from_numpy(np.load(out / "real.npy")[:, DOWNSAMPLE[0]:]).permute(0, 4, 1, 2, 3)
    pred = torch.from_numpy(np.load(out / "predicted.npy")[:, DOWNSAMPLE[0]:]).permute(0, 4, 1, 2, 3)
    cpu = lpips_video(real, pred, LPIPS.pretrained(ctx.files["lpips"])).double()
    got = torch.tensor(metrics["per_clip"]["lpips"], dtype=torch.float64)
    rel = float(((got - cpu).abs() / cpu.abs().clamp_min(1e-12)).max())
    assert rel <= NEAR_TIE, f"LPIPS on {ctx.device} differs from the CPU's by {rel:.1e} (relative)"
    return (f"{metrics['n_sample']} clips {metrics['n_observed']} -> {metrics['n_frames']} frames on "
            f"{ctx.device}: PSNR {metrics['psnr']:.2f}, LPIPS {metrics['lpips']:.4f} (CPU: {rel:.0e} apart)")


class _StandInFeatures(torch.nn.Module):
    """A small convolutional stand-in for I3D (smoke runs only): (B, 3, T, 224, 224) -> (B, 400)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv3d(3, 8, (3, 7, 7), stride=(2, 8, 8))
        self.proj = torch.nn.Linear(8, 400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.relu(self.conv(x)).mean(dim=(2, 3, 4)))


def check_fvd(ctx: Context) -> str:
    from tats.data.sources import iter_video_batches
    from tats.io.fetch import SOURCES, cache_dir
    from tats.metrics.fvd import I3DFeatureExtractor, frechet_distance
    from tats.metrics.i3d import InceptionI3d, load_i3d

    s = ctx.sizes
    clips = np.concatenate(list(iter_video_batches(str(ctx.files["demo"]), s.fvd_frames, s.n_test, 16,
                                                   resolution=s.resolution, split="test")))
    torch.manual_seed(0)
    if ctx.smoke:
        model, weights = _StandInFeatures().eval(), "stand-in features (smoke)"
    elif (cache_dir() / SOURCES["i3d"].converted_name).is_file():  # (no fetch: GPU machines may be offline)
        model, weights = load_i3d(), "TF-hub I3D"
    else:
        model, weights = InceptionI3d(400, 3, bn_eps=1e-3).eval(), "seeded random I3D"

    def features(device: torch.device) -> np.ndarray:
        ext = I3DFeatureExtractor(model.to(device), batch_size=8, progress=False)
        ext.update(clips)
        return ext.compute()

    cpu = features(torch.device("cpu"))
    dev = features(ctx.device) if ctx.device.type != "cpu" else cpu
    half = len(clips) // 2
    fvd_cpu, fvd_dev = frechet_distance(cpu[:half], cpu[half:]), frechet_distance(dev[:half], dev[half:])
    feat_rel = float(np.abs(dev - cpu).max() / np.abs(cpu).max())
    fvd_rel = abs(fvd_dev - fvd_cpu) / max(abs(fvd_cpu), 1e-12)
    detail = (f"{weights}, {len(clips)} clips of {s.fvd_frames} frames: FVD {fvd_dev:.4g} on {ctx.device} vs "
              f"{fvd_cpu:.4g} on the CPU ({fvd_rel:.1e} relative), features {feat_rel:.1e} relative")
    if ctx.device.type == "cuda":  # for contrast: what TF32 convolutions would have given
        ext = I3DFeatureExtractor(_Tf32Model(model.to(ctx.device)), batch_size=8, progress=False)
        ext.update(clips)
        tf32 = ext.compute()
        detail += f" (with TF32: {float(np.abs(tf32 - cpu).max() / np.abs(cpu).max()):.1e})"
    assert feat_rel <= FEATURE_AGREEMENT and fvd_rel <= FVD_AGREEMENT, detail
    return detail


class _Tf32Model(torch.nn.Module):
    """Runs ``model`` with TF32 convolutions and matmuls allowed, inside the extractor's no-TF32 block."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        saved = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
        try:
            return self.model(x)
        finally:
            torch.set_float32_matmul_precision(saved[0])
            torch.backends.cudnn.allow_tf32 = saved[1]


def check_ddp_nccl(ctx: Context) -> str:
    extra = ["--sync_batchnorm", "--accumulate_grad_batches", "2", "--max_steps", "6"]
    argv = vqgan_argv(ctx, ctx.work / "ddp", "16-mixed", *extra)
    i = argv.index("--accelerator")
    argv[i : i + 4] = ["--accelerator", "gpu", "--devices", "2", "--strategy", "ddp"]
    argv[argv.index("--perceptual_weight") + 1] = "0"  # (LPIPS is checked above; keep the ranks light)
    if ctx.n_gpus < 2:
        import train_vqgan
        from tats.train.flags import parse_args_with_config

        parse_args_with_config(train_vqgan.build_parser(), argv)
        raise Skip(f"needs 2 GPUs, found {ctx.n_gpus} (command line parsed)")
    dump = ctx.work / "ddp_dump"
    env = {**os.environ, "TATS_TEST_DUMP": str(dump),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)  # Lightning launches the second rank itself
    gpt = gpt_argv(ctx, ctx.work / "ddp_gpt", "--accumulate_grad_batches", "2", "--max_steps", "3",
                   "--precision", "bf16-mixed")
    j = gpt.index("--accelerator")
    gpt[j : j + 4] = ["--accelerator", "gpu", "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "_ddp_driver.py"), "vqgan", *argv, ":::",
                           "transformer", *gpt], env=env, cwd=ctx.work, capture_output=True, text=True,
                          timeout=420)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    from tats.io.checkpoint import load_checkpoint

    a, b = (load_checkpoint(dump / f"vqgan_rank{r}.pt") for r in (0, 1))
    assert a["world"] == b["world"] == 2 and a["global_step"] == b["global_step"] == 6
    codebook = [k for k in a["state"] if k.startswith("vqgan.codebook.")]
    differ = [k for k in a["state"] if not torch.equal(a["state"][k], b["state"][k])]
    assert not differ, f"ranks differ in {differ[:8]} ({len(differ)} tensors)"
    g0, g1 = (load_checkpoint(dump / f"transformer_rank{r}.pt") for r in (0, 1))
    assert g0["global_step"] == g1["global_step"] == 3
    g_differ = [k for k in g0["state"] if not torch.equal(g0["state"][k], g1["state"][k])]
    assert not g_differ, f"GPT ranks differ in {g_differ[:8]} ({len(g_differ)} tensors)"
    return (f"2 NCCL ranks, VQGAN fp16, SyncBatchNorm, accumulate 2, 6 steps: {len(codebook)} codebook "
            f"buffers and all {len(a['state'])} tensors identical; GPT bf16, accumulate 2, 3 steps: all "
            f"{len(g0['state'])} tensors identical")


CHECKS: list[tuple[str, Callable[[Context], str]]] = [
    ("cuda-tests", check_cuda_tests),
    ("vqgan-16-mixed", check_vqgan_fp16),
    ("vqgan-bf16-mixed", check_vqgan_bf16),
    ("extract-codes", check_extract_codes),
    ("transformer-compile-bf16", check_transformer),
    ("long-sampling", check_long_sampling),
    ("predict-frames-lpips", check_predict_frames),
    ("fvd-gpu-vs-cpu", check_fvd),
    ("ddp-nccl-vqgan", check_ddp_nccl),
    *gpu_check_more.CHECKS,
]


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_gpu_check_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_checks(ctx: Context, names: Sequence[str]) -> list[str]:
    """Run the named checks in order; returns their result lines (printed as they finish)."""
    lines = []
    for name, fn in CHECKS:
        if name not in names:
            continue
        t0 = time.perf_counter()
        try:
            detail = fn(ctx)
            line = f"PASS {name} ({time.perf_counter() - t0:.0f}s): {detail}"
        except Skip as why:
            line = f"SKIP {name}: {why}"
        except Exception as err:  # noqa: BLE001 - every failure becomes a FAIL line, the next check runs
            traceback.print_exc()
            reason = str(err).strip() or type(err).__name__
            line = f"FAIL {name} ({time.perf_counter() - t0:.0f}s): {type(err).__name__}: {reason}"
        print(line, flush=True)
        lines.append(line)
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu-smoke", action="store_true", help="run on the CPU at tiny sizes (the test suite)")
    p.add_argument("--work", default=None, help="folder for data, checkpoints, outputs (default: temporary)")
    p.add_argument("--only", nargs="+", choices=[n for n, _ in CHECKS], default=None,
                   help="run these checks only (later ones need the files of earlier ones)")
    args = p.parse_args(argv)
    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not args.cpu_smoke and n_gpus == 0:
        p.error("no CUDA GPU found: use --cpu-smoke for the CPU paths")
    device = torch.device("cpu") if args.cpu_smoke else torch.device("cuda")
    if args.cpu_smoke:  # tiny ops, token-by-token decoding: a second thread only adds synchronisation
        torch.set_num_threads(1)
    sizes = SMOKE_SIZES if args.cpu_smoke else GPU_SIZES
    names = args.only or [n for n, _ in CHECKS]
    os.environ.setdefault("TATS_OFFLINE", "1")  # cached weights or seeded random ones: never a download
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        work.mkdir(parents=True, exist_ok=True)
        name = torch.cuda.get_device_name(0) if n_gpus else "none"
        print(f"gpu_check: {'CPU smoke' if args.cpu_smoke else f'{n_gpus} GPU(s): {name}'}, torch "
              f"{torch.__version__}, work folder {work}", flush=True)
        ctx = Context(smoke=args.cpu_smoke, work=work, sizes=sizes, device=device, n_gpus=n_gpus)
        prepare(ctx)
        lines = run_checks(ctx, names)
    print("\n== gpu_check summary ==\n" + "\n".join(lines), flush=True)
    return 1 if any(line.startswith("FAIL") for line in lines) else 0


if __name__ == "__main__":
    sys.exit(main())
