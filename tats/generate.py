"""Command-line sampling: short and long videos to disk, with optional FVD.

The root scripts ``sample_short_videos.py`` and ``sample_long_videos.py`` are thin wrappers over
:func:`main`. Samples are streamed: each batch is decoded, written into a memory-mapped
``samples.npy`` (uint8 ``(N, T, H, W, C)``, the file the FVD step reads) and fed to the I3D feature
extractor, so memory stays flat however large ``--n_sample`` is.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tats.io.registry import resolve_args
from tats.io.video import save_contact_sheet, save_video_grid, to_uint8, write_frames
from tats.utils import pick_device, seed_everything

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The release's defaults of its short, long and audio samplers (REFERENCE.md "Data and evaluation
#: protocol"): 2048 samples, top-k 2048, top-p 0.92.
RELEASE_N_SAMPLE, RELEASE_TOP_K, RELEASE_TOP_P = 2048, 2048, 0.92


def add_sampling_flags(p: argparse.ArgumentParser, n_sample: int = 64, batch_size: int = 16,
                       release_filter: bool = False) -> None:
    """Flags every sampling script shares: output folder, token filtering, batch, seed, device.

    ``release_filter``: ``--top_k`` / ``--top_p`` default to the release's 2048 / 0.92 (resolved by
    :func:`resolve_filter_defaults` after parsing); otherwise no filtering unless given.
    """
    p.add_argument("--save", default="results", help="folder for the results")
    p.add_argument("--save_name", default=None, help="sub-folder name; default encodes every setting")
    p.add_argument("--save_videos", action="store_true", help="also write every sample as its own mp4")
    if release_filter:
        p.add_argument("--top_k", type=int, default=None,
                       help=f"keep the k most likely tokens (default {RELEASE_TOP_K}, the release's; 0: all)")
        p.add_argument("--top_p", type=float, default=None,
                       help=f"nucleus sampling threshold (default {RELEASE_TOP_P}, the release's; 1: off)")
        p.set_defaults(release_filter_defaults=True)
    else:
        p.add_argument("--top_k", type=int, default=None, help="keep the k most likely tokens (0/None: all)")
        p.add_argument("--top_p", type=float, default=None, help="nucleus sampling threshold")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (deterministic)")
    p.add_argument("--release_filtering", action="store_true",
                   help="the release's rule: top_p is ignored unless top_k is given")
    p.add_argument("--n_sample", type=int, default=n_sample, help="number of videos")
    p.add_argument("--batch_size", type=int, default=batch_size)
    p.add_argument("--run", type=int, default=0, help="run index (part of the folder name and seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="sampling precision (bf16 on GPU)")
    p.add_argument("--fps", type=float, default=8)
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--dataset", default=None, help="dataset name, recorded in the results (ucf101, sky, ...)")


def resolve_filter_defaults(args: argparse.Namespace) -> None:
    """Fill ``--top_k`` / ``--top_p`` with the release's defaults where the script has them and the
    command line gave none; ``args.top_k_default`` records whether top-k came from the default."""
    args.top_k_default = False
    if getattr(args, "release_filter_defaults", False):
        if args.top_k is None:
            args.top_k, args.top_k_default = RELEASE_TOP_K, True
        if args.top_p is None:
            args.top_p = RELEASE_TOP_P


def sampling_kwargs(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Keyword arguments of the ``tats.sampling`` functions from :func:`add_sampling_flags`' flags,
    with a generator seeded by ``--seed + --run`` on ``device``."""
    generator = torch.Generator(device=device).manual_seed(args.seed + args.run)
    return dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, greedy=args.greedy,
                generator=generator, dtype=DTYPES[args.dtype], release_compat=args.release_filtering)


def check_sampling_flags(args: argparse.Namespace, vocab_size: int, what: str) -> None:
    """Fail fast on filtering flags that cannot work (``what`` names the model in messages)."""
    if args.n_sample < 1 or args.batch_size < 1:
        raise SystemExit("--n_sample and --batch_size must be >= 1")
    for flag in ("top_k", "top_k_init"):
        k = getattr(args, flag, None)
        if k is not None and k < 0:
            raise SystemExit(f"--{flag} must be >= 0 (0 disables top-k), got {k}")
        if k is not None and k > vocab_size:
            if flag == "top_k" and getattr(args, "top_k_default", False):
                # The release's default on a small vocabulary: its sampler clamped k, keeping every token.
                print(f"note: top-k {k} (the release's default) exceeds the vocabulary size {vocab_size} of "
                      f"{what}: top-k keeps every token, top-p {args.top_p} still applies")
                continue
            # The release silently clamped k; a k beyond the vocabulary given on the command line is
            # almost always a flag meant for another model, so say so before any work.
            raise SystemExit(f"--{flag} {k} exceeds the vocabulary size {vocab_size} of {what}: "
                             f"use a value <= {vocab_size} (0 disables top-k)")
    for flag in ("top_p", "top_p_init"):
        p = getattr(args, flag, None)
        if p is not None and not 0 < p <= 1:
            raise SystemExit(f"--{flag} must lie in (0, 1], got {p}")
    if args.temperature <= 0 and not args.greedy:
        raise SystemExit(f"--temperature must be > 0 (use --greedy for argmax), got {args.temperature}")


