"""Preprocessing numbers (resize/crop/value map), clip lengths, start picking and numeric sorting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tats.data.transforms import (
    clip_length,
    natural_key,
    pick_start,
    preprocess_clip,
    resized_size,
    sequence_length_for,
)


def test_value_mapping():
    frames = np.array([0, 255, 51], np.uint8).reshape(3, 1, 1, 1).repeat(3, axis=-1)  # (T, 1, 1, 3)
    out = preprocess_clip(frames, resolution=1)
    assert out.shape == (3, 3, 1, 1) and out.dtype == torch.float32  # (C, T, H, W)
    assert out[0, :, 0, 0].tolist() == pytest.approx([-0.5, 0.5, 51 / 255 - 0.5])


def test_resize_and_centre_crop_by_hand():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)  # (T, H=4, W=6, C)
    out = preprocess_clip(frames, resolution=4)  # shorter side already 4: pure centre crop of W
    expected = torch.from_numpy(frames).permute(3, 0, 1, 2).float() / 255 - 0.5  # (C, T, H, W)
    torch.testing.assert_close(out, expected[..., 1:5], rtol=0, atol=1e-7)

    out = preprocess_clip(frames, resolution=3)  # 4x6 -> 3 x ceil(6 * 0.75) = 3x5, then crop W 1..4
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # (T, C, H, W)
    resized = F.interpolate(x, size=(3, 5), mode="bilinear", align_corners=False)
    expected = resized[..., 1:4].permute(1, 0, 2, 3) - 0.5
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert out.shape == (3, 2, 3, 3)

    tall = rng.integers(0, 256, (1, 7, 3, 3), dtype=np.uint8)  # H > W: crop rows
    out = preprocess_clip(tall, resolution=2)  # 7x3 -> ceil(7*2/3)=5 x 2, rows 1..3
    x = torch.from_numpy(tall).permute(0, 3, 1, 2).float() / 255
    expected = F.interpolate(x, size=(5, 2), mode="bilinear", align_corners=False)[:, :, 1:3]
    torch.testing.assert_close(out, expected.permute(1, 0, 2, 3) - 0.5, rtol=0, atol=0)


def test_resized_size_rounds_up_and_flip():
    assert resized_size(240, 320, 128) == (128, math.ceil(320 * (128 / 240)))  # 171, rounded up
    assert resized_size(320, 240, 64) == (86, 64)
    assert resized_size(64, 64, 64) == (64, 64)
    frames = np.arange(2 * 2 * 3 * 3, dtype=np.uint8).reshape(2, 2, 3, 3)
    torch.testing.assert_close(preprocess_clip(frames, 2, flip=True), preprocess_clip(frames, 2).flip(-1))
    with pytest.raises(ValueError, match="uint8"):
        preprocess_clip(frames.astype(np.float32), 2)


def test_clip_length_and_start():
    # video files / HDF5: a window of seq frames, every n-th kept -> ceil(seq / n); frame folders: seq
    assert clip_length(16, 1) == 16 and clip_length(16, 2) == 8 and clip_length(16, 3) == 6
    assert clip_length(16, 4, image_folder=True) == 16 and clip_length(1, 5) == 1
    assert sequence_length_for(16, 4) == 64 and sequence_length_for(16, 4, image_folder=True) == 16
    with pytest.raises(ValueError, match="must be >= 1"):
        clip_length(16, 0)
    assert pick_start(10, train=False) == 0
    assert pick_start(10, train=False, test_start="centre") == 4
    g = torch.Generator().manual_seed(0)
    starts = {pick_start(5, train=True, generator=g) for _ in range(200)}
    assert starts == {0, 1, 2, 3, 4}
    with pytest.raises(ValueError):
        pick_start(0, train=True)


def test_numeric_frame_sorting():
    names = ["frame10.jpg", "frame2.jpg", "frame1.jpg", "frame_100.png", "frame9.jpg"]
    assert sorted(names, key=natural_key) == ["frame1.jpg", "frame2.jpg", "frame9.jpg", "frame10.jpg",
                                              "frame_100.png"]
    assert sorted(["b_3_10.jpg", "b_3_9.jpg", "a_20.jpg"], key=natural_key) == [
        "a_20.jpg", "b_3_9.jpg", "b_3_10.jpg"]
