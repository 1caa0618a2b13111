"""Show a few clips of a dataset (default: the built-in moving-digits demo data).

Writes ``<out>/clips.mp4`` and ``<out>/clips.gif`` (a grid video), ``<out>/contact_sheet.png`` (rows =
clips, columns = frames) and ``<out>/clips.npy``, and prints each clip's label and caption::

    python scripts/show_demo_data.py                       # demo data, 64x64, 16 frames
    python scripts/show_demo_data.py --data_path ucf101 --resolution 128 --n_videos 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tats.data import VideoDataModule, add_data_args
from tats.io.video import save_contact_sheet, save_npy, save_video_grid


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    add_data_args(parser)
    # one clip per video: the first --n_videos videos, not the first windows of one video
    parser.set_defaults(resolution=64, num_workers=0, clips_per_video=1)
    parser.add_argument("--out", type=Path, default=Path("demo_output/data"), help="output folder")
    parser.add_argument("--n_videos", type=int, default=8, help="how many clips to show")
    parser.add_argument("--split", choices=("train", "test"), default="test",
                        help="test clips start at a fixed frame; train clips at a random one")
    parser.add_argument("--fps", type=float, default=8)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    data = VideoDataModule(args)
    data.setup()
    dataset = data.train_dataset if args.split == "train" else data.val_dataset
    items = [dataset[i] for i in range(min(args.n_videos, len(dataset)))]
    video = torch.stack([item["video"] for item in items])  # (B, C, T, H, W) in [-0.5, 0.5]
    print(f"{len(dataset)} {args.split} clips of shape {tuple(video.shape[1:])} (C, T, H, W), "
          f"{data.n_classes} classes, from {data.data_path()}")
    for i, item in enumerate(items):
        name = data.class_names[item["label"]]
        print(f"  [{i}] label {item['label']} ({name}): {item.get('text', item.get('path', ''))}")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (save_video_grid(video, args.out / "clips.mp4", fps=args.fps),
                 save_video_grid(video, args.out / "clips.gif", fps=args.fps),
                 save_contact_sheet(video, args.out / "contact_sheet.png"),
                 save_npy(video, args.out / "clips.npy")):
        print(f"wrote {path}")
    return args.out


if __name__ == "__main__":
    main()
