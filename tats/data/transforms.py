"""Clip preprocessing shared by every dataset: the release's resize / crop / value mapping.

the release, "Video tensors": resize the shorter side to ``resolution`` (bilinear,
``align_corners=False``, the other side rounded up), centre-crop a square, take every
``sample_every_n_frames``-th frame, and map pixels as ``uint8 / 255 - 0.5``. Frame folders instead
crop the centre square first and resize it with PIL's antialiasing filter (:func:`square_frame_pil`).
"""

from __future__ import annotations

import math
import re
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ArrayLike = Union[np.ndarray, torch.Tensor]


def clip_length(sequence_length: int, sample_every_n_frames: int = 1, image_folder: bool = False) -> int:
    """Frames ``T`` of one clip as the datasets serve it (the release, "Data and evaluation protocol").

    Release quirk, kept: its video-file and HDF5 datasets read a window of ``sequence_length``
    consecutive frames and keep every n-th (``T = ceil(sequence_length / n)``), while its frame-folder
    dataset takes ``sequence_length`` frames n apart (``T = sequence_length``).
    """
    if sequence_length < 1 or sample_every_n_frames < 1:
        raise ValueError(
            f"sequence_length and sample_every_n_frames must be >= 1, got {sequence_length}, "
            f"{sample_every_n_frames}"
        )
    return sequence_length if image_folder else -(-sequence_length // sample_every_n_frames)


def sequence_length_for(n_frames: int, sample_every_n_frames: int = 1, image_folder: bool = False) -> int:
    """The ``sequence_length`` whose clips have ``n_frames`` frames (inverse of :func:`clip_length`)."""
    return n_frames if image_folder else n_frames * sample_every_n_frames


def resized_size(height: int, width: int, resolution: int) -> tuple[int, int]:
    """Size ``(H', W')`` after scaling the shorter side to ``resolution``, the longer side rounded up.

    The float expression ``ceil(side * (resolution / shorter))`` is the release's, kept as is so that
    sizes agree exactly (including the cases where float rounding lands just above an integer).
    """
    scale = resolution / min(height, width)
    if height < width:
        return resolution, math.ceil(width * scale)
    return math.ceil(height * scale), resolution


def preprocess_clip(frames: ArrayLike, resolution: int, flip: bool = False) -> torch.Tensor:
    """Turn decoded frames into a model clip.

    Args:
        frames: uint8 ``(T, H, W, C)`` (numpy or torch), already temporally subsampled.
        resolution: side of the square output.
        flip: mirror horizontally (data augmentation; off unless the dataset asks for it).

    Returns:
        float32 ``(C, T, resolution, resolution)`` with values in ``[-0.5, 0.5]``.
    """
    video = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    if video.dtype != torch.uint8 or video.ndim != 4:
        raise ValueError(f"expected uint8 frames (T, H, W, C), got {tuple(video.shape)} {video.dtype}")
    # Same order of operations as the release: /255 first, interpolate in [0, 1], shift by 0.5 last.
    video = video.permute(0, 3, 1, 2).float() / 255.0  # (T, C, H, W)
    _, _, h, w = video.shape
    target = resized_size(h, w, resolution)
    if target != (h, w):
        video = F.interpolate(video, size=target, mode="bilinear", align_corners=False)
    _, _, h, w = video.shape
    top, left = (h - resolution) // 2, (w - resolution) // 2
    video = video[:, :, top : top + resolution, left : left + resolution]
    if flip:
        video = video.flip(-1)
    video = video.permute(1, 0, 2, 3).contiguous()  # (C, T, H, W)
    return video - 0.5


def square_frame_pil(image: Image.Image, resolution: int) -> np.ndarray:
    """The release's frame-folder preprocessing of one image: centre square crop (side = the shorter
    side, offsets rounded down), then PIL's antialiased resize (``ANTIALIAS``, i.e. Lanczos) to
    ``resolution`` x ``resolution``. Returns uint8 RGB ``(resolution, resolution, 3)``."""
    image = image.convert("RGB")
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    square = image.crop((left, top, left + side, top + side))
    if side != resolution:
        square = square.resize((resolution, resolution), Image.LANCZOS)
    return np.asarray(square)


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key ordering names by their embedded numbers: ``frame2.jpg`` before ``frame10.jpg``."""
    parts = _DIGITS.split(name)
    # Text parts and numbers alternate (text first), so tuples compare like with like.
    return tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))


def pick_start(n_starts: int, train: bool, test_start: str = "first", generator=None) -> int:
    """Start offset of a clip among ``n_starts`` valid ones.

    Training draws uniformly (torch RNG, which DataLoader seeds per worker); evaluation is
    deterministic: the first valid start (as the release's frame dataset) or the centre one.
    """
    if n_starts < 1:
        raise ValueError(f"no valid clip start (n_starts={n_starts})")
    if train:
        return int(torch.randint(n_starts, (1,), generator=generator).item())
    if test_start == "first":
        return 0
    if test_start == "centre":
        return (n_starts - 1) // 2
    raise ValueError(f"test_start must be 'first' or 'centre', got {test_start!r}")


def random_flip(enabled: bool, generator=None) -> bool:
    """Coin flip for horizontal mirroring; always False when augmentation is disabled."""
    return bool(enabled) and bool(torch.rand((), generator=generator).item() < 0.5)
