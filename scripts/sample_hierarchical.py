"""Hierarchical long videos: a sparse AR transformer, then an interpolation transformer.

The release README's command (``--CKPT2`` is accepted as spelled there)::

    python scripts/sample_hierarchical.py --ckpt1 AR.ckpt --ckpt2 INTERP.ckpt --vqgan VQGAN.ckpt \\
        --dataset sky --top_k_init 2048 --top_p_init 0.8 --top_k 2048 --top_p 0.8 --temporal_sample_pos 1

The AR model (trained with ``--sample_every_n_latent_frames s``) samples ``--sample_length`` sparse
latent frames K with the sliding window; the interpolation model (``--n_unmasked``) fills the s - 1
latent frames between each consecutive pair (:func:`tats.sampling.sample_hierarchical`). A result
has ``(K - 1) * s + 1`` latent frames, i.e. ``((K - 1) * s + 1) * dt`` pixel frames. Outputs as
``sample_short_videos.py``: ``samples.npy`` uint8 (N, T, H, W, C), grids, contact sheet, summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tats.cli import common
from tats.io.registry import check_files, resolve_args
from tats.io.samples import SampleWriter
from tats.io.video import to_uint8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt1", required=True,
                   help="the sparse AR transformer checkpoint (or sky-ar, taichi-ar)")
    p.add_argument("--ckpt2", "--CKPT2", dest="ckpt2", required=True,
                   help="the interpolation transformer checkpoint, n_unmasked > 0 "
                   "(or sky-interp, taichi-interp)")
    p.add_argument("--vqgan", "--vqgan_ckpt", dest="vqgan", default=None,
                   help="VQGAN checkpoint (or sky, taichi-hier); default: the one inside --ckpt1")
    p.add_argument("--sample_length", type=int, default=16,
                   help="sparse latent frames K sampled by the AR model (result: (K-1)*s+1 latent frames)")
    p.add_argument("--temporal_sample_pos", type=int, default=1,
                   help="sparse frames of context each new AR frame sees beyond its training length")
    p.add_argument("--top_k_init", type=int, default=None, help="top_k for the AR model's first frames")
    p.add_argument("--top_p_init", type=float, default=None, help="top_p for the AR model's first frames")
    p.add_argument("--label", type=int, default=None, help="class id for label-conditional models")
    p.add_argument("--decode_chunk", type=int, default=8, help="latent frames decoded at once")
    common.add_sampling_flags(p, n_sample=8, batch_size=4, decoding=False)
    return p


def output_dir(args: argparse.Namespace) -> Path:
    sampling = ("greedy" if args.greedy else
                f"topk{args.top_k}_topp{args.top_p}_init{args.top_k_init}_{args.top_p_init}")
    return common.run_dir(args, f"{Path(args.ckpt1).stem}_hier_len{args.sample_length}"
                                f"_pos{args.temporal_sample_pos}_{sampling}")


def load_models(args: argparse.Namespace, device: torch.device):
    """``(ar, interp)`` :class:`~tats.gpt.video_transformer.VideoTransformer` models sharing the one VQGAN."""
    from tats.gpt.load import load_transformer
    from tats.sampling import interpolation_layout

    ar = load_transformer(args.ckpt1, vqgan_ckpt=args.vqgan, device=device)
    # The VQGAN is loaded with the interpolation model too: for release files its weights (and
    # --vqgan's flags) fix the latent grid, which the Namespace alone does not say. One is enough.
    interp = load_transformer(args.ckpt2, vqgan_ckpt=args.vqgan, device=device)
    interp.vqgan = None
    if ar.vqgan is None:
        raise SystemExit(f"--ckpt1 {args.ckpt1} holds no VQGAN: pass --vqgan")
    try:
        interpolation_layout(interp.config)
    except ValueError as err:
        raise SystemExit(f"--ckpt2 {args.ckpt2} is not an interpolation transformer: {err}") from None
    s_ar = ar.config.sample_every_n_latent_frames
    if s_ar <= 0:
        raise SystemExit(f"--ckpt1 {args.ckpt1} was not trained on a sparse frame grid "
                         "(sample_every_n_latent_frames = 0): it is not the AR model of a hierarchical pair")
    t_ar = ar.config.latent_shape[0]
    if args.sample_length > t_ar and not 1 <= args.temporal_sample_pos < t_ar:
        raise SystemExit(f"--temporal_sample_pos must lie in [1, {t_ar - 1}] (the AR model sees {t_ar} "
                         f"sparse latent frames), got {args.temporal_sample_pos}")
    if args.sample_length < 2:
        raise SystemExit(f"--sample_length must be >= 2 sparse latent frames, got {args.sample_length}")
    return ar, interp


def cond_for(model, args: argparse.Namespace, start: int, size: int):
    kind = model.config.cond_type
    if kind == "none":
        return None
    if kind == "label":
        if args.label is not None:
            return args.label
        return torch.arange(start, start + size) % model.config.n_cond_vocab  # labels cycle
    raise SystemExit(f"--ckpt1 is {kind}-conditioned; hierarchical sampling supports unconditional and "
                     "label-conditional models")


def main(argv: Sequence[str] | None = None) -> dict:
    """Sample ``--n_sample`` hierarchical videos; returns the summary written to ``summary.json``."""
    from tats.sampling import sample_hierarchical

    args = build_parser().parse_args(argv)
    resolve_args(args, ckpt1="transformer", ckpt2="transformer", vqgan="vqgan")  # published names
    check_files(args, "ckpt1", "ckpt2", "vqgan")
    device = common.pick_device(args.device)
    common.seed_everything(args.seed + args.run)
    ar, interp = load_models(args, device)
    vocab = min(ar.config.vocab_size, interp.config.vocab_size)
    common.check_sampling_flags(args, vocab, "the hierarchical models")
    options = common.sampling_options(args, device)
    out = output_dir(args)
    writer = SampleWriter(out, args.n_sample, fps=args.fps, save_videos=args.save_videos)
    t0 = time.perf_counter()
    n_batches = math.ceil(args.n_sample / args.batch_size)
    for b in tqdm(range(n_batches), desc="batches", disable=args.no_progress):
        start = b * args.batch_size
        size = min(args.batch_size, args.n_sample - start)
        codes = sample_hierarchical(ar, interp, args.sample_length, size, cond_for(ar, args, start, size),
                                    temporal_sample_pos=args.temporal_sample_pos, options=options,
                                    top_k_init=args.top_k_init, top_p_init=args.top_p_init,
                                    progress=not args.no_progress)
        video = ar.decode(codes, chunk_size=args.decode_chunk, out_device="cpu")
        writer.add(to_uint8(video))  # (b, T, H, W, C)
    writer.close()
    elapsed = time.perf_counter() - t0
    s = interp.config.latent_shape[0] - 1
    summary = {
        "ckpt1": str(args.ckpt1), "ckpt2": str(args.ckpt2), "dataset": args.dataset, "mode": "hierarchical",
        "n_sample": args.n_sample, "sparse_latent_frames": args.sample_length, "interpolation_stride": s,
        "latent_frames": (args.sample_length - 1) * s + 1, "video_shape": writer.video_shape,
        "seconds": round(elapsed, 2),
        "settings": common.plain_settings(args),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.n_sample} videos {tuple(writer.video_shape)} to {out}")
    return summary


if __name__ == "__main__":
    main()
