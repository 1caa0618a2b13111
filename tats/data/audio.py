"""Audio conditioning inputs: STFT features computed from a clip's own audio track.

The release trained its audio-conditioned (AudioSet-Drums) model on precomputed STFT pickles
(:mod:`tats.data.stft_pickles`); this computes the same kind of tensor, ``(1, T, n_freq,
steps_per_frame)`` in [-1, 1], directly from the video file, so new data needs no side files
(docs/data.md lists the steps)::

    feats = clip_stft_features("clip.mp4", start_frame=0, n_frames=16)   # (1, 16, 64, 16) in [-1, 1]
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from einops import rearrange
from torch.utils.data import DataLoader

from tats.data.transforms import preprocess_clip
from tats.data.video_folder import VideoFolderDataset
from tats.io.video import require_av


class NoAudioError(ValueError):
    """The video file has no audio stream (or no decodable audio in the requested span)."""


@dataclass
class STFTConfig:
    """How audio becomes a (1, T, n_freq, steps_per_frame) feature tensor; see docs/data.md."""

    sample_rate: int = 22050  # Hz after resampling
    n_fft: int = 512  # window and FFT length in samples (23 ms at 22.05 kHz); n_fft // 2 + 1 bins
    n_freq: int = 64  # output frequency rows (area-averaged bins), as the release's 64
    steps_per_frame: int = 16  # output STFT columns per video frame, as the release's 16
    min_db: float = -80.0  # dB mapped to -1 (0 dB, a full-scale sine, maps to +1)


def video_timing(path: str | os.PathLike) -> tuple[float, float]:
    """``(fps, start_sec)`` of the first video stream: its average frame rate and the time of its
    first frame (frame i of a clip is at ``start_sec + i / fps``, as the video decoder counts)."""
    av = require_av()
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        if not rate:
            raise ValueError(f"{path}: cannot determine the video frame rate")
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
        return float(rate), start


def video_fps(path: str | os.PathLike) -> float:
    """Average frame rate of the first video stream of ``path`` (frames per second)."""
    return video_timing(path)[0]


def load_audio(
    path: str | os.PathLike, start_sec: float, end_sec: float, sample_rate: int = 22050
) -> torch.Tensor:
    """Decode ``[start_sec, end_sec)`` of the first audio stream of ``path``, mono, resampled.

    Returns:
        float32 tensor (N,) with N = round((end_sec - start_sec) * sample_rate) samples in [-1, 1];
        the tail is zero-padded if the track ends early.

    Raises:
        NoAudioError naming ``path`` when it has no audio stream.
    """
    av = require_av()
    n_out = int(round((end_sec - start_sec) * sample_rate))
    with av.open(str(path)) as container:
        if not container.streams.audio:
            raise NoAudioError(
                f"{path}: the video has no audio track, so STFT features cannot be computed "
                "(--stft_data needs videos with sound)"
            )
        stream = container.streams.audio[0]
        # Seek a little before the span: seeking lands on a packet boundary at or before the target.
        if start_sec > 0.5 and stream.time_base is not None:
            container.seek(int((start_sec - 0.5) / stream.time_base), stream=stream, backward=True)
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        buffer_start: float | None = None  # time (s) of the first resampled sample kept
        for frame in container.decode(stream):
            if buffer_start is None:
                buffer_start = float(frame.time) if frame.time is not None else 0.0
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
            if buffer_start + sum(len(c) for c in chunks) / sample_rate >= end_sec:
                break
        else:
            for out in resampler.resample(None):  # flush the resampler's delay line at the end
                chunks.append(out.to_ndarray().reshape(-1))
    if buffer_start is None:
        raise NoAudioError(f"{path}: the audio track has no decodable frames")
    wave = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
    # Align: sample k of `wave` is at time buffer_start + k / sample_rate.
    offset = int(round((start_sec - buffer_start) * sample_rate))
    if offset < 0:  # the track starts after start_sec: pad the front with silence
        wave = np.concatenate([np.zeros(-offset, dtype=np.float32), wave])
        offset = 0
    wave = wave[offset : offset + n_out]
    if len(wave) < n_out:
        wave = np.pad(wave, (0, n_out - len(wave)))
    return torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))


def stft_magnitude(wave: torch.Tensor, n_fft: int = 512, hop_length: int = 128) -> torch.Tensor:
    """Magnitude STFT of a mono waveform, amplitude-normalised.

    Args:
        wave: (N,) samples in [-1, 1].
        n_fft: window/FFT length (periodic Hann window), hop_length: samples between columns.

    Returns:
        (n_fft // 2 + 1, 1 + N // hop_length) magnitudes; a sine of amplitude A peaks at ~A in the bin
        ``round(f * n_fft / sample_rate)``.
    """
    window = torch.hann_window(n_fft, device=wave.device, dtype=wave.dtype)
    if wave.numel() < n_fft // 2 + 1:  # reflect padding needs more samples than half a window
        wave = F.pad(wave, (0, n_fft // 2 + 1 - wave.numel()))
    spec = torch.stft(wave, n_fft, hop_length=hop_length, window=window, center=True, return_complex=True)
    return spec.abs() / (window.sum() / 2)


def log_scale(mag: torch.Tensor, min_db: float = -80.0) -> torch.Tensor:
    """Magnitudes -> [-1, 1]: dB clamped to [min_db, 0] then mapped linearly (min_db -> -1, 0 dB -> 1)."""
    db = 20.0 * torch.log10(mag.clamp_min(1e-10))
    unit = ((db - min_db) / -min_db).clamp(0.0, 1.0)
    return unit * 2.0 - 1.0


def waveform_features(wave: torch.Tensor, n_frames: int, config: STFTConfig | None = None) -> torch.Tensor:
    """STFT features of a waveform that spans exactly ``n_frames`` video frames.

    Args:
        wave: (N,) mono samples at ``config.sample_rate``.
        n_frames: T, the number of video frames the waveform covers.

    Returns:
        (1, T, n_freq, steps_per_frame) float32 in [-1, 1].
    """
    cfg = config or STFTConfig()
    cols = n_frames * cfg.steps_per_frame
    hop = max(1, int(round(wave.numel() / cols)))
    feats = log_scale(stft_magnitude(wave, cfg.n_fft, hop), cfg.min_db)  # (n_fft/2+1, ~cols)
    feats = F.adaptive_avg_pool1d(rearrange(feats, "f n -> n 1 f"), cfg.n_freq)  # (n, 1, n_freq)
    feats = rearrange(feats, "n 1 f -> 1 f n")
    feats = F.interpolate(feats, size=cols, mode="linear", align_corners=False)  # (1, n_freq, cols)
    return rearrange(feats, "1 f (t w) -> 1 t f w", t=n_frames).contiguous()


def clip_stft_features(
    path: str | os.PathLike,
    start_frame: int,
    n_frames: int,
    fps: float | None = None,
    sample_every_n_frames: int = 1,
    config: STFTConfig | None = None,
) -> torch.Tensor:
    """STFT features aligned with a video clip of ``path``.

    The clip is frames ``start_frame, start_frame + s, ...`` (T = ``n_frames`` of them, s =
    ``sample_every_n_frames``) of a video at ``fps`` (read from the file when None); each output
    frame t covers the audio of ``[ (start_frame + t*s) / fps, (start_frame + (t+1)*s) / fps )``,
    counted from the video stream's first frame.

    Returns:
        (1, T, n_freq, steps_per_frame) float32 in [-1, 1] (``config`` defaults to :class:`STFTConfig`).
    """
    cfg = config or STFTConfig()
    rate, t0 = video_timing(path)
    fps = fps if fps is not None else rate
    start = t0 + start_frame / fps
    end = t0 + (start_frame + n_frames * sample_every_n_frames) / fps
    wave = load_audio(path, start, end, cfg.sample_rate)
    return waveform_features(wave, n_frames, cfg)


def has_audio(path: str | os.PathLike) -> bool:
    """Whether ``path`` has at least one audio stream."""
    av = require_av()
    with av.open(str(path)) as container:
        return bool(container.streams.audio)


def write_tone_video(
    path: str | os.PathLike,
    freq_hz: float | None = 440.0,
    seconds: float = 1.0,
    fps: int = 8,
    size: int = 16,
    sample_rate: int = 22050,
    tone_start_sec: float = 0.0,
) -> Path:
    """Write a small mp4 (grey frames with a moving bar, AAC mono sine tone) for tests and demos.

    ``freq_hz=None`` writes a video without an audio track. The tone is silent before
    ``tone_start_sec``. Returns the path.
    """
    av = require_av()
    path = Path(path)
    n_video = int(round(seconds * fps))
    with av.open(str(path), mode="w") as container:
        vstream = container.add_stream("mpeg4", rate=fps)
        vstream.width = vstream.height = size
        vstream.pix_fmt = "yuv420p"
        astream = None
        if freq_hz is not None:
            astream = container.add_stream("aac", rate=sample_rate)
            astream.layout = "mono"
        for i in range(n_video):
            img = np.full((size, size, 3), 64, dtype=np.uint8)
            img[:, (i * 2) % size] = 255
            for packet in vstream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)
        if astream is not None:
            t = np.arange(int(round(seconds * sample_rate))) / sample_rate
            wave = (0.5 * np.sin(2 * math.pi * freq_hz * t) * (t >= tone_start_sec)).astype(np.float32)
            block = 1024  # AAC frame size
            for i in range(0, len(wave), block):
                chunk = wave[i : i + block]
                frame = av.AudioFrame.from_ndarray(chunk[None, :], format="flt", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = i
                for packet in astream.encode(frame):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


class AudioVideoFolderDataset(VideoFolderDataset):
    """A video folder (``root/{train,test}/<class>/*.mp4``) whose items also carry STFT features of
    the same clip's audio (``--stft_data``).

    Items: ``dict(video=(C, T, H, W) in [-0.5, 0.5], stft=(1, T, n_freq, steps_per_frame) in [-1, 1],
    label=int, path=str)``. Videos without an audio track fail with :class:`NoAudioError` (naming
    the file) and are skipped by the dataset's bounded retry like any unreadable file.
    """

    def __init__(self, *args: Any, stft_config: STFTConfig | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stft_config = stft_config or STFTConfig()

    def _load(self, index: int) -> dict[str, Any]:
        video_id, start, frames = self._read(index)
        rel, _, label = self.items[video_id]
        path = self.split_dir / rel
        video = preprocess_clip(frames, self.resolution)  # (C, T, H, W)
        stft = clip_stft_features(path, start, self.clip_length,
                                  sample_every_n_frames=self.sample_every_n_frames, config=self.stft_config)
        return dict(video=video, stft=stft, label=label, path=str(path), start=start)


class AudioVideoDataModule(pl.LightningDataModule):
    """Train/test loaders of :class:`AudioVideoFolderDataset` from the data flags
    (``data_path``, ``sequence_length``, ``resolution``, ``sample_every_n_frames``, ``batch_size``,
    ``num_workers``). ``n_classes`` is known after ``setup()``."""

    def __init__(self, args: Any, stft_config: STFTConfig | None = None) -> None:
        super().__init__()
        if getattr(args, "data_path", None) is None:
            raise ValueError("--stft_data needs --data_path: a folder of videos with sound (train/, test/)")
        self.args = args
        self.stft_config = stft_config or STFTConfig()
        self.n_classes = 0

    def _dataset(self, train: bool) -> AudioVideoFolderDataset:
        a = self.args
        return AudioVideoFolderDataset(
            a.data_path, train=train, sequence_length=a.sequence_length, resolution=a.resolution,
            sample_every_n_frames=getattr(a, "sample_every_n_frames", 1), stft_config=self.stft_config,
            clips_per_video=getattr(a, "clips_per_video", None),
        )

    def setup(self, stage: str | None = None) -> None:
        self.train_dataset = self._dataset(True)
        self.val_dataset = self._dataset(False)
        self.n_classes = self.train_dataset.n_classes

    def _loader(self, ds: AudioVideoFolderDataset, shuffle: bool) -> DataLoader:
        workers = int(getattr(self.args, "num_workers", 0) or 0)
        return DataLoader(ds, batch_size=self.args.batch_size, shuffle=shuffle, num_workers=workers,
                          persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, False)


def add_audio_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--stft_data`` (compute STFT features from the videos' own audio) and the STFT settings."""
    g = parser.add_argument_group("audio (STFT) features")
    defaults = STFTConfig()
    if "--stft_data" not in parser._option_string_actions:
        g.add_argument("--stft_data", action="store_true",
                       help="compute STFT features from each clip's own audio track (release: precomputed "
                            "pickles); needed by --cond_stage_key stft")
    g.add_argument("--stft_sample_rate", type=int, default=defaults.sample_rate, help="audio rate (Hz)")
    g.add_argument("--stft_n_fft", type=int, default=defaults.n_fft, help="STFT window/FFT length (samples)")
    return parser


def stft_config_from_args(args: Any) -> STFTConfig:
    """The :class:`STFTConfig` of the ``--stft_*`` flags."""
    return STFTConfig(sample_rate=getattr(args, "stft_sample_rate", STFTConfig.sample_rate),
                      n_fft=getattr(args, "stft_n_fft", STFTConfig.n_fft))
