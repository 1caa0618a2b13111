"""Audio-to-video: videos sampled from the audio of real clips (AudioSet-Drums style), the release
README's command::

    python scripts/sample_audio_cond.py --gpt_ckpt GPT.ckpt --vqgan_ckpt VQGAN.ckpt \\
        --stft_vqgan_ckpt STFT.ckpt --dataset drum --n_sample 10 --data_path DRUMS/

docs/sampling.md has the data it reads, how the audio conditions the transformer and what it writes.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tats.cli import common
from tats.io.registry import check_files, resolve_args
from tats.io.samples import NpyStreamWriter, SampleWriter
from tats.io.video import to_uint8

#: Where the AudioSet-Drums videos are expected when --data_path is not given.
DEFAULT_DATA_PATH = "data/drums"


def build_parser() -> argparse.ArgumentParser:
    from tats.data.audio import add_audio_args

    p = argparse.ArgumentParser(description="Sample videos conditioned on the audio of real clips.")
    p.add_argument("--gpt_ckpt", required=True,
                   help="audio-conditioned transformer checkpoint (or drums-base)")
    p.add_argument("--vqgan_ckpt", default=None,
                   help="video VQGAN (or drums); default: the one inside --gpt_ckpt")
    p.add_argument("--stft_vqgan_ckpt", default=None,
                   help="STFT VQGAN (or drums-stft); default: the one inside --gpt_ckpt")
    p.add_argument("--data_path", default=DEFAULT_DATA_PATH,
                   help="the release's drums layout (DRUMS/stft with *.pickle, or DRUMS holding stft/ and "
                        "video/), or a folder of videos with audio (train/, test/); default %(default)s, "
                        "where the release's default pointed at its drums data")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--resolution", type=int, default=None, help="frame size; default: the model's")
    p.add_argument("--sample_every_n_frames", type=int, default=1)
    add_audio_args(p)
    common.add_sampling_flags(p, n_sample=10, batch_size=10, release_filter=True)
    p.set_defaults(save="results_audio")
    return p


def output_dir(args: argparse.Namespace) -> Path:
    return common.run_dir(args, f"{Path(args.gpt_ckpt).stem}_audio_{args.split}_{common.sampling_tag(args)}")


def load_models(args: argparse.Namespace, device: torch.device):
    """The transformer (with its video VQGAN) and the STFT VQGAN, checked against each other."""
    from tats.gpt.load import load_transformer
    from tats.vqgan.load import load_vqgan

    model = load_transformer(args.gpt_ckpt, vqgan_ckpt=args.vqgan_ckpt, device=device)
    cfg = model.config
    if cfg.cond_type != "audio":
        raise SystemExit(f"--gpt_ckpt {args.gpt_ckpt} is conditioned on {cfg.cond_type!r}, not on audio")
    if model.vqgan is None:
        raise SystemExit(f"{args.gpt_ckpt} holds no video VQGAN: pass --vqgan_ckpt")
    stft_vqgan = load_vqgan(args.stft_vqgan_ckpt, device=device) if args.stft_vqgan_ckpt else model.cond_vqgan
    if stft_vqgan is None:
        raise SystemExit(f"{args.gpt_ckpt} holds no usable STFT VQGAN: pass --stft_vqgan_ckpt")
    if stft_vqgan.config.n_codes != cfg.n_cond_vocab:
        raise SystemExit(f"--stft_vqgan_ckpt has {stft_vqgan.config.n_codes} codes but the transformer "
                         f"expects an audio codebook of {cfg.n_cond_vocab}")
    return model, stft_vqgan.eval()


def stft_pickle_root(data_path: str, train: bool) -> Path | None:
    """Where the release's STFT pickles of the split are: ``data_path`` itself or ``data_path/stft``."""
    from tats.data.stft_pickles import stft_pickle_split

    for root in (Path(data_path), Path(data_path) / "stft"):
        if stft_pickle_split(root, train) is not None:
            return root
    return None


