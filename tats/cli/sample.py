"""The short and long sampling command lines (``sample_short_videos.py``, ``sample_long_videos.py`` and
the release's names for them are thin wrappers over :func:`main`).

Samples are streamed: each batch is decoded, written into ``samples.npy`` (uint8 ``(N, T, H, W, C)``,
the file the FVD step reads, :class:`tats.io.samples.SampleWriter`) and fed to the I3D feature
extractor (:mod:`tats.cli.evaluate`), so memory stays flat however large ``--n_sample`` is.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tats.cli import common
from tats.cli.evaluate import fvd_extractor, sample_fvd
from tats.io.registry import check_files, resolve_args
from tats.io.samples import SampleWriter
from tats.io.video import to_uint8
from tats.metrics.fvd import PROTOCOLS


def steady_rate(batch_times: list[tuple[float, int]]) -> float | None:
    """Tokens/s over the batches after the first ((seconds, tokens) per batch); None with one batch."""
    rest = batch_times[1:]
    return round(sum(n for _, n in rest) / sum(t for t, _ in rest), 1) if rest else None


def build_parser(long: bool) -> argparse.ArgumentParser:
    """Flags of the release's sampling scripts (seed READMEs 004 and 002) plus ours."""
    what = "long videos with the sliding window" if long else "videos of the training length"
    p = argparse.ArgumentParser(description=f"Sample {what} from a TATS transformer checkpoint.")
    m = p.add_argument_group("model and condition")
    m.add_argument("--gpt_ckpt", required=True,
                   help="transformer checkpoint (ours or the release's) or published name (ucf101-base, ...)")
    m.add_argument("--vqgan_ckpt", default=None,
                   help="VQGAN checkpoint or published name (ucf101, ...); default: the one in --gpt_ckpt")
    m.add_argument("--class_cond", action="store_true", help="the model is class-conditional (checked)")
    m.add_argument("--label", type=int, default=None, help="class id for every sample (default: cycle)")
    m.add_argument("--text", action="append", default=None, help="caption(s) for a text-conditioned model")
    common.add_sampling_flags(p.add_argument_group("sampling and output"), n_sample=common.RELEASE_N_SAMPLE,
                              release_filter=True)
    f = p.add_argument_group("FVD of the samples (the release's protocol by default)")
    f.add_argument("--compute_fvd", action="store_true",
                   help="FVD/KVD of the samples against real training clips from --data_path")
    f.add_argument("--data_path", default=None, help="real clips for FVD: dataset, .npy, videos, demo")
    f.add_argument("--image_folder", action="store_true", help="--data_path holds frame folders")
    f.add_argument("--sample_every_n_frames", type=int, default=1)
    f.add_argument("--resolution", type=int, default=128, help="resolution of the real clips for FVD")
    f.add_argument("--fvd_protocol", choices=("tats", "styleganv", "coinrun"), default="tats",
                   help="tats (the release's): samples and real clips become uint8 by truncation, frames "
                        "squashed to 224x224; styleganv: rounding, shorter side 224 and centre crop; "
                        "coinrun: the release's MUGEN I3D variant on 256x256 frames")
    f.add_argument("--n_real", type=int, default=common.RELEASE_N_SAMPLE,
                   help="real clips for FVD, drawn at random over every training window (the release: 2048)")
    f.add_argument("--real_seed", type=int, default=0, help="seed of the real clips' draw")
    f.add_argument("--i3d_path", "--i3d", default=None,
                   help="I3D weights file, or `release` for the release's i3d_pretrained_400.pt "
                   "(default: the fetched TF-hub weights)")
    f.add_argument("--n_trials", type=int, default=1, help="FVD trials over random halves (mean and std)")
    if long:
        g = p.add_argument_group("long videos")
        g.add_argument("--sample_length", type=int, default=16, help="number of latent frames to generate")
        g.add_argument("--temporal_sample_pos", type=int, default=1,
                       help="latent frames of context each new frame sees (1 <= pos < trained t)")
        g.add_argument("--sample_resolution", type=int, default=None,
                       help="latent height/width of the result (> trained: spatial sliding window)")
        g.add_argument("--top_k_init", type=int, default=None, help="top_k for the first window")
        g.add_argument("--top_p_init", type=float, default=None, help="top_p for the first window")
        add_long_decode_flags(g)
    return p


def add_long_decode_flags(p: argparse.ArgumentParser) -> None:
    """How long code sequences are decoded (:func:`tats.vqgan.decode.decode_codes`)."""
    p.add_argument("--decode_chunk", type=int, default=8,
                   help="latent frames decoded at once (bounded memory for long videos)")
    p.add_argument("--decode_overlap", type=int, default=None,
                   help="latent frames of context each chunk decodes on both sides and drops (default: the "
                        "decoder's reach, measured: equal to one whole decode for batch-norm VQGANs; 0: each "
                        "chunk alone, with seams)")
    p.add_argument("--decode_blend", action="store_true",
                   help="cross-fade the chunks' overlaps instead of cutting them (group-norm VQGANs, whose "
                        "chunks differ in their statistics)")


