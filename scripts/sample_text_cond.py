"""Text-to-video with a text-conditioned transformer (MUGEN-style models), for captions given with
``--text`` or a dataset's own (docs/sampling.md has the sources and what it writes)::

    python scripts/sample_text_cond.py --gpt_ckpt GPT.ckpt --vqgan_ckpt VQGAN.ckpt \\
        --text "Mugen jumps over a gap" --text "Mugen walks to the right" --n_sample 4 \\
        --top_k 2048 --top_p 0.8
    python scripts/sample_text_cond.py --gpt_ckpt GPT.ckpt --data_path data/coinrun --n_captions 4
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from tats.cli import common
from tats.io.registry import check_files, resolve_args
from tats.io.samples import SampleWriter
from tats.io.video import to_uint8


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Sample videos from captions with a text-conditioned TATS model.")
    p.add_argument("--gpt_ckpt", required=True,
                   help="text-conditioned transformer checkpoint (or mugen-base)")
    p.add_argument("--vqgan_ckpt", default=None,
                   help="VQGAN checkpoint (or mugen); default: the one inside --gpt_ckpt")
    p.add_argument("--text", action="append", default=None, help="a caption (repeat for several)")
    p.add_argument("--data_path", default=None,
                   help="take the captions of a dataset instead: a MUGEN/CoinRun folder, the release's text "
                        "HDF5 or an HDF5 file with captions")
    p.add_argument("--split", choices=("train", "test"), default="test", help="--data_path split")
    p.add_argument("--n_captions", type=int, default=4, help="--data_path: captions of the first N videos")
    p.add_argument("--text_path", default=None, help="CoinRun: JSON of manual descriptions")
    p.add_argument("--use_manual_annotation_only", action="store_true", help="CoinRun: manual texts only")
    p.add_argument("--coinrun_v2_dataloader", action="store_true", help="CoinRun: the train/test.json index")
    common.add_sampling_flags(p, n_sample=4, batch_size=8)
    p.set_defaults(save="results_text")
    return p


def output_dir(args: argparse.Namespace) -> Path:
    return common.run_dir(args, f"{Path(args.gpt_ckpt).stem}_text{len(args.text)}_"
                                f"{common.sampling_tag(args)}")


def main(argv: Sequence[str] | None = None) -> dict:
    """Sample ``--n_sample`` videos per ``--text``; returns the summary written to ``summary.json``."""
    from tats.gpt.load import load_transformer
    from tats.sampling import sample_short

    args = build_parser().parse_args(argv)
    resolve_args(args, gpt_ckpt="transformer", vqgan_ckpt="vqgan")  # published names
    check_files(args, "gpt_ckpt", "vqgan_ckpt")
    if bool(args.text) == bool(args.data_path):
        raise SystemExit("give the captions with --text (repeat for several) or --data_path (a dataset's "
                         "own): one of the two")
    if args.data_path:
        import torch

        from tats.data.release import dataset_captions

        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(args.seed)  # a caption drawn among several is drawn reproducibly
                args.text = dataset_captions(args, train=args.split == "train", limit=args.n_captions)
        except ValueError as err:
            raise SystemExit(str(err)) from None
    if any(not t.strip() for t in args.text):
        raise SystemExit("--text: captions must not be empty")
    device = common.pick_device(args.device)
    common.seed_everything(args.seed + args.run)
    model = load_transformer(args.gpt_ckpt, vqgan_ckpt=args.vqgan_ckpt, device=device)
    if model.config.cond_type != "text":
        raise SystemExit(f"--gpt_ckpt {args.gpt_ckpt} is conditioned on {model.config.cond_type!r}, not on "
                         "text; use sample_short_videos.py")
    if model.vqgan is None:
        raise SystemExit(f"{args.gpt_ckpt} holds no VQGAN: pass --vqgan_ckpt")
    common.check_sampling_flags(args, model.config.vocab_size, args.gpt_ckpt)
    common.check_decoding_flags(args, model, args.gpt_ckpt)
    options = common.sampling_options(args, device)
    captions = [t for t in args.text for _ in range(args.n_sample)]  # caption-major
    out = output_dir(args)
    writer = SampleWriter(out, len(captions), fps=args.fps, save_videos=args.save_videos)
    t0 = time.perf_counter()
    for start in tqdm(range(0, len(captions), args.batch_size), desc="batches", disable=args.no_progress):
        batch = captions[start : start + args.batch_size]
        codes = sample_short(model, len(batch), batch, options, progress=not args.no_progress)
        writer.add(to_uint8(model.decode(codes)))  # (b, T, H, W, C)
    writer.close()
    (out / "captions.json").write_text(json.dumps(captions, indent=2))
    summary = {
        "gpt_ckpt": str(args.gpt_ckpt), "mode": "text", "captions": args.text, "n_sample": len(captions),
        "video_shape": writer.video_shape, "seconds": round(time.perf_counter() - t0, 2),
        "settings": common.plain_settings(args),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {len(captions)} videos {tuple(writer.video_shape)} for {len(args.text)} caption(s) "
          f"to {out}")
    return summary


if __name__ == "__main__":
    main()
