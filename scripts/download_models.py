"""Download the checkpoints published with the TATS release into the cache, by name (docs/models.md).

    python scripts/download_models.py --list              # the registry, and which files are cached
    python scripts/download_models.py ucf101 ucf101-base  # these (cached ones are verified)
    python scripts/download_models.py --all               # every published checkpoint
    TATS_CACHE=/shared/tats python scripts/download_models.py --all   # or --cache_dir /shared/tats
"""

from __future__ import annotations

import argparse
import sys

from tats.io.checkpoint import CheckpointError
from tats.io.download import DownloadError
from tats.io.registry import fetch_model, model_rows, models_dir, names


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def print_list(cache: str | None) -> None:
    rows = model_rows(cache)
    print(f"published checkpoints (cache: {models_dir(cache)}):")
    w = max(len(r["name"]) for r in rows)
    wd = max(len(r["dataset"]) for r in rows)
    for r in rows:
        cached = f"cached {_size(r['bytes'])}" if r["cached"] else "not cached"
        aliases = f" (also: {', '.join(r['aliases'])})" if r["aliases"] else ""
        print(f"  {r['name']:<{w}}  {r['dataset']:<{wd}}  {cached:<16}  {r['role']}{aliases}, {r['host']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", help=f"models to fetch: {', '.join(names())}")
    p.add_argument("--all", action="store_true", help="fetch every published checkpoint")
    p.add_argument("--list", action="store_true", help="show the registry and which files are cached")
    p.add_argument("--force", action="store_true", help="download again even if cached and verified")
    p.add_argument("--cache_dir", default=None, help="cache folder (default $TATS_CACHE or ~/.cache/tats)")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.list:
        print_list(args.cache_dir)
        return 0
    wanted = names() if args.all else args.names
    if not wanted:
        p.error("name models to fetch, or pass --all or --list")
    failed = []
    for name in wanted:
        try:
            path = fetch_model(name, args.cache_dir, force=args.force, progress=not args.no_progress)
        except (CheckpointError, DownloadError, FileNotFoundError) as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"{name}: {path}")
    if failed:
        print(f"failed: {' '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
