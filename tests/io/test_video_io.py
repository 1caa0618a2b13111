"""Video writing/reading: uint8 conversion, grids, mp4/gif/npy round trips, contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tats.io.video import make_grid, read_video, save_contact_sheet, save_npy, save_video_grid, to_uint8


def _smooth_videos(b: int = 2, t: int = 6, h: int = 24, w: int = 32) -> np.ndarray:
    """uint8 (B, T, H, W, 3) with smooth content (codecs keep it nearly exactly)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.zeros((b, t, h, w, 3), np.uint8)
    for i in range(b):
        for j in range(t):
            out[i, j, ..., 0] = 40 + 150 * xx
            out[i, j, ..., 1] = 40 + 150 * yy
            out[i, j, ..., 2] = 30 + 20 * j + 30 * i
    return out


def test_to_uint8_value_mapping_and_layouts():
    video = torch.tensor([-0.5, 0.5, 0.0, -1.0, 2.0]).view(1, 1, 5, 1, 1)  # (B, C=1, T=5, H, W)
    out = to_uint8(video)
    assert out.shape == (1, 5, 1, 1, 3) and out.dtype == np.uint8
    assert out[0, :, 0, 0, 0].tolist() == [0, 255, 128, 0, 255]  # 0.0 -> 127.5 rounds to 128; clamped
    # uint8 -> model range -> uint8 is exact (rounding, not truncation).
    u = np.random.default_rng(0).integers(0, 256, (2, 3, 4, 5, 3), dtype=np.uint8)
    x = torch.from_numpy(u).permute(0, 4, 1, 2, 3).float() / 255 - 0.5  # (B, C, T, H, W)
    np.testing.assert_array_equal(to_uint8(x), u)
    np.testing.assert_array_equal(to_uint8(torch.from_numpy(u)), u)
    assert to_uint8(u[0]).shape == (1, 3, 4, 5, 3)  # single (T, H, W, C)
    assert to_uint8(x[0]).shape == (1, 3, 4, 5, 3)  # single (C, T, H, W)
    with pytest.raises(ValueError, match="B, T, H, W, C"):
        to_uint8(np.zeros((2, 3, 4, 5, 7), np.uint8))


def test_make_grid_layout():
    v = _smooth_videos(b=3, t=2, h=4, w=5)
    grid = make_grid(v, nrow=2, padding=1, pad_value=7)
    assert grid.shape == (2, 1 + 2 * 5, 1 + 2 * 6, 3)
    np.testing.assert_array_equal(grid[:, 1:5, 1:6], v[0])
    np.testing.assert_array_equal(grid[:, 1:5, 7:12], v[1])
    np.testing.assert_array_equal(grid[:, 6:10, 1:6], v[2])
    assert (grid[:, 6:10, 7:12] == 7).all()  # empty cell
    assert (grid[:, 0] == 7).all() and (grid[:, :, 6] == 7).all()


def test_mp4_round_trip(tmp_path):
    v = _smooth_videos(b=1, t=6, h=24, w=32)
    path = save_video_grid(v, tmp_path / "v.mp4", padding=0, fps=8)
    back = read_video(path)
    assert back.shape == v[0].shape
    assert np.abs(back.astype(int) - v[0].astype(int)).mean() < 3.0


def test_mp4_odd_size_is_padded_even(tmp_path):
    v = _smooth_videos(b=3, t=3, h=9, w=11)  # grid 1+2*10 x 1+2*12 = 21 x 25: odd both ways
    back = read_video(save_video_grid(v, tmp_path / "odd.mp4", nrow=2))
    assert back.shape == (3, 22, 26, 3)


def test_gif_round_trip(tmp_path):
    v = np.zeros((1, 4, 8, 10, 3), np.uint8)
    for j in range(4):
        v[0, j, :, : 2 + 2 * j] = 255  # a growing white bar: exactly representable in a palette
    back = read_video(save_video_grid(v, tmp_path / "v.gif", padding=0))
    assert back.shape == (4, 8, 10, 3)
    np.testing.assert_array_equal(back, v[0])


def test_npy_exact_and_contact_sheet(tmp_path):
    u = np.random.default_rng(1).integers(0, 256, (3, 5, 6, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(np.load(save_npy(u, tmp_path / "v.npy")), u)
    x = torch.from_numpy(u).permute(0, 4, 1, 2, 3).float() / 255 - 0.5
    np.testing.assert_array_equal(np.load(save_npy(x, tmp_path / "x.npy")), u)

    sheet = np.asarray(Image.open(save_contact_sheet(u, tmp_path / "s.png", max_videos=2, max_frames=3)))
    # rows = 2 videos, columns = frames 0, 2, 4 (evenly spaced), 1 px separators
    assert sheet.shape == (1 + 2 * 7, 1 + 3 * 8, 3)
    np.testing.assert_array_equal(sheet[1:7, 1:8], u[0, 0])
    np.testing.assert_array_equal(sheet[1:7, 9:16], u[0, 2])
    np.testing.assert_array_equal(sheet[8:14, 17:24], u[1, 4])


def test_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match=".avi"):
        save_video_grid(_smooth_videos(), tmp_path / "v.avi")


def test_a_machine_without_pyav_loses_only_reading_video_files(tmp_path):
    """The GPU image has no PyAV, ftfy, lpips or imageio-ffmpeg: training, sampling, the demo data and the
    GPU check import without them, and reading a video says what is missing."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('av', 'ftfy', 'lpips', 'imageio_ffmpeg'):\n"
        "    sys.modules[name] = None\n"  # `import av` now raises ImportError
        "import tats, tats.data.demo, tats.data.datamodule, tats.data.audio, tats.io.video\n"
        "import tats.metrics.fvd, tats.cli.long_eval, tats.cli.sample, tats.sampling\n"
        "import tats.train.transformer, tats.train.vqgan\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2] / 'scripts')!r}); import gpu_check\n"
        "from tats.data.demo import make_demo_data\n"
        f"make_demo_data({str(tmp_path / 'd.h5')!r}, n_train=4, n_test=2, sequence_length=8, resolution=16,"
        " progress=False)\n"
        "from tats.io.video import read_video\n"
        "try:\n    read_video('x.mp4')\nexcept ImportError as e:\n    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused: reading video files needs PyAV (pip install av)" in out.stdout


def test_mp4_without_imageio_ffmpeg_is_written_with_pyav(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # as on the GPU image
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 256, (6, 1, 1, 3), dtype=np.uint8), 16, axis=1).repeat(16, axis=2)
    path = save_video_grid(frames[None], tmp_path / "grid.mp4", padding=0)
    back = read_video(path)
    assert back.shape[0] == 6 and back.shape[1:3] == (16, 16)
    # flat colours through yuv420p at crf 10: within a few levels
    assert np.abs(back.astype(int) - frames.astype(int)).mean() < 6