def check_files(args: argparse.Namespace, *flags: str) -> None:
    """``SystemExit`` naming the flag when one of the given path flags points at no file."""
    for flag in flags:
        value = getattr(args, flag, None)
        if value is not None and not Path(value).expanduser().is_file():
            raise SystemExit(f"--{flag} {value}: file not found")


def build_parser(long: bool) -> argparse.ArgumentParser:
    """Flags of the release's sampling scripts (seed READMEs 004 and 002) plus ours."""
    what = "long videos with the sliding window" if long else "videos of the training length"
    p = argparse.ArgumentParser(description=f"Sample {what} from a TATS transformer checkpoint.")
    p.add_argument("--gpt_ckpt", required=True,
                   help="transformer checkpoint (ours or the release's) or published name (ucf101-base, ...)")
    p.add_argument("--vqgan_ckpt", default=None,
                   help="VQGAN checkpoint or published name (ucf101, ...); default: the one in --gpt_ckpt")
    p.add_argument("--class_cond", action="store_true", help="the model is class-conditional (checked)")
    p.add_argument("--label", type=int, default=None, help="class id for every sample (default: cycle)")
    p.add_argument("--text", action="append", default=None, help="caption(s) for a text-conditioned model")
    add_sampling_flags(p, n_sample=RELEASE_N_SAMPLE, release_filter=True)
    p.add_argument("--compute_fvd", action="store_true",
                   help="FVD/KVD of the samples against real training clips from --data_path")
    p.add_argument("--data_path", default=None, help="real clips for FVD: dataset, .npy, videos, demo")
    p.add_argument("--image_folder", action="store_true", help="--data_path holds frame folders")
    p.add_argument("--sample_every_n_frames", type=int, default=1)
    p.add_argument("--resolution", type=int, default=128, help="resolution of the real clips for FVD")
    p.add_argument("--fvd_protocol", choices=("tats", "styleganv"), default="tats",
                   help="tats (the release's): samples and real clips become uint8 by truncation, frames "
                        "squashed to 224x224; styleganv: rounding, shorter side 224 and centre crop")
    p.add_argument("--n_real", type=int, default=RELEASE_N_SAMPLE,
                   help="real clips for FVD, drawn at random over every training window (the release: 2048)")
    p.add_argument("--real_seed", type=int, default=0, help="seed of the real clips' draw")
    p.add_argument("--i3d_path", "--i3d", default=None,
                   help="I3D weights file, or `release` for the release's i3d_pretrained_400.pt "
                   "(default: the fetched TF-hub weights)")
    p.add_argument("--n_trials", type=int, default=1, help="FVD trials over random halves (mean and std)")
    if long:
        p.add_argument("--sample_length", type=int, default=16, help="number of latent frames to generate")
        p.add_argument("--temporal_sample_pos", type=int, default=1,
                       help="latent frames of context each new frame sees (1 <= pos < trained t)")
        p.add_argument("--sample_resolution", type=int, default=None,
                       help="latent height/width of the result (> trained: spatial sliding window)")
        p.add_argument("--top_k_init", type=int, default=None, help="top_k for the first window")
        p.add_argument("--top_p_init", type=float, default=None, help="top_p for the first window")
        p.add_argument("--decode_chunk", type=int, default=8,
                       help="latent frames decoded at once (bounded memory for long videos)")
    return p


def output_dir(args: argparse.Namespace, long: bool) -> Path:
    """``--save/--save_name``, or a name that encodes every sampling setting."""
    if args.save_name:
        return Path(args.save) / args.save_name
    parts = [Path(args.gpt_ckpt).stem, "long" if long else "short"]
    if long:
        parts += [f"len{args.sample_length}", f"pos{args.temporal_sample_pos}"]
        if args.sample_resolution:
            parts.append(f"res{args.sample_resolution}")
    if args.greedy:
        parts.append("greedy")
    else:
        parts += [f"topk{args.top_k}", f"topp{args.top_p}", f"temp{args.temperature}"]
    parts += [f"n{args.n_sample}", f"seed{args.seed}", f"run{args.run}"]
    return Path(args.save) / "_".join(parts)


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
    check_sampling_flags(args, cfg.vocab_size, args.gpt_ckpt)
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