def open_clips(args: argparse.Namespace, frames: int, resolution: int):
    """The clips whose audio conditions the samples: the release's STFT pickles where there are any,
    else videos with sound (STFT from their audio track)."""
    from tats.data.audio import AudioVideoFolderDataset, stft_config_from_args
    from tats.data.stft_pickles import StftPickleDataset

    train = args.split == "train"
    root = stft_pickle_root(args.data_path, train)
    seq = frames * args.sample_every_n_frames  # windows of t*dt*n frames keep t*dt of them
    if root is not None:
        return StftPickleDataset(root, train=train, sequence_length=seq, resolution=resolution,
                                 sample_every_n_frames=args.sample_every_n_frames, clips_per_video=1)
    return AudioVideoFolderDataset(args.data_path, train=train, sequence_length=seq, resolution=resolution,
                                   sample_every_n_frames=args.sample_every_n_frames,
                                   stft_config=stft_config_from_args(args), clips_per_video=1)


def main(argv: Sequence[str] | None = None) -> dict:
    """Sample one video per real clip's audio for ``--n_sample`` clips; returns the summary."""
    from tats.sampling import sample_short

    args = build_parser().parse_args(argv)
    common.resolve_filter_defaults(args)
    resolve_args(args, gpt_ckpt="transformer", vqgan_ckpt="vqgan", stft_vqgan_ckpt="vqgan")  # published names
    check_files(args, "gpt_ckpt", "vqgan_ckpt", "stft_vqgan_ckpt")
    if not Path(args.data_path).is_dir():
        default = " (the default)" if args.data_path == DEFAULT_DATA_PATH else ""
        raise SystemExit(f"--data_path {args.data_path}{default}: not a folder of videos with audio "
                         "(train/ and test/ with class sub-folders) nor the release's drums layout "
                         "(stft/{train,test}/*.pickle beside video/); pass --data_path DRUMS_FOLDER")
    device = common.pick_device(args.device)
    common.seed_everything(args.seed + args.run)
    model, stft_vqgan = load_models(args, device)
    common.check_sampling_flags(args, model.config.vocab_size, args.gpt_ckpt)
    common.check_decoding_flags(args, model, args.gpt_ckpt)
    (t, h, _), (dt, dh, _) = model.config.latent_shape, model.vqgan.config.downsample
    resolution = args.resolution or h * dh
    try:
        dataset = open_clips(args, t * dt, resolution)
    except ValueError as err:
        raise SystemExit(f"--data_path {args.data_path}: {err}") from None
    if len(dataset) < args.n_sample:
        raise SystemExit(f"--n_sample {args.n_sample}: --data_path {args.data_path} has only {len(dataset)} "
                         f"{args.split} videos of at least {t * dt * args.sample_every_n_frames} frames")
    options = common.sampling_options(args, device)
    out = output_dir(args)
    writer = SampleWriter(out, args.n_sample, fps=args.fps, save_videos=args.save_videos)
    real_all, sources = None, []
    t0 = time.perf_counter()
    for start in range(0, args.n_sample, args.batch_size):
        items = [dataset[i] for i in range(start, min(start + args.batch_size, args.n_sample))]
        stft = torch.stack([it["stft"] for it in items]).to(device)  # (b, 1, T, 64, 16)
        with torch.inference_mode():
            audio_codes = stft_vqgan.encode(stft).flatten(1)  # (b, n_cond_tokens)
        if audio_codes.shape[1] != model.config.n_cond_tokens:
            raise SystemExit(f"the STFT VQGAN gives {audio_codes.shape[1]} audio tokens per clip but the "
                             f"transformer expects {model.config.n_cond_tokens}")
        codes = sample_short(model, len(items), audio_codes, options, progress=not args.no_progress)
        fake = to_uint8(model.decode(codes))  # (b, T, H, W, C)
        real = to_uint8(torch.stack([it["video"] for it in items]))
        if real_all is None:  # grids of real | generated for the first batch
            pairs = SampleWriter(out / "side_by_side", len(items), fps=args.fps)
            pairs.add(np.concatenate([real, fake], axis=3))  # (b, T, H, 2W, C): real | generated
            pairs.close()
            real_all = NpyStreamWriter(out / "real.npy", (args.n_sample, *real.shape[1:]))
        writer.add(fake)
        real_all.write(real)
        sources += [it["path"] for it in items]
    writer.close()
    real_all.close()
    (out / "sources.json").write_text(json.dumps(sources, indent=2))
    summary = {
        "gpt_ckpt": str(args.gpt_ckpt), "dataset": args.dataset, "mode": "audio", "n_sample": args.n_sample,
        "video_shape": writer.video_shape, "seconds": round(time.perf_counter() - t0, 2),
        "settings": common.plain_settings(args),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {args.n_sample} audio-conditioned videos {tuple(writer.video_shape)} to {out}")
    return summary


if __name__ == "__main__":
    main()
