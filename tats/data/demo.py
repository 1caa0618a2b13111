"""Built-in demo data: bouncing digits with captions and labels, generated offline in seconds (in the
spirit of the moving-MNIST caption sets of Sync-DRAW / GODIVA), stored in the release HDF5 layout
(:mod:`tats.data.hdf5`) with ``*_label``, ``*_caption``, ``attrs["label_names"]`` and
``attrs["tats_demo"]`` (JSON of the generator parameters). docs/data.md has the labels and captions.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Union

import h5py
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from tats.data.clip_index import default_cache_dir
from tats.data.hdf5 import HDF5VideoWriter

#: Bump when the generator's output changes, so cached files are regenerated.
GENERATOR_VERSION = 4
#: Side of a digit's box as a share of the frame side (0.5 up to version 2). Large digits leave fewer
#: all-background positions in a VQGAN's code grid (they all take one code, which caps the codebook's
#: perplexity), so more codes go to strokes, and they stay readable at 32 px.
DIGIT_BOX = 0.75
#: Motion name -> which axes move (x, y).
MOTIONS = {"left and right": (1, 0), "up and down": (0, 1), "diagonally": (1, 1)}
_BATCH = 256


@cache
def _base_glyph(digit: int, stroke: int) -> np.ndarray:
    """A large, tightly cropped rendering of ``digit`` (uint8 2-D), before per-clip variation."""
    try:
        font = ImageFont.load_default(size=96)
    except TypeError:  # Pillow < 10.1: only the small bitmap font; upscaled below like the rest
        font = ImageFont.load_default()
    img = Image.new("L", (192, 192), 0)
    draw = ImageDraw.Draw(img)
    draw.text((40, 20), str(digit), fill=255, font=font, stroke_width=stroke, stroke_fill=255)
    return np.asarray(img.crop(img.getbbox()))


def _glyphs(digits: np.ndarray, box: int, rng: np.random.Generator) -> np.ndarray:
    """Varied glyphs ``(m, box, box)`` uint8, one per digit: height, width, stroke, rotation, brightness."""
    m = len(digits)
    strokes = rng.integers(0, 5, size=m)
    heights = np.maximum(4, np.rint(box * rng.uniform(0.7, 0.95, size=m))).astype(int)
    stretch = rng.uniform(0.8, 1.2, size=m)
    angles = rng.uniform(-15.0, 15.0, size=m)
    brightness = rng.uniform(0.65, 1.0, size=m).astype(np.float32)
    out = np.empty((m, box, box), np.uint8)
    for i in range(m):
        base = _base_glyph(int(digits[i]), int(strokes[i]))
        height = int(heights[i])
        width = max(3, min(box, round(height * base.shape[1] / base.shape[0] * stretch[i])))
        canvas = Image.new("L", (box, box), 0)
        canvas.paste(Image.fromarray(base).resize((width, height), Image.BILINEAR),
                     ((box - width) // 2, (box - height) // 2))
        out[i] = np.asarray(canvas.rotate(angles[i], resample=Image.BILINEAR))
    return (out * brightness[:, None, None]).astype(np.uint8)


def _trajectory(rng: np.random.Generator, n: int, length: int, moving: np.ndarray, room: int,
                speed: tuple[float, float]) -> np.ndarray:
    """Integer positions ``(n, length)`` on one axis: bouncing between 0 and ``room`` where moving."""
    p0 = rng.uniform(0, room, size=n)
    v = rng.uniform(*speed, size=n) * rng.choice([-1.0, 1.0], size=n) * moving
    p = p0[:, None] + v[:, None] * np.arange(length)[None]  # (n, T), unfolded straight motion
    m = np.mod(p, 2 * room)
    return np.rint(room - np.abs(room - m)).astype(np.int64)  # reflect at both borders


def _render_batch(rng: np.random.Generator, n: int, params: dict) -> tuple[np.ndarray, list, list]:
    """``n`` clips uint8 ``(n, T, R, R, C)`` with labels and captions."""
    length, res, channels = params["sequence_length"], params["resolution"], params["channels"]
    motions = params["motions"]
    box = max(8, round(DIGIT_BOX * res))  # 24 px on 32 px frames, 48 px on 64 px (moving MNIST: 28 of 64)
    room = res - box
    speed = (res / 32, res / 14)  # pixels per frame
    n_digits = np.where(rng.random(n) < params["two_digit_fraction"], 2, 1)
    digits = rng.integers(0, 10, size=(n, 2))
    motion = rng.integers(0, len(motions), size=(n, 2))
    clips = np.zeros((n, length, res, res), np.uint8)
    ar = np.arange(box)
    for k in range(2):
        rows_with = np.flatnonzero(n_digits > k)
        if len(rows_with) == 0:
            continue
        axes = np.array([MOTIONS[motions[j]] for j in motion[rows_with, k]])  # (m, 2) x/y moving
        xs = _trajectory(rng, len(rows_with), length, axes[:, 0], room, speed)  # (m, T)
        ys = _trajectory(rng, len(rows_with), length, axes[:, 1], room, speed)
        glyphs = _glyphs(digits[rows_with, k], box, rng)  # (m, box, box)
        nn = rows_with[:, None, None, None]
        tt = np.arange(length)[None, :, None, None]
        rr = ys[:, :, None, None] + ar[None, None, :, None]  # (m, T, box, 1)
        cc = xs[:, :, None, None] + ar[None, None, None, :]  # (m, T, 1, box)
        clips[nn, tt, rr, cc] = np.maximum(clips[nn, tt, rr, cc], glyphs[:, None])  # overlaps: max
    labels = (digits[:, 0] * len(motions) + motion[:, 0]).tolist()
    captions = []
    for i in range(n):
        parts = [f"digit {digits[i, k]} is moving {motions[motion[i, k]]}" for k in range(n_digits[i])]
        captions.append(" and ".join(parts) if len(parts) > 1 else "the " + parts[0])
    return np.repeat(clips[..., None], channels, axis=-1), labels, captions  # (n, T, R, R, C)


def demo_params(n_train: int = 4000, n_test: int = 256, sequence_length: int = 16, resolution: int = 64,
                seed: int = 0, two_digit_fraction: float = 0.5,
                motions: Sequence[str] = ("left and right", "up and down"), channels: int = 3) -> dict:
    """The full parameter dict (what the file's ``attrs["tats_demo"]`` holds)."""
    unknown = [m for m in motions if m not in MOTIONS]
    if unknown:
        raise ValueError(f"unknown motion(s) {unknown}; choose from {list(MOTIONS)}")
    if resolution < 16:
        raise ValueError(f"resolution must be >= 16 for legible digits, got {resolution}")
    return dict(version=GENERATOR_VERSION, n_train=int(n_train), n_test=int(n_test),
                sequence_length=int(sequence_length), resolution=int(resolution), seed=int(seed),
                two_digit_fraction=float(two_digit_fraction), motions=list(motions), channels=int(channels))


def label_names(motions: Sequence[str] = ("left and right", "up and down")) -> list[str]:
    """Name of every class id: ``"digit {d} moving {motion}"`` for ``d * len(motions) + motion``."""
    return [f"digit {d} moving {m}" for d in range(10) for m in motions]


def _stored_params(path: Path) -> dict | None:
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["tats_demo"])
    except (OSError, KeyError, ValueError):
        return None


