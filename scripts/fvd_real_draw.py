"""How the choice of real clips moves FVD: the release's real set (clips drawn at random over every
training window) against a second draw of it, and against the first videos in sorted path order, one
clip each, which on a class-per-folder dataset hold only the alphabetically first classes.

    python scripts/fetch_weights.py --i3d                                  # once
    python scripts/fvd_real_draw.py --out runs/fvd_real_draw               # about 15 min on 2 CPU cores

docs/evaluation.md has the sets it compares and the figures.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from tats.data.demo import make_demo_data
from tats.data.sources import pick_clips
from tats.data.video_folder import VideoFolderDataset
from tats.io.video import write_mp4_with_av
from tats.metrics.fvd import frechet_distance, polynomial_mmd, source_features
from tats.metrics.i3d import load_i3d

FRAMES = 16  # frames I3D sees per clip, as the release


def write_mp4(frames: np.ndarray, path: Path, fps: int = 8) -> None:
    """uint8 ``(T, H, W, 3)`` frames to an H.264 file (near-lossless, crf 10)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_mp4_with_av(frames, path, fps)


def write_video_folder(root: Path, n_train: int, n_test: int, frames: int, resolution: int) -> Path:
    """The moving digits as ``root/{train,test}/<class>/<i>.mp4``; reused when already written."""
    done = root / ".complete.json"
    params = dict(n_train=n_train, n_test=n_test, frames=frames, resolution=resolution)
    if done.is_file() and json.loads(done.read_text()) == params:
        return root
    h5 = make_demo_data(n_train=n_train, n_test=n_test, sequence_length=frames, resolution=resolution)
    with h5py.File(h5, "r") as f:
        names = [re.sub(r"\W+", "_", n) for n in json.loads(f.attrs["label_names"])]
        for split in ("train", "test"):
            data, starts, labels = f[f"{split}_data"], f[f"{split}_idx"][:], f[f"{split}_label"][:]
            for i, (start, label) in enumerate(zip(starts, labels)):
                write_mp4(data[start : start + frames], root / split / names[label] / f"{i:05d}.mp4")
    done.write_text(json.dumps(params))
    return root


def classes_of(root: Path, n: int, selection: str, seed: int, clips_per_video) -> list[str]:
    """The classes of the clips a set holds (the same indices :func:`pick_clips` gives the reader)."""
    ds = VideoFolderDataset(root, train=True, sequence_length=FRAMES, resolution=16,
                            clips_per_video=clips_per_video)
    picked = pick_clips(len(ds), n, selection, seed)
    return [ds.classes[ds.items[ds.windows.locate(int(i))[0]][2]] for i in picked]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/fvd_real_draw", help="folder for the data and the result")
    p.add_argument("--n", type=int, default=128, help="clips per set (the release: 2048)")
    p.add_argument("--videos", type=int, default=800, help="training videos (about --videos / 20 per class)")
    p.add_argument("--frames", type=int, default=32, help="frames per video (windows: frames - 15 each)")
    p.add_argument("--resolution", type=int, default=64, help="frame side of the videos")
    p.add_argument("--i3d_path", default=None, help="I3D weights (default: the fetched TF-hub weights)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    out = Path(args.out)
    root = write_video_folder(out / "data", args.videos, 20, args.frames, args.resolution)
    model = load_i3d(args.i3d_path, device=args.device)
    sets = {"A": ("random", 0, None), "B": ("random", 1, None), "old": ("first", 0, 1)}
    feats, classes, t0 = {}, {}, time.time()
    for name, (selection, seed, per_video) in sets.items():
        feats[name], _ = source_features(str(root), model, "tats", FRAMES, max_videos=args.n,
                                         batch_size=args.batch_size, resolution=args.resolution,
                                         selection=selection, seed=seed, clips_per_video=per_video)
        classes[name] = classes_of(root, args.n, selection, seed, per_video)
    n_classes = len(VideoFolderDataset(root, train=True, sequence_length=FRAMES, resolution=16).classes)
    result: dict = {"n_clips": args.n, "frames": FRAMES, "training_videos": args.videos,
                    "frames_per_video": args.frames, "classes": n_classes, "protocol": "tats",
                    "i3d_weights_sha256": getattr(model, "weights_sha256", None),
                    "i3d_seconds": round(time.time() - t0, 1)}
    for name in sets:
        result[f"classes_in_{name}"] = len(set(classes[name]))
    for other in ("A", "B", "old"):
        result[f"fvd_A_vs_{other}"] = round(frechet_distance(feats["A"], feats[other]), 2)
        result[f"kvd_A_vs_{other}"] = round(polynomial_mmd(feats["A"], feats[other]), 4)
    print(json.dumps(result, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    (out / "fvd_real_draw.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
