"""Cheap PyAV probing (frame counts without decoding) and clip decoding that seeks near the start."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Union

import numpy as np

from tats.io.video import require_av

PathLike = Union[str, Path]


class ShortClipError(ValueError):
    """The file ended before the clip did (metadata over-estimated the frame count)."""

    def __init__(self, path: PathLike, n_available: int, message: str):
        super().__init__(message)
        self.path = str(path)
        self.n_available = n_available


def _frame_rate(stream) -> Fraction | None:
    rate = stream.average_rate or stream.base_rate or stream.guessed_rate
    return Fraction(rate) if rate else None


def probe_video(path: PathLike) -> dict:
    """Frame count and rate of the first video stream, from container metadata.

    Order of preference: the stream's frame count; else ``duration * rate`` (rounded down, so a clip
    index never promises frames that are not there); else a packet count (demuxing reads the file
    but decodes nothing).

    Returns:
        ``dict(n_frames=int, fps=float, source="frames"|"duration"|"packets")``.

    Raises:
        ValueError / av.error.FFmpegError when the file is not a readable video.
    """
    av = require_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        rate = _frame_rate(stream)
        n_frames, source = int(stream.frames or 0), "frames"
        if n_frames <= 0 and rate:
            if stream.duration and stream.time_base:
                n_frames, source = int(stream.duration * stream.time_base * rate), "duration"
            elif container.duration:
                n_frames, source = int(Fraction(container.duration, av.time_base) * rate), "duration"
        if n_frames <= 0:
            # Packets with a size are frames; empty ones are decoder flush markers.
            n_frames = sum(1 for packet in container.demux(stream) if packet.size)
            source = "packets"
        if n_frames <= 0:
            raise ValueError("video stream has no frames")
        return dict(n_frames=n_frames, fps=float(rate) if rate else 0.0, source=source)


def _count(stats: dict | None, decoded: int) -> None:
    if stats is not None:
        stats["decoded"] = stats.get("decoded", 0) + decoded


def decode_clip(
    path: PathLike,
    start: int,
    n_frames: int,
    stride: int = 1,
    stats: dict | None = None,
    seek: bool = True,
    indices: list[int] | None = None,
) -> np.ndarray:
    """Decode frames ``start, start+stride, ...`` (``n_frames`` of them) of a video file, or the frames
    ``indices`` (non-decreasing; repeats allowed) when given.

    Seeks to the key frame before ``start`` (frame indices come from presentation timestamps at the
    stream's average rate) instead of decoding from the beginning; falls back to sequential decoding
    when the stream has no timestamps or the seek overshoots. Where timestamps skip an index (variable
    frame rate), the frame on screen at that index, i.e. the previous one, is used.

    Args:
        stats: optional dict; ``stats["decoded"]`` receives the number of frames decoded.

    Returns:
        uint8 ``(n_frames, H, W, 3)`` RGB.

    Raises:
        ShortClipError if the file ends early; av errors for unreadable files.
    """
    av = require_av()
    if indices is not None:
        start, n_frames = indices[0], len(indices)
    targets = list(indices) if indices is not None else [start + k * stride for k in range(n_frames)]
    out: list[np.ndarray] = []
    decoded, position, previous = 0, -1, None
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate, time_base = _frame_rate(stream), stream.time_base
        t0 = stream.start_time or 0
        use_pts = seek and rate is not None and time_base is not None
        if use_pts and start > 0:
            target = t0 + int(Fraction(start) / (rate * time_base))
            container.seek(target, stream=stream, backward=True, any_frame=False)
        for frame in container.decode(stream):
            decoded += 1
            if use_pts:
                position = None if frame.pts is None else round((frame.pts - t0) * time_base * rate)
                # No timestamps, or the seek landed after the clip start: count frames from the start.
                if position is None or (decoded == 1 and position > start):
                    _count(stats, decoded)
                    return decode_clip(path, start, n_frames, stride, stats, seek=False, indices=indices)
            else:
                position += 1
            while len(out) < n_frames and targets[len(out)] <= position:
                exact = targets[len(out)] == position or previous is None
                out.append((frame if exact else previous).to_ndarray(format="rgb24"))
            if len(out) == n_frames:
                break
            previous = frame
    _count(stats, decoded)
    if len(out) < n_frames:
        raise ShortClipError(
            path, position + 1,
            f"{path}: wanted frames {start}..{targets[-1]} (stride {stride}) but the stream ends after "
            f"{position + 1} frames",
        )
    return np.stack(out)