def make_demo_data(
    path: Union[str, Path] | None = None,
    n_train: int = 4000,
    n_test: int = 256,
    sequence_length: int = 16,
    resolution: int = 64,
    seed: int = 0,
    two_digit_fraction: float = 0.5,
    motions: Sequence[str] = ("left and right", "up and down"),
    channels: int = 3,
    progress: bool = True,
) -> Path:
    """Generate (or reuse) the moving-digits HDF5 file and return its path.

    Args:
        path: output file; default ``$TATS_CACHE/demo/moving_digits_<params>.h5`` (``~/.cache/tats``).
        n_train, n_test: number of clips per split (each one video of ``sequence_length`` frames).
        resolution: frame side in pixels (frames are ``resolution x resolution``).
        seed: the output is a pure function of the parameters (byte-identical for the same seed).
        two_digit_fraction: share of clips with two digits.
        motions: subset of ``MOTIONS`` keys.

    An existing file written with the same parameters is reused; otherwise it is (re)written
    atomically, so concurrent processes never read a half-written file.
    """
    params = demo_params(n_train, n_test, sequence_length, resolution, seed, two_digit_fraction,
                         motions, channels)
    if path is None:
        digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        name = f"moving_digits_{resolution}px_{sequence_length}f_{n_train}+{n_test}_seed{seed}_{digest}.h5"
        path = default_cache_dir() / "demo" / name
    path = Path(path)
    if path.is_file() and _stored_params(path) == params:
        return path

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        frame_shape = (resolution, resolution, channels)
        with HDF5VideoWriter(tmp, frame_shape, chunk_frames=sequence_length) as writer:
            writer.file.attrs["tats_demo"] = json.dumps(params, sort_keys=True)
            writer.file.attrs["label_names"] = json.dumps(label_names(params["motions"]))
            for split_id, (split, count) in enumerate((("train", n_train), ("test", n_test))):
                # One stream per split: the test set does not change when n_train does.
                rng = np.random.default_rng([seed, split_id])
                starts = range(0, count, _BATCH)
                for begin in tqdm(starts, desc=f"demo data ({split})", disable=not progress or count < 2000):
                    clips, labels, captions = _render_batch(rng, min(_BATCH, count - begin), params)
                    writer.add_batch(split, clips, labels, captions)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
