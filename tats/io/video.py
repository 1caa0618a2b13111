"""Writing and reading videos: mp4 (bundled ffmpeg via imageio-ffmpeg), gif, npy, PNG contact sheets.

Inputs are either model tensors, float ``(B, C, T, H, W)`` in ``[-0.5, 0.5]`` (shown as
``clamp(x, -0.5, 0.5) + 0.5``, as the release shows them), or uint8 ``(B, T, H, W, C)`` (numpy or
torch). A single video (``(C, T, H, W)`` float or ``(T, H, W, C)`` uint8) is treated as a batch of one.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Union

import numpy as np
import torch
from PIL import Image

PathLike = Union[str, Path]
VideoLike = Union[np.ndarray, torch.Tensor]


def require_av():
    """PyAV, imported only where video files are read (a machine without it loses only that)."""
    try:
        import av
    except ImportError as err:
        raise ImportError("reading video files needs PyAV (pip install av)") from err
    return av


#: How a float in [-0.5, 0.5] becomes uint8 after ``(x + 0.5) * 255``: ``"round"`` (to nearest, so
#: ``uint8 -> model range -> uint8`` is exact) or ``"truncate"`` (down, the release's ``astype(np.uint8)``
#: / ``.byte()``, which FVD protocol ``tats`` follows for real and generated clips alike).
UINT8_RULES = ("round", "truncate")


def float_to_uint8(video: torch.Tensor, rule: str = "round") -> torch.Tensor:
    """The one float -> uint8 conversion: ``video`` in ``[-0.5, 0.5]`` (any shape; clamped) -> uint8 of the
    same shape and device, ``(x + 0.5) * 255`` rounded or truncated by ``rule`` (:data:`UINT8_RULES`)."""
    if rule not in UINT8_RULES:
        raise ValueError(f"uint8 rule must be one of {UINT8_RULES}, got {rule!r}")
    scaled = (video.float().clamp(-0.5, 0.5) + 0.5) * 255.0
    return (scaled.floor() if rule == "truncate" else scaled.round()).to(torch.uint8)


def to_uint8(video: VideoLike, rule: str = "round") -> np.ndarray:
    """Convert to uint8 ``(B, T, H, W, C)`` with 3 channels, the layout every writer (and FVD) takes.

    Float input ``(B, C, T, H, W)`` in ``[-0.5, 0.5]`` goes through :func:`float_to_uint8` with ``rule``
    (``"round"`` by default, ``"truncate"`` for FVD protocol ``tats``). One-channel videos are repeated
    to RGB.
    """
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu()
        if video.dtype == torch.uint8:
            arr = video.numpy()
        else:
            if video.ndim == 4:
                video = video[None]  # (C, T, H, W) -> (1, C, T, H, W)
            if video.ndim != 5:
                raise ValueError(f"expected a float video (B, C, T, H, W), got shape {tuple(video.shape)}")
            arr = float_to_uint8(video, rule).permute(0, 2, 3, 4, 1).numpy()  # (B, T, H, W, C)
    else:
        arr = np.asarray(video)
        if arr.dtype != np.uint8:
            return to_uint8(torch.from_numpy(np.ascontiguousarray(arr)), rule)
    if arr.ndim == 4:
        arr = arr[None]  # (T, H, W, C) -> (1, T, H, W, C)
    if arr.ndim != 5 or arr.shape[-1] not in (1, 3):
        raise ValueError(f"expected uint8 (B, T, H, W, C) with C in (1, 3), got shape {arr.shape}")
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr)


def make_grid(
    video: VideoLike, nrow: int | None = None, padding: int = 1, pad_value: int = 128
) -> np.ndarray:
    """Tile a batch into one video: uint8 ``(T, H', W', 3)``, ``nrow`` videos per row (default ~sqrt(B)),
    separated by ``padding`` pixels of grey ``pad_value``."""
    frames = to_uint8(video)
    b, t, h, w, c = frames.shape
    ncol = nrow or math.ceil(math.sqrt(b))
    nrows = math.ceil(b / ncol)
    size = (t, padding + nrows * (h + padding), padding + ncol * (w + padding), c)
    grid = np.full(size, pad_value, np.uint8)
    for i in range(b):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = frames[i]
    return grid


def _even(frames: np.ndarray) -> np.ndarray:
    """Pad height and width to even sizes (libx264 with yuv420p needs them)."""
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)))


def write_frames(frames: np.ndarray, path: PathLike, fps: float = 8) -> Path:
    """Write uint8 ``(T, H, W, 3)`` frames to ``.mp4`` (H.264) or ``.gif``, chosen by the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        images = [Image.fromarray(f) for f in frames]
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    elif suffix in (".mp4", ".m4v", ".mov"):
        try:
            import imageio_ffmpeg  # noqa: F401 - imageio's FFMPEG plugin: the bundled ffmpeg binary
        except ImportError:  # (the GPU image has none): PyAV's ffmpeg
            write_mp4_with_av(_even(frames), path, fps)
            return path
        import imageio.v2 as imageio

        # quality 8 -> crf 10: near-lossless; macro_block_size 1 keeps our (even) size as is.
        with imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264", quality=8,
                                pixelformat="yuv420p", macro_block_size=1) as writer:
            for frame in _even(frames):
                writer.append_data(frame)
    else:
        raise ValueError(f"{path}: unsupported video suffix {suffix!r}; use .mp4 or .gif")
    return path


