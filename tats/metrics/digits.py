"""Digit accuracy of the built-in demo: does a generated clip show the digit it was conditioned on?

FVD says how far samples are from real clips as a whole; on the demo's moving digits a sharper question
is whether the conditioned digit is readable. :class:`DigitClassifier` is a small CNN trained on the
frames of the demo's one-digit training clips (their digit is the clip's label); :func:`digit_accuracy`
classifies every frame of a set of videos and reports how many show the intended digit. Run it on real
clips with the same labels for the reference value: two-digit clips (whose label names the first digit)
keep the real clips below 100%.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from tats.io.checkpoint import load_checkpoint, save_checkpoint


class DigitClassifier(nn.Module):
    """Grey frames ``(N, 1, R, R)`` in [-0.5, 0.5] (``R`` divisible by 4) -> digit logits ``(N, 10)``."""

    def __init__(self, resolution: int = 32, width: int = 32) -> None:
        super().__init__()
        if resolution % 4:
            raise ValueError(f"resolution must be divisible by 4, got {resolution}")
        self.resolution = resolution
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * (resolution // 4) ** 2, 128), nn.ReLU(), nn.Linear(128, 10),
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


def _grey_frames(video: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, R, R)`` -> ``(B * T, 1, R, R)``: the channel mean of every frame."""
    return video.float().mean(1).flatten(0, 1)[:, None]


def one_digit_frames(data_path: str | os.PathLike, split: str = "train", every: int = 1,
                     max_clips: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of a demo HDF5 split's one-digit clips: ``(N, 1, R, R)`` in [-0.5, 0.5], digits ``(N,)``.

    A clip has one digit when its caption names one (``"the digit 3 is moving ..."``); its digit is
    ``label // n_motions`` (:mod:`tats.data.demo`). ``every`` keeps every ``every``-th frame of a clip;
    only the first ``max_clips`` clips are read (None: all).
    """
    with h5py.File(data_path, "r") as f:
        if "tats_demo" not in f.attrs:
            raise ValueError(f"{data_path} is not a demo data file (no 'tats_demo' attribute)")
        params = json.loads(f.attrs["tats_demo"])
        n_motions, seq_len = len(params["motions"]), int(params["sequence_length"])
        labels = f[f"{split}_label"][:max_clips]
        raw = f[f"{split}_caption"][: len(labels)]
        captions = [c.decode() if isinstance(c, bytes) else str(c) for c in raw]
        one = np.array([c.count("digit") == 1 for c in captions])
        data = f[f"{split}_data"][: len(labels) * seq_len]  # (n_clips * T, R, R, C) uint8
    clips = data.reshape(len(labels), seq_len, *data.shape[1:])[one][:, ::every]  # (n, T', R, R, C)
    frames = torch.from_numpy(clips).float().mean(-1).flatten(0, 1)[:, None] / 255.0 - 0.5  # (N, 1, R, R)
    digits = torch.from_numpy(labels[one] // n_motions).repeat_interleave(clips.shape[1])  # (N,)
    return frames, digits


def train_digit_classifier(data_path: str | os.PathLike, epochs: int = 3, batch_size: int = 128,
                           every: int = 2, max_clips: int = 2000, seed: int = 0,
                           progress: bool = True) -> DigitClassifier:
    """Train a :class:`DigitClassifier` on the one-digit clips among the first ``max_clips`` training clips
    of a demo file (every ``every``-th frame; Adam, lr 1e-3). On the demo's 32x32 clips the defaults take
    about half a minute on 2 CPU cores and read every held-out one-digit test frame right."""
    frames, digits = one_digit_frames(data_path, "train", every, max_clips)
    if len(frames) == 0:
        raise ValueError(f"{data_path} has no one-digit training clips to learn digits from")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DigitClassifier(frames.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps = tqdm(total=epochs * -(-len(frames) // batch_size), desc="digit classifier", disable=not progress)
    for _ in range(epochs):
        order = torch.randperm(len(frames), generator=gen)
        for i in range(0, len(frames), batch_size):
            batch = order[i : i + batch_size]
            loss = F.cross_entropy(model(frames[batch]), digits[batch])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps.update()
    steps.close()
    return model.eval()


def load_or_train_digit_classifier(data_path: str | os.PathLike, cache: str | os.PathLike | None = None,
                                   **train_kw) -> DigitClassifier:
    """The classifier for ``data_path``, read from ``cache`` (a ``.pt`` state dict) when it exists, else
    trained and written there (atomically)."""
    if cache is not None and Path(cache).is_file():
        state = load_checkpoint(cache)
        model = DigitClassifier(int(state.pop("resolution").item()))
        model.load_state_dict(state)
        return model.eval()
    model = train_digit_classifier(data_path, **train_kw)
    if cache is not None:
        save_checkpoint({**model.state_dict(), "resolution": torch.tensor(model.resolution)}, cache)
    return model


@torch.inference_mode()
def digit_hits(classifier: DigitClassifier, videos: torch.Tensor,
               digits: torch.Tensor | list[int] | np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Which frames of ``videos (B, C, T, R, R)`` in [-0.5, 0.5] the classifier reads as their video's
    digit ``digits (B,)``: bool ``(B, T)``."""
    digits = torch.as_tensor(np.asarray(digits), dtype=torch.long).cpu()
    frames = _grey_frames(videos.cpu())  # (B * T, 1, R, R)
    pred = torch.cat([classifier(frames[i : i + batch_size]).argmax(1)
                      for i in range(0, len(frames), batch_size)])  # (B * T,)
    return (pred.view(videos.shape[0], -1) == digits[:, None]).numpy()  # (B, T)


def digit_accuracy(classifier: DigitClassifier, videos: torch.Tensor, digits: torch.Tensor | list[int],
                   batch_size: int = 512) -> dict[str, float]:
    """How often ``videos (B, C, T, R, R)`` in [-0.5, 0.5] show ``digits (B,)``.

    Returns ``frames``: the share of all frames classified as their video's digit, and ``videos``: the
    share of videos where more than half of the frames are.
    """
    hit = torch.from_numpy(digit_hits(classifier, videos, digits, batch_size)).float()  # (B, T)
    return dict(frames=float(hit.mean()), videos=float((hit.mean(1) > 0.5).float().mean()))


def demo_digit_classifier(data_path: str | os.PathLike) -> DigitClassifier:
    """The classifier of a demo file, trained once and cached as ``$TATS_CACHE/demo/digits_<file>.pt``."""
    from tats.io.fetch import cache_dir

    cache = cache_dir() / "demo" / f"digits_{Path(data_path).stem}.pt"
    return load_or_train_digit_classifier(data_path, cache)


def real_digit_accuracy(data_path: str | os.PathLike, classifier: DigitClassifier, n: int, frames: int,
                        split: str = "train") -> float:
    """The reference of :func:`digit_accuracy` on real clips: the share of the first ``frames`` frames of the
    first ``n`` clips of a demo file's split read as their label's digit (two-digit clips, whose label
    names the first digit, keep it below 1)."""
    with h5py.File(data_path, "r") as f:
        n_motions = len(json.loads(f.attrs["tats_demo"])["motions"])
        idx = f[f"{split}_idx"][:n]
        clips = np.stack([f[f"{split}_data"][s : s + frames] for s in idx])  # (n, T, R, R, C) uint8
        labels = f[f"{split}_label"][: len(idx)]
    video = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255.0 - 0.5  # (n, C, T, R, R)
    return float(digit_hits(classifier, video, labels // n_motions).mean())
