"""Video prediction: continue the first frames of real clips and score the predicted frames, in Latent
Video Transformer style protocols (BAIR: 1 observed -> 15 predicted frames, Kinetics: 5 -> 11)::

    python scripts/predict_frames.py --gpt_ckpt GPT.ckpt --vqgan_ckpt VQGAN.ckpt --data_path bair.h5 \\
        --n_observed 1 --n_frames 16 --n_sample 256 --batch_size 16

docs/sampling.md has which clips it reads and what it writes.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tats.cli import common
from tats.io.registry import check_files, resolve_args
from tats.io.samples import PairWriter
from tats.io.video import to_uint8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Predict the continuation of real video clips.")
    p.add_argument("--gpt_ckpt", required=True,
                   help="transformer checkpoint (dense latent grid) or published name")
    p.add_argument("--vqgan_ckpt", default=None,
                   help="VQGAN checkpoint or published name; default: the one inside --gpt_ckpt")
    p.add_argument("--data_path", default=None, help="dataset (.h5, video folder, frame folders); None: demo")
    p.add_argument("--image_folder", action="store_true", help="--data_path holds frame folders")
    p.add_argument("--split", choices=("train", "test"), default="test", help="which split's clips")
    p.add_argument("--resolution", type=int, default=None, help="frame size; default: the model's")
    p.add_argument("--sample_every_n_frames", type=int, default=1)
    p.add_argument("--n_observed", type=int, default=1, help="observed (priming) frames")
    p.add_argument("--n_frames", type=int, default=16, help="frames of a result, the observed ones included")
    p.add_argument("--temporal_sample_pos", type=int, default=None,
                   help="sliding-window context beyond the training length (default t - 1)")
    p.add_argument("--no_lpips", action="store_true", help="skip LPIPS even when its weights are cached")
    p.add_argument("--lpips_cache_dir", default=None, help="where the converted LPIPS weights are")
    common.add_sampling_flags(p, n_sample=16, batch_size=8)
    return p


def output_dir(args: argparse.Namespace) -> Path:
    return common.run_dir(args, f"{Path(args.gpt_ckpt).stem}_predict{args.n_observed}to{args.n_frames}_"
                                f"{args.split}_{common.sampling_tag(args)}")


def validate(args: argparse.Namespace, model) -> int:
    """Check the flags against the model; returns the resolution of the clips."""
    cfg = model.config
    if model.vqgan is None:
        raise SystemExit(f"{args.gpt_ckpt} holds no VQGAN: pass --vqgan_ckpt")
    if cfg.sample_every_n_latent_frames > 0:
        raise SystemExit(f"--gpt_ckpt {args.gpt_ckpt} sees a sparse frame grid; video prediction needs a "
                         "dense model (sample_every_n_latent_frames = 0)")
    if cfg.cond_type == "audio":
        raise SystemExit("--gpt_ckpt is audio-conditioned: use scripts/sample_audio_cond.py")
    common.check_sampling_flags(args, cfg.vocab_size, args.gpt_ckpt)
    common.check_decoding_flags(args, model, args.gpt_ckpt)
    dt, dh, dw = model.vqgan.config.downsample
    _, h, w = cfg.latent_shape
    resolution = args.resolution or h * dh
    if resolution != h * dh or resolution != w * dw:
        raise SystemExit(f"--resolution {resolution}: the transformer was trained on {h}x{w} latent frames, "
                         f"i.e. {h * dh}x{w * dw} pixels")
    if not 1 <= args.n_observed < args.n_frames:
        raise SystemExit(f"--n_observed must lie in [1, --n_frames - 1 = {args.n_frames - 1}], "
                         f"got {args.n_observed}")
    t = cfg.latent_shape[0]
    pos = args.temporal_sample_pos
    if pos is not None and not 1 <= pos < t:
        raise SystemExit(f"--temporal_sample_pos must lie in [1, {t - 1}], got {pos}")
    return resolution


def real_clips(args: argparse.Namespace, resolution: int):
    """A DataLoader of ``dict(video=(B, C, n_frames, H, W), label, text?)`` from the chosen split."""
    from tats.data import VideoDataModule
    from tats.data.transforms import sequence_length_for

    # One clip of n_frames frames per video (the first window of each test video).
    data = VideoDataModule(argparse.Namespace(
        data_path=args.data_path, resolution=resolution,
        sequence_length=sequence_length_for(args.n_frames, args.sample_every_n_frames, args.image_folder),
        sample_every_n_frames=args.sample_every_n_frames, image_folder=args.image_folder,
        batch_size=args.batch_size, num_workers=0, seed=args.seed, clips_per_video=1))
    try:
        data.setup()
    except (ValueError, FileNotFoundError, OSError) as err:
        raise SystemExit(f"--data_path {args.data_path}: {err}") from None
    dataset = data.train_dataset if args.split == "train" else data.val_dataset
    if len(dataset) == 0:
        raise SystemExit(f"--data_path {args.data_path}: no {args.split} clips of {args.n_frames} frames")
    if len(dataset) < args.n_sample:
        warnings.warn(f"--n_sample {args.n_sample}: the {args.split} split has only {len(dataset)} clips",
                      stacklevel=2)
    return data.val_dataloader() if args.split == "test" else torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, shuffle=False, num_workers=0)


def condition(model, batch: dict):
    kind = model.config.cond_type
    if kind == "label":
        labels = batch["label"]
        if int(labels.max()) >= model.config.n_cond_vocab:
            raise SystemExit(f"--data_path: clip label {int(labels.max())} is outside the model's "
                             f"{model.config.n_cond_vocab} classes (is this the dataset it was trained on?)")
        return labels
    if kind == "text":
        if "text" not in batch:
            raise SystemExit("the text-conditioned model needs captions, and the dataset has none")
        return list(batch["text"])
    return None


def frame_metrics(real: torch.Tensor, pred: torch.Tensor, lpips_model) -> dict[str, torch.Tensor]:
    """Per-clip PSNR (dB), SSIM and LPIPS of uint8 videos ``(B, T, H, W, C)`` on the CPU; LPIPS runs on
    its model's device (the clips are moved there chunk by chunk) and comes back to the CPU."""
    from einops import rearrange

    from tats.metrics.recon import lpips_video, psnr, ssim

    x = rearrange(real, "b t h w c -> b c t h w")
    y = rearrange(pred, "b t h w c -> b c t h w")
    out = {"psnr": psnr(x, y)}
    if min(x.shape[-2:]) >= 11:  # SSIM's Gaussian window
        out["ssim"] = ssim(x, y)
    if lpips_model is not None:
        out["lpips"] = lpips_video(x, y, lpips_model).cpu()
    return out