def _fvd_extractor(args: argparse.Namespace, device: torch.device):
    from tats.metrics.fvd import I3DFeatureExtractor
    from tats.metrics.i3d import load_i3d

    i3d = load_i3d(args.i3d_path, device=device)
    return I3DFeatureExtractor(i3d, args.fvd_protocol, batch_size=16, progress=not args.no_progress,
                               desc="I3D generated")


def _real_features(args: argparse.Namespace, extractor: Any, n_frames: int) -> tuple[np.ndarray, dict]:
    """I3D features of ``--n_real`` real clips of ``n_frames`` frames, drawn at random (``--real_seed``)
    over every training window as the release drew them from its shuffled training loader; cached under
    ``$TATS_CACHE/fvd`` (keyed by the data, protocol, frames, resolution, draw and weights checksum) so
    repeated runs pay for them once. An I3D without a weights checksum (not loaded from a file) is
    never cached. Returns the features and :func:`~tats.metrics.fvd.source_features`' metadata."""
    from tats.io.fetch import cache_dir
    from tats.metrics.fvd import source_features

    cache = Path(cache_dir()) / "fvd" if getattr(extractor.model, "weights_sha256", None) else None
    return source_features(
        args.data_path, extractor.model, args.fvd_protocol, n_frames=n_frames, max_videos=args.n_real,
        resolution=args.resolution, sample_every_n_frames=args.sample_every_n_frames, split="train",
        image_folder=args.image_folder, cache=cache, progress=not args.no_progress, selection="random",
        seed=args.real_seed,
    )


