"""FVD sanity check on the built-in moving-digits demo data, with real I3D weights.

    python scripts/fetch_weights.py --i3d          # once
    python scripts/fvd_sanity.py --n_clips 64      # about 4 x 64 I3D passes; minutes on a CPU

Compares 4 sets of n_clips clips (16 frames, 64x64, resized to 224 by the "tats" protocol):
A = demo test clips [0, n), B = clips [n, 2n), B with every clip's frames shuffled in time, and
uniform noise videos. Expect FVD(A, B) << FVD(A, shuffled B) < FVD(A, noise). With fewer clips than
the 400 feature dimensions the covariances are rank-deficient and FVD is biased upwards, so compare
the numbers with each other, not with published values (2048 clips).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from tats.data.sources import iter_video_batches
from tats.metrics.fvd import I3DFeatureExtractor, frechet_distance, polynomial_mmd
from tats.metrics.i3d import load_i3d


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n_clips", type=int, default=64, help="clips per set")
    p.add_argument("--i3d_path", "--i3d", default=None,
                   help="I3D weights, or `release` (default: the fetched TF-hub weights)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write the result JSON here")
    args = p.parse_args(argv)

    n = args.n_clips
    clips = np.concatenate(list(iter_video_batches("demo", 16, 2 * n, 64, resolution=64, split="test")))
    if len(clips) < 2 * n:
        raise SystemExit(
            f"the demo test split has only {len(clips)} clips; use --n_clips <= {len(clips) // 2}"
        )
    rng = np.random.default_rng(args.seed)
    a, b = clips[:n], clips[n : 2 * n]
    shuffled = np.stack([v[rng.permutation(v.shape[0])] for v in b])
    noise = rng.integers(0, 256, size=b.shape, dtype=np.uint8)

    model = load_i3d(args.i3d_path, device=args.device)
    feats, t0 = {}, time.time()
    for name, videos in (("A", a), ("B", b), ("B_shuffled", shuffled), ("noise", noise)):
        ext = I3DFeatureExtractor(model, "tats", args.batch_size, desc=f"I3D {name}")
        ext.update(videos)
        feats[name] = ext.compute()
    result = {
        "n_clips": n,
        "frames": 16,
        "demo_resolution": 64,
        "protocol": "tats",
        "bn_eps": float(getattr(model, "bn_eps", float("nan"))),
        "i3d_seconds": round(time.time() - t0, 1),
    }
    for other in ("B", "B_shuffled", "noise"):
        result[f"fvd_A_vs_{other}"] = round(frechet_distance(feats["A"], feats[other]), 2)
        result[f"kvd_A_vs_{other}"] = round(polynomial_mmd(feats["A"], feats[other]), 3)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