def decode_settings(args: argparse.Namespace, model: Any) -> dict[str, Any]:
    """The long-video decode a run used, for its summary: chunk, overlap (resolved), blend, and whether it
    equals one decode of the whole sequence (batch norm with the decoder's full reach, no blend)."""
    from tats.vqgan.decode import temporal_radius

    reach = temporal_radius(model.require_vqgan())
    overlap = reach if args.decode_overlap is None else args.decode_overlap
    exact = model.vqgan.config.norm_type == "batch" and overlap >= reach and not args.decode_blend
    return dict(chunk=args.decode_chunk, overlap=overlap, blend=args.decode_blend, decoder_reach=reach,
                equals_whole_decode=exact)


def output_dir(args: argparse.Namespace, long: bool) -> Path:
    """``--save/--save_name``, or a name that encodes every sampling setting."""
    parts = [Path(args.gpt_ckpt).stem, "long" if long else "short"]
    if long:
        parts += [f"len{args.sample_length}", f"pos{args.temporal_sample_pos}"]
        if args.sample_resolution:
            parts.append(f"res{args.sample_resolution}")
    return common.run_dir(args, "_".join([*parts, common.sampling_tag(args)]))


def check_paths(args: argparse.Namespace) -> None:
    """Fail fast, before loading anything, on input files that do not exist (naming the flag)."""
    check_files(args, "gpt_ckpt", "vqgan_ckpt", "i3d_path")
    if args.compute_fvd:
        if args.n_real < 2:
            raise SystemExit(f"--n_real must be >= 2 (the covariance needs two clips), got {args.n_real}")
        if not args.data_path:
            raise SystemExit("--compute_fvd needs --data_path (a dataset, .npy, video folder, or 'demo')")
        if args.data_path != "demo" and not Path(args.data_path).expanduser().exists():
            raise SystemExit(f"--data_path {args.data_path}: no such file or folder")


def validate(args: argparse.Namespace, model: Any, long: bool) -> None:
    """Fail fast, before sampling, on flags that cannot work with this model."""
    cfg = model.config
    common.check_sampling_flags(args, cfg.vocab_size, args.gpt_ckpt)
    common.check_decoding_flags(args, model, args.gpt_ckpt)
    if args.class_cond and cfg.cond_type != "label":
        raise SystemExit(f"--class_cond given but {args.gpt_ckpt} is conditioned on {cfg.cond_type!r}, "
                         "not on class labels")
    if cfg.cond_type == "text" and not args.text:
        raise SystemExit(f"{args.gpt_ckpt} is text-conditioned: pass --text \"a caption\"")
    if args.text and cfg.cond_type != "text":
        raise SystemExit(f"--text given but {args.gpt_ckpt} is conditioned on {cfg.cond_type!r}, not on text")
    if cfg.cond_type == "audio":
        raise SystemExit(f"{args.gpt_ckpt} is audio-conditioned: sample it with scripts/sample_audio_cond.py")
    if args.label is not None and (cfg.cond_type != "label" or not 0 <= args.label < cfg.n_cond_vocab):
        raise SystemExit(f"--label must lie in [0, {cfg.n_cond_vocab - 1}] for a class-conditional model, "
                         f"got {args.label} ({args.gpt_ckpt} is conditioned on {cfg.cond_type!r})")
    if long:
        t = cfg.latent_shape[0]
        if not 1 <= args.temporal_sample_pos < t:
            raise SystemExit(f"--temporal_sample_pos must lie in [1, {t - 1}] (model trained on {t} latent "
                             f"frames), got {args.temporal_sample_pos}")
        if args.sample_length < 1:
            raise SystemExit(f"--sample_length must be >= 1 latent frame, got {args.sample_length}")
        if args.sample_resolution is not None and args.sample_resolution < max(cfg.latent_shape[1:]):
            raise SystemExit(f"--sample_resolution {args.sample_resolution} is smaller than the trained "
                             f"latent size {tuple(cfg.latent_shape[1:])}")
        if args.sample_resolution is not None and args.decode == "masked" and (
                (args.sample_resolution,) * 2 != tuple(cfg.latent_shape[1:])):
            raise SystemExit("--sample_resolution (the spatial sliding window) is for the GPT: a masked "
                             f"model samples at its trained latent size {tuple(cfg.latent_shape[1:])}")
    if model.vqgan is None:
        raise SystemExit(f"{args.gpt_ckpt} holds no VQGAN: pass --vqgan_ckpt")