class NpyStreamWriter:
    """Writes a uint8 ``.npy`` of a known ``shape`` batch by batch with plain file writes.

    Unlike a memory map, whose written pages stay resident in the process (and count in its RSS),
    written batches go to the OS page cache only, so memory stays flat however large the array.
    The file is a regular ``.npy`` (``np.load`` reads it, ``mmap_mode="r"`` included) once
    ``shape[0]`` rows have been written.
    """

    def __init__(self, path: Path, shape: Sequence[int]) -> None:
        self.path, self.shape, self.rows = Path(path), tuple(int(s) for s in shape), 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "wb")  # closed in close()
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False,
                  "shape": self.shape}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, rows: np.ndarray) -> None:
        """Append uint8 rows ``(b, *shape[1:])``."""
        if rows.dtype != np.uint8 or tuple(rows.shape[1:]) != self.shape[1:]:
            raise ValueError(f"{self.path}: expected uint8 rows of shape {self.shape[1:]}, got {rows.dtype} "
                             f"{tuple(rows.shape[1:])}")
        if self.rows + len(rows) > self.shape[0]:
            raise ValueError(f"{self.path}: {self.rows + len(rows)} rows exceed the declared {self.shape[0]}")
        self._file.write(np.ascontiguousarray(rows).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
            if self.rows != self.shape[0]:
                raise ValueError(f"{self.path}: wrote {self.rows} of {self.shape[0]} rows")


class SampleWriter:
    """Streams uint8 clips ``(b, T, H, W, C)`` to a results folder in bounded memory.

    Writes ``samples.npy`` (uint8 ``(N, T, H, W, C)``, see :class:`NpyStreamWriter`),
    ``grid.mp4`` / ``grid.gif`` / ``contact_sheet.png`` of the first batch, and with ``save_videos``
    one ``videos/NNNNN.mp4`` per sample. Shared by the sampling scripts under ``scripts/``.
    """

    def __init__(self, out: Path, n_total: int, fps: float = 8, save_videos: bool = False) -> None:
        self.out, self.n_total, self.fps, self.save_videos = Path(out), n_total, fps, save_videos
        self.samples: NpyStreamWriter | None = None
        self.count = 0

    def add(self, clips: np.ndarray) -> None:
        """Append a batch of uint8 clips ``(b, T, H, W, C)``."""
        if self.samples is None:
            self.out.mkdir(parents=True, exist_ok=True)
            self.samples = NpyStreamWriter(self.out / "samples.npy", (self.n_total, *clips.shape[1:]))
            save_video_grid(clips, self.out / "grid.mp4", fps=self.fps)
            save_video_grid(clips, self.out / "grid.gif", fps=self.fps)
            save_contact_sheet(clips, self.out / "contact_sheet.png")
        start = self.count
        self.samples.write(clips)
        if self.save_videos:
            for i, clip in enumerate(clips):
                write_frames(clip, self.out / "videos" / f"{start + i:05d}.mp4", fps=self.fps)
        self.count += len(clips)

    @property
    def video_shape(self) -> list[int]:
        """``[T, H, W, C]`` of the written clips."""
        return list(self.samples.shape[1:]) if self.samples is not None else []

    def close(self) -> None:
        if self.samples is not None:
            self.samples.close()


def main(argv: Sequence[str] | None = None, long: bool = False) -> dict:
    """Sample ``--n_sample`` videos, write them, optionally compute FVD; returns the summary dict."""
    from tats.gpt.load import load_transformer
    from tats.sampling import decode_codes, sample_long, sample_short

    args = build_parser(long).parse_args(argv)
    resolve_filter_defaults(args)
    resolve_args(args, gpt_ckpt="transformer", vqgan_ckpt="vqgan", i3d_path="i3d")  # published names
    check_paths(args)
    device = pick_device(args.device)
    seed_everything(args.seed + args.run)
    model = load_transformer(args.gpt_ckpt, vqgan_ckpt=args.vqgan_ckpt, device=device)
    validate(args, model, long)
    out = output_dir(args, long)
    out.mkdir(parents=True, exist_ok=True)
    common = sampling_kwargs(args, device)
    extractor = _fvd_extractor(args, device) if args.compute_fvd else None
    # uint8 as the FVD protocol has it (tats: truncation, the release's), so samples.npy is what FVD saw
    truncate = args.fvd_protocol == "tats"

    writer = SampleWriter(out, args.n_sample, fps=args.fps, save_videos=args.save_videos)
    n_batches = math.ceil(args.n_sample / args.batch_size)
    t0, n_tokens = time.perf_counter(), 0
    bar = tqdm(total=args.n_sample, desc="videos", unit="video", disable=args.no_progress)
    for b in range(n_batches):
        start = b * args.batch_size
        size = min(args.batch_size, args.n_sample - start)
        cond = batch_cond(args, model, start, size)
        if long:
            codes = sample_long(model, args.sample_length, size, cond, args.temporal_sample_pos,
                                sample_resolution=args.sample_resolution, top_k_init=args.top_k_init,
                                top_p_init=args.top_p_init, progress=not args.no_progress, **common)
            video = decode_codes(model.vqgan, codes, chunk_size=args.decode_chunk, out_device="cpu")
        else:
            codes = sample_short(model, size, cond, progress=not args.no_progress, **common)
            with torch.inference_mode():
                video = model.vqgan.decode(codes).cpu()
        n_tokens += codes[0].numel() * size
        clips = to_uint8(video.float().clamp(-0.5, 0.5), truncate=truncate)  # (b, T, H, W, C)
        writer.add(clips)
        if extractor is not None:
            extractor.update(clips)
        bar.update(size)
    bar.close()
    writer.close()
    samples = writer.samples  # its .shape is (N, T, H, W, C)
    elapsed = time.perf_counter() - t0
    summary: dict[str, Any] = {
        "gpt_ckpt": str(args.gpt_ckpt), "dataset": args.dataset, "mode": "long" if long else "short",
        "n_sample": args.n_sample, "video_shape": list(samples.shape[1:]), "seconds": round(elapsed, 2),
        "tokens_per_s": round(n_tokens / elapsed, 1), "videos_per_s": round(args.n_sample / elapsed, 3),
        "uint8": "truncate" if truncate else "round",
        "settings": {k: v for k, v in vars(args).items() if v is None or isinstance(v, (int, float, str))},
    }
    if args.text:
        summary["captions"] = list(args.text)  # sample i got caption i % len(captions)
    if extractor is not None:
        from tats.metrics.fvd import comparability_warning, fvd_kvd_trials

        fake = extractor.compute()
        real, real_meta = _real_features(args, extractor, n_frames=samples.shape[1])
        # One trial uses every clip; several trials draw random halves so that their spread means something.
        size = None if args.n_trials == 1 else min(len(real), len(fake)) // 2
        fvd = fvd_kvd_trials(real, fake, args.fvd_protocol, args.n_trials, sample_size=size)
        fvd.update(protocol=args.fvd_protocol, n_fake=len(fake), n_real=len(real),
                   n_real_requested=args.n_real, real_available=real_meta.get("available"),
                   real_split="train", real_selection="random",
                   real_seed=args.real_seed, uint8="truncate" if truncate else "round",
                   i3d_weights_sha256=getattr(extractor.model, "weights_sha256", None),
                   features=extractor.numerics)  # device, dtype, TF32 of the I3D features
        note = comparability_warning(len(real), len(fake))
        if note is not None:
            fvd["warning"] = note
            warnings.warn(note, UserWarning, stacklevel=2)
        summary["fvd"] = fvd
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.n_sample} videos {tuple(samples.shape[1:])} to {out} "
          f"({summary['tokens_per_s']} tokens/s)")
    if "fvd" in summary:
        print(f"FVD {summary['fvd']['fvd']:.2f}  KVD {summary['fvd']['kvd']:.4f}")
    return summary
