"""STFT features from a clip's own audio track (PyAV decode + torch.stft)."""

from __future__ import annotations

import math

import pytest
import torch

from tats.data.audio import (
    NoAudioError,
    STFTConfig,
    clip_stft_features,
    has_audio,
    load_audio,
    log_scale,
    stft_magnitude,
    video_fps,
    write_tone_video,
)

SR = 22050


@pytest.fixture(scope="module")
def tone_video(tmp_path_factory):
    """1 s, 8 fps, 1000 Hz tone (amplitude 0.5) starting at 0.5 s."""
    return write_tone_video(tmp_path_factory.mktemp("av") / "tone.mp4", 1000.0, seconds=1.0, fps=8,
                            sample_rate=SR, tone_start_sec=0.5)


def test_stft_peak_on_synthetic_sine():
    t = torch.arange(SR) / SR
    wave = 0.25 * torch.sin(2 * math.pi * 3000.0 * t)
    mag = stft_magnitude(wave, n_fft=512, hop_length=128)
    assert mag.shape == (257, 1 + SR // 128)
    assert mag.mean(1).argmax().item() == round(3000 * 512 / SR)  # bin 70
    # a bin-centred sine (bin 70 = 3014.6 Hz) peaks at its amplitude: magnitudes are normalised
    centred = stft_magnitude(0.25 * torch.sin(2 * math.pi * (70 * SR / 512) * t))
    assert centred[:, 10:-10].amax(0).mean().item() == pytest.approx(0.25, rel=0.01)
    assert log_scale(torch.tensor([1.0, 1e-2, 1e-9])).tolist() == pytest.approx([1.0, 0.0, -1.0])


def test_decoded_audio_is_aligned(tone_video):
    assert has_audio(tone_video) and video_fps(tone_video) == 8.0
    wave = load_audio(tone_video, 0.0, 1.0, SR)
    assert wave.shape == (SR,)
    assert wave[: int(0.45 * SR)].abs().max() < 0.02  # silence before the tone
    assert wave[int(0.6 * SR) :].abs().max() == pytest.approx(0.5, abs=0.05)
    # a span that starts mid-file: the tone begins 0.25 s into it
    part = load_audio(tone_video, 0.25, 0.75, SR)
    onset = (part.abs() > 0.1).float().argmax().item() / SR
    assert part.shape == (SR // 2,) and onset == pytest.approx(0.25, abs=0.01)
    peak = stft_magnitude(part[int(0.3 * SR) :]).mean(1).argmax().item()
    assert peak == round(1000 * 512 / SR)  # bin 23 = 990.5 Hz


def test_clip_features_shape_range_and_peak(tone_video):
    cfg = STFTConfig(sample_rate=SR)
    feats = clip_stft_features(tone_video, start_frame=0, n_frames=8, config=cfg)
    assert feats.shape == (1, 8, 64, 16) and feats.dtype == torch.float32
    assert feats.min() >= -1 and feats.max() <= 1
    per_frame = feats.mean(dim=(0, 2, 3))
    assert per_frame[:3].max() < -0.99  # silence maps to -1
    assert per_frame[5:].min() > per_frame[:3].max() + 0.05  # the tone starts at frame 4 (0.5 s)
    row = feats[0, 6].mean(-1).argmax().item()
    assert row == int(round(1000 * cfg.n_fft / SR) * cfg.n_freq / (cfg.n_fft // 2 + 1))  # row 5
    # every other frame over the second half: all four frames hear the tone
    sub = clip_stft_features(tone_video, start_frame=4, n_frames=2, sample_every_n_frames=2, config=cfg)
    assert sub.shape == (1, 2, 64, 16) and sub.mean(dim=(0, 2, 3)).min() > -0.99


def test_video_without_audio_names_the_file(tmp_path):
    silent = write_tone_video(tmp_path / "silent.mp4", freq_hz=None)
    assert not has_audio(silent)
    with pytest.raises(NoAudioError, match="silent.mp4.*no audio track"):
        clip_stft_features(silent, 0, 4)


def test_audio_video_folder_items(tmp_path):
    from tats.data.audio import AudioVideoFolderDataset

    for split in ("train", "test"):
        (tmp_path / split / "drums").mkdir(parents=True)
        write_tone_video(tmp_path / split / "drums" / "a.mp4", 2000.0, seconds=1.0, fps=8, size=16)
    (tmp_path / "test" / "drums" / "mute.mp4").write_bytes(b"")  # unreadable: skipped with a warning
    with pytest.warns(RuntimeWarning):
        ds = AudioVideoFolderDataset(tmp_path, train=False, sequence_length=4, resolution=16)
    item = ds[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["stft"].shape == (1, 4, 64, 16)
    assert item["label"] == 0 and item["path"].endswith("a.mp4")
    assert item["stft"][0].mean(dim=(1, 2)).min() > -0.99  # every frame hears the tone
    row = item["stft"][0, 1].mean(-1).argmax().item()
    assert row == int(round(2000 * 512 / SR) * 64 / 257)  # 2 kHz lands in row 11
