"""Trim and resize Kinetics videos into the train/test class-folder layout (PyAV, H.264).

Input: trimmed clips ``kinetics/<split>/<label>/<youtube_id>_<start:06d>_<end:06d>.mp4``, or full
videos ``kinetics/raw/<youtube_id>.mp4`` with ``--annotations`` (the official CSVs). Output:
``<out>/{train,test}/<label>/<youtube_id>_<start>_<end>.mp4``, shorter side ``--size``. The layouts:
docs/data.md, "Preparing public datasets".

    python datasets/prepare_kinetics.py --src kinetics --out data/k400 --size 128
    python datasets/prepare_kinetics.py --src kinetics/raw --annotations train.csv validate.csv --out k400
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

SPLITS = {"train": "train", "val": "test", "validate": "test", "validation": "test", "test": "test"}


def parse_annotations(path: Path) -> list[dict]:
    """Rows of an official Kinetics CSV as dicts with ``label, youtube_id, start, end, split``."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append(dict(label=row["label"].strip().replace(" ", "_"), youtube_id=row["youtube_id"],
                             start=float(row["time_start"]), end=float(row["time_end"]),
                             split=SPLITS.get(row.get("split", "train"), "train")))
    return rows


def clip_name(youtube_id: str, start: float, end: float) -> str:
    """The usual trimmed-clip file stem: ``<id>_<start:06d>_<end:06d>``."""
    return f"{youtube_id}_{int(start):06d}_{int(end):06d}"


def resized_even(height: int, width: int, size: int) -> tuple[int, int]:
    """Shorter side -> ``size``, aspect kept, both sides even (libx264 with yuv420p needs that)."""
    scale = size / min(height, width)
    return max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2)


def transcode(src: Path, dst: Path, size: int, start: float | None = None, end: float | None = None) -> int:
    """Copy ``src`` (optionally the ``[start, end)`` seconds) to ``dst`` as H.264, shorter side ``size``.

    Returns the number of frames written."""
    import av  # imported here so that --help needs nothing but the standard library

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".tmp" + dst.suffix)
    n = 0
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        stream = inp.streams.video[0]
        rate = stream.average_rate or 30
        h, w = resized_even(stream.height, stream.width, size)
        ostream = out.add_stream("libx264", rate=rate)
        ostream.width, ostream.height, ostream.pix_fmt = w, h, "yuv420p"
        if start:
            inp.seek(int(start / stream.time_base), stream=stream, backward=True)
        for frame in inp.decode(stream):
            t = frame.time
            if t is not None and start is not None and t < start:
                continue
            if t is not None and end is not None and t >= end:
                break
            frame = frame.reformat(width=w, height=h, format="yuv420p")
            frame.pts = None
            for packet in ostream.encode(frame):
                out.mux(packet)
            n += 1
        for packet in ostream.encode():
            out.mux(packet)
    tmp.replace(dst)
    return n


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--src", type=Path, required=True, help="Kinetics folder (see above)")
    parser.add_argument("--out", type=Path, required=True, help="output dataset folder")
    parser.add_argument("--annotations", type=Path, nargs="*", default=[],
                        help="official CSVs: trim full videos named <youtube_id>.<ext> in --src")
    parser.add_argument("--size", type=int, default=128, help="shorter side of the output videos")
    args = parser.parse_args(argv)
    jobs = []  # (src, dst, start, end)
    if args.annotations:
        videos = {p.stem: p for p in args.src.iterdir() if p.is_file()}
        for csv_path in args.annotations:
            for row in parse_annotations(csv_path):
                src = videos.get(row["youtube_id"])
                if src is not None:
                    dst = args.out / row["split"] / row["label"] / (clip_name(row["youtube_id"], row["start"],
                                                                              row["end"]) + ".mp4")
                    jobs.append((src, dst, row["start"], row["end"]))
    else:
        for src in sorted(args.src.glob("*/*/*")):
            split = SPLITS.get(src.parent.parent.name)
            if split and src.suffix.lower() in (".mp4", ".webm", ".mkv", ".avi"):
                jobs.append((src, args.out / split / src.parent.name / (src.stem + ".mp4"), None, None))
    failed = 0
    for i, (src, dst, start, end) in enumerate(jobs):
        if dst.exists():
            continue
        try:
            transcode(src, dst, args.size, start, end)
        except Exception as err:  # noqa: BLE001 - a broken download should not stop the batch
            failed += 1
            print(f"skipping {src}: {err}")
        if (i + 1) % 500 == 0:
            print(f"{i + 1}/{len(jobs)}")
    print(f"{len(jobs) - failed} clips -> {args.out} ({failed} failed)")


if __name__ == "__main__":
    main()