def write_mp4_with_av(frames: np.ndarray, path: PathLike, fps: float) -> None:
    """uint8 ``(T, H, W, 3)`` frames (even sides) to an mp4 with PyAV: H.264 at crf 10 (as the imageio
    path), or MPEG-4 part 2 where PyAV's ffmpeg has no libx264."""
    from fractions import Fraction

    av = require_av()
    with av.open(str(path), mode="w") as container:
        try:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                          options={"crf": "10"})
        except (ValueError, av.error.FFmpegError):  # pragma: no cover - builds without x264
            stream = container.add_stream("mpeg4", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def save_video_grid(video: VideoLike, path: PathLike, nrow: int | None = None, fps: float = 8,
                    padding: int = 1, pad_value: int = 128) -> Path:
    """Write a batch of videos as one grid video (``.mp4`` or ``.gif`` by suffix).

    Args:
        video: float ``(B, C, T, H, W)`` in [-0.5, 0.5] or uint8 ``(B, T, H, W, C)``.
        nrow: videos per grid row (default ceil(sqrt(B))).
        fps: frames per second.
    """
    return write_frames(make_grid(video, nrow, padding, pad_value), path, fps)


def save_npy(video: VideoLike, path: PathLike) -> Path:
    """Save uint8 ``(N, T, H, W, C)`` with ``np.save`` (exact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, to_uint8(video))
    return path


def save_contact_sheet(video: VideoLike, path_png: PathLike, max_videos: int = 8, max_frames: int = 16,
                       padding: int = 1, pad_value: int = 128) -> Path:
    """PNG grid: one row per video (at most ``max_videos``), columns = frames (at most ``max_frames``,
    evenly spaced over the clip so the whole motion shows)."""
    frames = to_uint8(video)[:max_videos]
    t = frames.shape[1]
    keep = np.unique(np.linspace(0, t - 1, min(t, max_frames)).round().astype(int))
    frames = _padded(frames[:, keep], padding, pad_value)  # (b, k, H+p, W+p, 3)
    rows = [np.concatenate(list(video_frames), axis=1) for video_frames in frames]  # each (H+p, k(W+p), 3)
    sheet = np.concatenate(rows, axis=0)
    sheet = np.pad(sheet, ((padding, 0), (padding, 0), (0, 0)), constant_values=pad_value)
    path_png = Path(path_png)
    path_png.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(path_png)
    return path_png


def _padded(frames: np.ndarray, padding: int, pad_value: int) -> np.ndarray:
    """Pad every frame on the bottom/right by ``padding`` pixels of ``pad_value``: ``(b, k, H+p, W+p, 3)``."""
    return np.pad(frames, ((0, 0), (0, 0), (0, padding), (0, padding), (0, 0)), constant_values=pad_value)


def read_video(path: PathLike) -> np.ndarray:
    """Decode every frame of a video file (mp4, avi, webm, gif, ...) with PyAV: uint8 ``(T, H, W, 3)``."""
    av = require_av()
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError(f"{path}: no decodable video frames")
    return np.stack(frames)