def load_lpips(args: argparse.Namespace, device: torch.device):
    """The pretrained LPIPS when its converted weights are cached, else None (with a note)."""
    if args.no_lpips:
        return None, "skipped (--no_lpips)"
    from tats.metrics.lpips import LPIPS

    try:
        return LPIPS.pretrained(args.lpips_cache_dir).to(device), None
    except FileNotFoundError as err:
        return None, f"not computed: {err}"


def main(argv: Sequence[str] | None = None) -> dict:
    """Predict ``--n_sample`` clips; returns the metrics written to ``metrics.json``."""
    from tats.gpt.load import load_transformer
    from tats.sampling import predict_frames

    args = build_parser().parse_args(argv)
    resolve_args(args, gpt_ckpt="transformer", vqgan_ckpt="vqgan")  # published names
    check_files(args, "gpt_ckpt", "vqgan_ckpt")
    device = common.pick_device(args.device)
    common.seed_everything(args.seed + args.run)
    model = load_transformer(args.gpt_ckpt, vqgan_ckpt=args.vqgan_ckpt, device=device)
    resolution = validate(args, model)
    loader = real_clips(args, resolution)
    options = common.sampling_options(args, device)
    lpips_model, lpips_note = load_lpips(args, device)
    dt = model.vqgan.config.downsample[0]
    n_latent = math.ceil(args.n_frames / dt)
    out = output_dir(args)
    pred_writer = PairWriter(out, args.n_sample, fps=args.fps)
    per_clip: dict[str, list[float]] = {}
    t0, done = time.perf_counter(), 0
    for batch in loader:
        if done >= args.n_sample:
            break
        video = batch["video"][: args.n_sample - done]  # (B, C, n_frames, H, W)
        cond = condition(model, batch)
        if isinstance(cond, (list, torch.Tensor)):
            cond = cond[: len(video)]
        codes = predict_frames(model, video, args.n_observed, n_latent, cond,
                               temporal_sample_pos=args.temporal_sample_pos, options=options,
                               progress=not args.no_progress)  # (B, n_latent, h, w)
        pred = model.decode(codes, chunk_size=8, out_device="cpu")[:, :, : args.n_frames]
        # the observed frames are given: show (and store) the real ones, not their reconstruction
        pred = torch.cat([video[:, :, : args.n_observed], pred[:, :, args.n_observed :].float()], dim=2)
        real_u8, pred_u8 = to_uint8(video), to_uint8(pred.float())  # (B, T, H, W, C)
        pred_writer.add(real_u8, pred_u8)
        scores = frame_metrics(torch.from_numpy(real_u8[:, args.n_observed :]),
                               torch.from_numpy(pred_u8[:, args.n_observed :]), lpips_model)
        for k, v in scores.items():
            per_clip.setdefault(k, []).extend(v.tolist())
        done += len(video)
    pred_writer.close()
    if done < args.n_sample:
        raise SystemExit(f"--n_sample {args.n_sample}: the {args.split} split gave only {done} clips")
    metrics = {
        "gpt_ckpt": str(args.gpt_ckpt), "data_path": args.data_path, "split": args.split,
        "n_sample": done, "n_observed": args.n_observed, "n_frames": args.n_frames,
        "predicted_frames": args.n_frames - args.n_observed, "video_shape": pred_writer.video_shape,
        **{k: float(np.mean(v)) for k, v in per_clip.items()},
        **{f"{k}_std": float(np.std(v)) for k, v in per_clip.items()},
        "lpips_note": lpips_note, "per_clip": per_clip, "seconds": round(time.perf_counter() - t0, 2),
        "settings": common.plain_settings(args),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    shown = "  ".join(f"{k.upper()} {metrics[k]:.4f}" for k in ("psnr", "ssim", "lpips") if k in metrics)
    print(f"predicted {done} clips ({args.n_observed} -> {args.n_frames} frames) into {out}: {shown}")
    return metrics


if __name__ == "__main__":
    main()