def batch_cond(args: argparse.Namespace, model: Any, start: int, size: int) -> Any:
    """The condition of samples ``start .. start+size-1``: labels cycle through the classes."""
    cfg = model.config
    if cfg.cond_type == "label":
        if args.label is not None:
            return args.label
        return torch.arange(start, start + size) % cfg.n_cond_vocab
    if cfg.cond_type == "text":
        return [args.text[(start + i) % len(args.text)] for i in range(size)]
    return None


def main(argv: Sequence[str] | None = None, long: bool = False) -> dict:
    """Sample ``--n_sample`` videos, write them, optionally compute FVD; returns the summary dict."""
    from tats.gpt.load import load_transformer
    from tats.sampling import sample_long, sample_short

    args = build_parser(long).parse_args(argv)
    common.resolve_filter_defaults(args)
    resolve_args(args, gpt_ckpt="transformer", vqgan_ckpt="vqgan", i3d_path="i3d")  # published names
    check_paths(args)
    device = common.pick_device(args.device)
    common.seed_everything(args.seed + args.run)
    model = load_transformer(args.gpt_ckpt, vqgan_ckpt=args.vqgan_ckpt, device=device)
    validate(args, model, long)
    out = output_dir(args, long)
    out.mkdir(parents=True, exist_ok=True)
    options = common.sampling_options(args, device)
    extractor = fvd_extractor(args, device) if args.compute_fvd else None
    # uint8 as the FVD protocol has it (tats: truncation, the release's), so samples.npy is what FVD saw
    uint8 = PROTOCOLS[args.fvd_protocol].uint8

    writer = SampleWriter(out, args.n_sample, fps=args.fps, save_videos=args.save_videos)
    n_batches = math.ceil(args.n_sample / args.batch_size)
    t0, n_tokens, batch_times, labels = time.perf_counter(), 0, [], []
    bar = tqdm(total=args.n_sample, desc="videos", unit="video", disable=args.no_progress)
    for b in range(n_batches):
        start = b * args.batch_size
        size = min(args.batch_size, args.n_sample - start)
        cond = batch_cond(args, model, start, size)
        if model.config.cond_type == "label":
            labels.append(torch.as_tensor(cond).expand(size))
        t_batch = time.perf_counter()
        if long:
            codes = sample_long(model, args.sample_length, size, cond, args.temporal_sample_pos, options,
                                progress=not args.no_progress, sample_resolution=args.sample_resolution,
                                top_k_init=args.top_k_init, top_p_init=args.top_p_init)
            video = model.decode(codes, chunk_size=args.decode_chunk, overlap=args.decode_overlap,
                                 out_device="cpu", blend=args.decode_blend)
        else:
            codes = sample_short(model, size, cond, options, progress=not args.no_progress)
            video = model.decode(codes, out_device="cpu")
        n_tokens += codes[0].numel() * size
        # the first batch also compiles (--compile) and warms up: kept apart from the steady state
        batch_times.append((time.perf_counter() - t_batch, codes[0].numel() * size))
        clips = to_uint8(video, uint8)  # (b, T, H, W, C)
        writer.add(clips)
        if extractor is not None:
            extractor.update(clips)
        bar.update(size)
    bar.close()
    writer.close()
    if labels:  # the class of every sample, for evaluations that read samples.npy (eval_long_videos.py)
        np.save(out / "labels.npy", torch.cat(labels).numpy())
    samples = writer.samples  # its .shape is (N, T, H, W, C)
    elapsed = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "gpt_ckpt": str(args.gpt_ckpt), "dataset": args.dataset, "mode": "long" if long else "short",
        "n_sample": args.n_sample, "video_shape": list(samples.shape[1:]), "seconds": round(elapsed, 2),
        "tokens_per_s": round(n_tokens / elapsed, 1), "videos_per_s": round(args.n_sample / elapsed, 3),
        "uint8": uint8, "settings": common.plain_settings(args),
        "first_batch_seconds": round(batch_times[0][0], 2),
        # sampling and decoding of batches 2.. (None with one batch): the speed once compiled and warm
        "steady_tokens_per_s": steady_rate(batch_times),
    }
    if long:
        summary["decode"] = decode_settings(args, model)
    if args.text:
        summary["captions"] = list(args.text)  # sample i got caption i % len(captions)
    if extractor is not None:
        summary["fvd"] = sample_fvd(args, extractor, n_frames=samples.shape[1], uint8=uint8)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.n_sample} videos {tuple(samples.shape[1:])} to {out} "
          f"({summary['tokens_per_s']} tokens/s)")
    if "fvd" in summary:
        print(f"FVD {summary['fvd']['fvd']:.2f}  KVD {summary['fvd']['kvd']:.4f}")
    return summary
