"""Quality over time of long videos (``scripts/eval_long_videos.py``): sample long videos from a GPT +
VQGAN, or read ones already generated, and measure FVD / KVD of 16-frame windows at positions along
them against real training windows (:mod:`tats.metrics.long_video`); on the built-in moving digits also
the share of frames that show the conditioned digit. Writes ``quality.json``, ``quality.csv``,
``quality.png`` (with ``--compare``: earlier runs overlaid) and ``along_video.png`` (frames from the
beginning to the end of the first videos).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tats.cli import common
from tats.cli.sample import add_long_decode_flags

#: Videos per draw when ``--n_sample`` is not given: the issue's 256 on a GPU, fewer on a CPU.
DEFAULT_N = {"cuda": 256, "cpu": 32}
#: Seeds of the real-vs-real reference sets: far from the real sets' ``--real_seed + k``.
REFERENCE_SEED_OFFSET = 1_000_003


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_argument_group("what to evaluate (a model, or --videos)")
    src.add_argument("--gpt_ckpt", default=None,
                     help="transformer checkpoint or published name (sky-base, ...)")
    src.add_argument("--vqgan_ckpt", default=None, help="VQGAN checkpoint or published name; default: the "
                     "one inside --gpt_ckpt")
    src.add_argument("--videos", default=None, help="long videos already generated instead of a model: a "
                     ".npy uint8 (N, T, H, W, C), an .h5 of tats.data.hdf5's layout, or a folder of videos")
    src.add_argument("--length", type=int, default=1024, help="frames per sampled video (L)")
    src.add_argument("--temporal_sample_pos", type=int, default=1,
                     help="latent frames of context each new latent frame sees (the release's default 1)")
    src.add_argument("--top_k_init", type=int, default=None, help="top_k for the first window")
    src.add_argument("--top_p_init", type=float, default=None, help="top_p for the first window")
    src.add_argument("--label", type=int, default=None, help="class id of every video (default: cycle)")
    common.add_sampling_flags(p, n_sample=None, release_filter=True)
    add_long_decode_flags(p)
    p.set_defaults(save="results/long_eval")
    real = p.add_argument_group("real clips (the release's FVD protocol)")
    real.add_argument("--data_path", default=None, help="real videos: a dataset, .npy, or 'demo'")
    real.add_argument("--image_folder", action="store_true", help="--data_path holds frame folders")
    real.add_argument("--resolution", type=int, default=128, help="frame size of the real clips")
    real.add_argument("--sample_every_n_frames", type=int, default=1)
    real.add_argument("--n_real", type=int, default=2048, help="real windows per draw (the release: 2048)")
    real.add_argument("--real_seed", type=int, default=0, help="seed of draw 0's real windows")
    real.add_argument("--fvd_protocol", choices=("tats", "styleganv"), default="tats")
    real.add_argument("--i3d_path", "--i3d", default=None,
                      help="I3D weights (`release`: the release's i3d_pretrained_400.pt; default: TF-hub's)")
    m = p.add_argument_group("measurement")
    m.add_argument("--positions", type=int, nargs="+", default=None,
                   help="window starts in frames (default: those of 0 16 32 64 128 256 512 768 that fit, "
                        "and L-16)")
    m.add_argument("--window", type=int, default=16, help="frames per window")
    m.add_argument("--draws", type=int, default=1,
                   help="independent repeats (own sampling seed and real set, or the k-th part of --videos): "
                        "mean and spread")
    m.add_argument("--digits", choices=("auto", "on", "off"), default="auto",
                   help="digit accuracy per window (the built-in moving digits; auto: when --data_path is "
                        "such a file)")
    m.add_argument("--name", default=None, help="this run's label in plots (default: the checkpoint's name)")
    m.add_argument("--compare", nargs="+", default=[], help="earlier quality.json files to overlay")
    m.add_argument("--no_videos_file", action="store_true", help="do not keep the sampled videos (videos.h5)")
    return p


# ------------------------------------------------------------------------------------------ sampling
def generate_long_videos(model: Any, n: int, length: int, batch_size: int, cond: Callable[[int, int], Any],
                         options: Any, temporal_sample_pos: int = 1, uint8: str = "truncate",
                         progress: bool = True, top_k_init: int | None = None,
                         top_p_init: float | None = None, decode: dict[str, Any] | None = None
                         ) -> Iterator[np.ndarray]:
    """Sample ``n`` videos of ``length`` frames with the sliding window, batch by batch: yields uint8
    ``(b, length, H, W, C)`` (:func:`tats.io.video.to_uint8` with ``uint8``). ``cond(start, size)`` is
    the condition of videos ``start .. start+size-1``. ``decode``: ``chunk``, ``overlap``, ``blend`` of
    :func:`tats.vqgan.decode.decode_codes` (default: chunks of 8 latent frames with the decoder's
    context, equal to the release's whole-sequence decode for batch-norm VQGANs)."""
    from tats.io.video import to_uint8
    from tats.sampling import sample_long

    dt = model.vqgan.config.downsample[0]
    n_latent = math.ceil(length / dt)
    bar = tqdm(total=n, desc="long videos", unit="video", disable=not progress)
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        codes = sample_long(model, n_latent, size, cond(start, size), temporal_sample_pos, options,
                            progress=progress, top_k_init=top_k_init, top_p_init=top_p_init)
        d = decode or {}
        video = model.decode(codes, chunk_size=d.get("chunk", 8), overlap=d.get("overlap"), out_device="cpu",
                             blend=d.get("blend", False))[:, :, :length]
        bar.update(size)
        yield to_uint8(video, uint8)
    bar.close()


def demo_digits(data_path: str | Path, labels: np.ndarray) -> np.ndarray:
    """The digit of each demo class id: ``label // n_motions`` (:mod:`tats.data.demo`)."""
    import h5py

    with h5py.File(data_path, "r") as f:
        n_motions = len(json.loads(f.attrs["tats_demo"])["motions"])
    return np.asarray(labels) // n_motions


def is_demo_file(spec: str | None) -> bool:
    """Whether ``spec`` is a moving-digits HDF5 file (it carries the generator's parameters)."""
    import h5py

    if not spec or not Path(spec).is_file():
        return False
    try:
        with h5py.File(spec, "r") as f:
            return "tats_demo" in f.attrs
    except OSError:
        return False


# ---------------------------------------------------------------------------------------------- main
def resolve(args: argparse.Namespace, p: argparse.ArgumentParser) -> None:
    """Fail fast, before anything is loaded or sampled, on flags that cannot work together."""
    from tats.io.registry import check_files, resolve_args

    common.resolve_filter_defaults(args)
    if args.gpt_ckpt is None and args.videos is None:
        if not args.compare:
            p.error("give --gpt_ckpt (sample long videos), --videos (evaluate ones already generated) or "
                    "--compare (plot earlier runs)")
        return
    if args.gpt_ckpt is not None and args.videos is not None:
        p.error("--gpt_ckpt and --videos exclude each other: sample, or read videos already generated")
    if not args.data_path:
        p.error("--data_path is required: the real clips every window is compared with")
    if args.draws < 1 or args.window < 9:
        p.error(f"--draws must be >= 1 and --window >= 9 (I3D's shortest clip), got {args.draws}, "
                f"{args.window}")
    if args.n_real < 2:
        p.error(f"--n_real must be >= 2 (the covariance needs two clips), got {args.n_real}")
    resolve_args(args, gpt_ckpt="transformer", vqgan_ckpt="vqgan", i3d_path="i3d")
    check_files(args, "gpt_ckpt", "vqgan_ckpt", "i3d_path")
    for f in args.compare:
        if not Path(f).is_file():
            p.error(f"--compare {f}: file not found")


def main(argv: Sequence[str] | None = None) -> dict | None:
    from tats.metrics.long_video import window_positions
    from tats.metrics.plots import plot_quality_over_time

    p = build_parser()
    args = p.parse_args(argv)
    resolve(args, p)
    save = Path(args.save) / (args.save_name or "")
    save.mkdir(parents=True, exist_ok=True)
    if args.gpt_ckpt is None and args.videos is None:  # plot earlier runs only
        runs = [json.loads(Path(f).read_text()) for f in args.compare]
        path = plot_quality_over_time(runs, save / "compare.png")
        print(f"wrote {path}")
        return None
    device = common.pick_device(args.device)
    if args.videos is not None:
        from tats.data.long_videos import open_long_videos

        videos = open_long_videos(args.videos)
        per_draw = videos.n // args.draws
        if per_draw < 2:
            p.error(f"--videos {args.videos}: {videos.n} videos make {per_draw} per draw for --draws "
                    f"{args.draws}; each draw needs >= 2")
        length, n = videos.length, per_draw
    else:
        videos, length = None, args.length
        n = args.n_sample or DEFAULT_N["cuda" if device.type == "cuda" else "cpu"]
        if args.n_sample is None:
            print(f"note: --n_sample not given: {n} videos per draw on {device.type}")
        args.n_sample = n
    try:
        positions = window_positions(length, args.window, args.positions)
    except ValueError as err:
        p.error(str(err))
    try:
        result = run(args, device, videos, length, n, positions, save)
    except ValueError as err:  # a real set too small or too short for the flags: named in the message
        p.error(str(err))
    print(f"wrote {save / 'quality.json'}, quality.csv, quality.png")
    return result


def run(args: argparse.Namespace, device: torch.device, videos: Any, length: int, n: int,
        positions: list[int], save: Path) -> dict:
    """The measurement of :func:`main` once its flags are checked."""
    from tats.metrics.fvd import PROTOCOLS
    from tats.metrics.i3d import load_i3d
    from tats.metrics.long_video import measure_over_time, write_csv
    from tats.metrics.plots import plot_quality_over_time

    uint8 = PROTOCOLS[args.fvd_protocol].uint8
    digits_on = args.digits == "on" or (args.digits == "auto" and is_demo_file(args.data_path))
    if digits_on and not is_demo_file(args.data_path):
        raise SystemExit(f"--digits on: --data_path {args.data_path} is not a moving-digits file")
    i3d = load_i3d(args.i3d_path, device=device)
    t0 = time.perf_counter()
    if videos is None:
        draw_batches, sampler, source = sampling_draws(args, device, length, n, uint8, digits_on, save)
    else:
        if digits_on and videos.labels is None:
            raise SystemExit(f"--digits: {args.videos} has no labels (labels.npy beside a .npy, or "
                             "test_label in an .h5); pass --digits off")
        source, sampler = dict(videos=str(args.videos), n_videos=videos.n, skipped=videos.skipped), {}

        def draw_batches(k: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
            for clips, labels in videos.batches(args.batch_size, np.arange(k * n, (k + 1) * n)):
                yield clips, (demo_digits(args.data_path, labels) if digits_on else None)
    classifier = None
    if digits_on:
        from tats.metrics.digits import demo_digit_classifier

        classifier = demo_digit_classifier(args.data_path)
    result = measure_over_time(
        [draw_batches(k) for k in range(args.draws)], i3d, args.data_path, positions, n, window=args.window,
        protocol=args.fvd_protocol, n_real=args.n_real, real_seed=args.real_seed,
        reference_seed=args.real_seed + REFERENCE_SEED_OFFSET, resolution=args.resolution,
        sample_every_n_frames=args.sample_every_n_frames, image_folder=args.image_folder,
        digit_classifier=classifier, progress=not args.no_progress, first_batch=sheet_writer(save, args.fps))
    result.update(name=args.name or Path(args.gpt_ckpt or args.videos).stem, length=length,
                  window=args.window, n_videos=n, draws=args.draws,
                  decode=source.get("decode", "as read (--videos)"), source=source, sampler=sampler,
                  seconds=round(time.perf_counter() - t0, 1))
    (save / "quality.json").write_text(json.dumps(result, indent=2))
    write_csv(result, save / "quality.csv")
    earlier = [json.loads(Path(f).read_text()) for f in args.compare]
    plot_quality_over_time([*earlier, result], save / "quality.png")
    return result


def sheet_writer(save: Path, fps: float) -> Callable[[np.ndarray], None]:
    """Writes ``along_video.png`` (16 frames from the first to the last, of up to 8 videos) and
    ``along_video.mp4`` (up to 16 videos) of the first batch."""
    from tats.io.video import save_contact_sheet, save_video_grid

    def write(clips: np.ndarray) -> None:
        save_contact_sheet(clips[:8], save / "along_video.png", max_videos=8, max_frames=16)
        save_video_grid(clips[:16], save / "along_video.mp4", fps=fps)
    return write


def sampling_draws(args: argparse.Namespace, device: torch.device, length: int, n: int, uint8: str,
                   digits_on: bool, save: Path) -> tuple[Callable, dict, dict]:
    """``(draw_batches, sampler, source)``: ``draw_batches(k)`` samples draw k's videos (seed ``--seed +
    --run + k``), written to ``videos.h5`` as they come unless ``--no_videos_file``; ``sampler`` fills with
    the sampling time and tokens; ``source`` records the model and settings."""
    from tats.cli.sample import batch_cond, decode_settings, validate
    from tats.data.hdf5 import HDF5VideoWriter
    from tats.gpt.load import load_transformer

    common.seed_everything(args.seed + args.run)
    model = load_transformer(args.gpt_ckpt, vqgan_ckpt=args.vqgan_ckpt, device=device)
    args.sample_length = math.ceil(length / model.vqgan.config.downsample[0])  # what validate() checks
    args.class_cond, args.text, args.sample_resolution = False, None, None
    validate(args, model, long=True)
    if digits_on and model.config.cond_type != "label":
        raise SystemExit(f"--digits needs a class-conditional model; {args.gpt_ckpt} is conditioned on "
                         f"{model.config.cond_type!r} (pass --digits off)")
    tokens_per_video = args.sample_length * int(np.prod(model.config.latent_shape[1:]))
    decode = decode_settings(args, model)
    sampler: dict[str, Any] = dict(seconds=0.0, tokens=0)
    writer: HDF5VideoWriter | None = None  # opened with the first batch (its frame size)

    def labels_of(start: int, size: int) -> np.ndarray | None:
        c = batch_cond(args, model, start, size)
        return None if c is None else np.broadcast_to(np.asarray(torch.as_tensor(c)), (size,)).copy()

    def draw_batches(k: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        nonlocal writer
        opts = common.sampling_options(args, device)
        opts.generator.manual_seed(args.seed + args.run + k)
        t0, made = time.perf_counter(), 0
        batches = generate_long_videos(
            model, n, length, args.batch_size, lambda start, size: batch_cond(args, model, start, size), opts,
            args.temporal_sample_pos, uint8, not args.no_progress, args.top_k_init, args.top_p_init, decode)
        for clips in batches:
            labels = labels_of(made, len(clips))
            made += len(clips)
            if not args.no_videos_file:
                writer = writer or HDF5VideoWriter(save / "videos.h5", clips.shape[2:], chunk_frames=16)
                writer.add_batch("test", clips, labels)
            yield clips, (demo_digits(args.data_path, labels) if digits_on else None)
        sampler["seconds"] = round(sampler["seconds"] + time.perf_counter() - t0, 1)
        sampler["tokens"] += n * tokens_per_video
        sampler["tokens_per_s"] = round(sampler["tokens"] / max(sampler["seconds"], 1e-9), 1)
        if k == args.draws - 1 and writer is not None:
            writer.close()

    source = dict(gpt_ckpt=str(args.gpt_ckpt), vqgan_ckpt=args.vqgan_ckpt, seed=args.seed + args.run,
                  temporal_sample_pos=args.temporal_sample_pos, top_k=args.top_k, top_p=args.top_p,
                  temperature=args.temperature, dtype=args.dtype, compile=args.compile, decode=decode,
                  videos_file=None if args.no_videos_file else str(save / "videos.h5"))
    return draw_batches, sampler, source
