"""Quality over time of long videos: FVD and KVD of ``window``-frame windows taken at positions along the
videos, each against the same real clips, as the TATS paper measures whether a long video holds its
quality (https://arxiv.org/abs/2204.03638, Fig. 5: windows from frame 16 to 1,024).

A measurement has ``draws`` independent repeats. Draw ``k`` compares the windows of its own generated
videos (another sampling seed, or the k-th part of a set read from disk) with its own real set, and
also reports real against real: the real set against as many other real windows as there are
generated videos, the noise floor of an FVD over that many clips. Every figure is given as mean,
standard deviation, min and max over the draws.

A task metric can ride along: on the built-in moving digits, the share of a window's frames that the
digit classifier reads as the digit the video was conditioned on (:mod:`tats.metrics.digits`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tats.metrics.fvd import I3DFeatureExtractor, frechet_distance, get_protocol, polynomial_mmd

#: Window starts of the TATS paper's curves, in frames; the last window of the video is added to them.
DEFAULT_POSITIONS = (0, 16, 32, 64, 128, 256, 512, 768)
WINDOW = 16


def window_positions(length: int, window: int = WINDOW, positions: Sequence[int] | None = None) -> list[int]:
    """The window starts to evaluate on videos of ``length`` frames.

    ``None``: :data:`DEFAULT_POSITIONS` that fit, plus ``length - window`` (the video's last window).
    Given positions must all fit (``0 <= p <= length - window``): a position past the end is an error
    naming ``--positions``, never dropped silently.
    """
    if length < window:
        raise ValueError(f"videos of {length} frames are shorter than one {window}-frame window (--window)")
    last = length - window
    if positions is None:
        return sorted({p for p in DEFAULT_POSITIONS if p <= last} | {last})
    bad = [p for p in positions if not 0 <= p <= last]
    if bad:
        raise ValueError(f"--positions {bad}: a {window}-frame window must start in [0, {last}] on videos "
                         f"of {length} frames")
    return sorted(set(int(p) for p in positions))


def summary(values: Sequence[float]) -> dict[str, object]:
    """Mean, standard deviation (over draws, ddof 0), min and max of one figure, and the values."""
    v = np.asarray(values, dtype=np.float64)
    return dict(mean=float(v.mean()), std=float(v.std()), min=float(v.min()), max=float(v.max()),
                values=[float(x) for x in v])


def uint8_to_model(videos: np.ndarray) -> torch.Tensor:
    """uint8 ``(B, T, H, W, C)`` -> float ``(B, C, T, H, W)`` in [-0.5, 0.5] (the model layout)."""
    return torch.from_numpy(np.ascontiguousarray(videos)).permute(0, 4, 1, 2, 3).float() / 255.0 - 0.5


class WindowFeatures:
    """Collects, from batches of long videos, the I3D features of the window at every position (or at
    ``fvd_positions``, a subset: I3D is the costly part), and the digit hits of every window when a
    classifier is given.

    ``update(videos, labels)`` takes uint8 ``(b, T, H, W, C)`` (the protocol's uint8 already applied) and,
    for the digit metric, the conditioned digit of each video ``(b,)``.
    """

    def __init__(self, i3d: nn.Module | None, protocol: str, positions: Sequence[int], window: int = WINDOW,
                 batch_size: int = 16, digit_classifier: nn.Module | None = None, desc: str = "I3D windows",
                 progress: bool = True, fvd_positions: Sequence[int] | None = None) -> None:
        self.positions, self.window = list(positions), window
        fvd_positions = self.positions if fvd_positions is None else list(fvd_positions)
        if not set(fvd_positions) <= set(self.positions):
            raise ValueError(f"FVD positions {fvd_positions} must be among the positions {self.positions}")
        self.extractors = {} if i3d is None else {
            p: I3DFeatureExtractor(i3d, protocol, batch_size, progress=False) for p in fvd_positions}
        self.classifier = digit_classifier
        self.hits: dict[int, list[np.ndarray]] = {p: [] for p in self.positions}
        self.bar = tqdm(desc=desc, unit="window", disable=not progress)

    def update(self, videos: np.ndarray, digits: np.ndarray | None = None) -> None:
        from tats.metrics.digits import digit_hits
        if videos.shape[1] < self.positions[-1] + self.window:
            raise ValueError(f"videos of {videos.shape[1]} frames end before the window at "
                             f"{self.positions[-1]} (--positions)")
        for p in self.positions:
            clip = videos[:, p : p + self.window]  # (b, window, H, W, C)
            if p in self.extractors:
                self.extractors[p].update(clip)
            if self.classifier is not None and digits is not None:
                self.hits[p].append(digit_hits(self.classifier, uint8_to_model(clip), digits))
            self.bar.update(len(clip))

    def features(self) -> dict[int, np.ndarray]:
        self.bar.close()
        return {p: ext.compute() for p, ext in self.extractors.items()}

    def digit_accuracy(self) -> dict[int, float] | None:
        """Share of each window's frames read as the conditioned digit (None without the metric)."""
        if self.classifier is None or not any(self.hits.values()):
            return None
        return {p: float(np.concatenate(h).mean()) for p, h in self.hits.items()}


def quality_over_time(
    fake: Sequence[dict[int, np.ndarray]],
    real: Sequence[np.ndarray],
    reference: Sequence[np.ndarray],
    protocol: str = "tats",
    digits: Sequence[dict[int, float] | None] | None = None,
) -> dict[str, object]:
    """Per-position FVD/KVD over the draws.

    Args:
        fake: per draw, ``{position: I3D features (N, 400)}`` of the generated windows (empty dicts: no
            FVD, the digit accuracy only).
        real: per draw, the real set's features ``(n_real, 400)``.
        reference: per draw, features of other real windows ``(N, 400)``, disjoint from the real set:
            real vs real over the generated side's count (the noise floor).
        digits: per draw, ``{position: digit accuracy}`` (or None).

    Returns ``rows`` (one per position: ``fvd``, ``kvd`` (where measured) and ``digits`` as
    :func:`summary` dicts) and ``real_vs_real`` (``fvd``, ``kvd``).
    """
    with_fvd = bool(fake and fake[0])
    if not fake or (with_fvd and not len(fake) == len(real) == len(reference)):
        raise ValueError(f"need one real and one reference set per draw: {len(fake)} generated, {len(real)} "
                         f"real, {len(reference)} reference")
    with_digits = bool(digits) and all(d is not None for d in digits)
    positions = sorted(set(fake[0]) | (set(digits[0]) if with_digits else set()))
    ddof = get_protocol(protocol).cov_ddof
    rows = []
    for p in positions:
        row: dict[str, object] = dict(position=p)
        if with_fvd and p in fake[0]:
            row["fvd"] = summary([frechet_distance(r, f[p], ddof) for f, r in zip(fake, real)])
            row["kvd"] = summary([polynomial_mmd(r, f[p]) for f, r in zip(fake, real)])
        if with_digits:
            row["digits"] = summary([d[p] for d in digits])
        rows.append(row)
    rvr = {} if not with_fvd else dict(
        fvd=summary([frechet_distance(r, q, ddof) for r, q in zip(real, reference)]),
        kvd=summary([polynomial_mmd(r, q) for r, q in zip(real, reference)]))
    return dict(rows=rows, real_vs_real=rvr)


def last_vs_first(result: dict) -> dict[str, float | None]:
    """Ratios of the last window's mean figures to the first's: ``fvd`` and ``digits`` (those measured;
    None where the first is 0)."""
    first, last = result["rows"][0], result["rows"][-1]
    return {key: (last[key]["mean"] / first[key]["mean"] if first[key]["mean"] else None)
            for key in ("fvd", "kvd", "digits") if key in first and key in last}


CSV_FIELDS = ("position", "fvd_mean", "fvd_std", "fvd_min", "fvd_max", "kvd_mean", "kvd_std", "digits_mean",
              "digits_std", "real_vs_real_fvd_mean", "real_vs_real_fvd_std")


def write_csv(result: dict, path: str | Path) -> Path:
    """One row per position: mean and spread of FVD, KVD, digit accuracy, and the real-vs-real FVD."""
    path = Path(path)
    rvr = result["real_vs_real"].get("fvd", {})
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        w.writeheader()
        for row in result["rows"]:
            line = {"position": row["position"], "real_vs_real_fvd_mean": rvr.get("mean"),
                    "real_vs_real_fvd_std": rvr.get("std")}
            for key in ("fvd", "kvd", "digits"):
                for stat in ("mean", "std", "min", "max"):
                    if key in row and f"{key}_{stat}" in CSV_FIELDS:
                        line[f"{key}_{stat}"] = row[key][stat]
            w.writerow(line)
    return path


def measure_over_time(
    draws: Sequence[Iterable[tuple[np.ndarray, np.ndarray | None]]],
    i3d: nn.Module | None,
    real_spec: str,
    positions: Sequence[int],
    n_videos: int,
    window: int = WINDOW,
    protocol: str = "tats",
    n_real: int = 2048,
    real_seed: int = 0,
    reference_seed: int = 1_000_003,
    resolution: int = 128,
    sample_every_n_frames: int = 1,
    image_folder: bool = False,
    digit_classifier: nn.Module | None = None,
    batch_size: int = 16,
    cache: str | Path | None = "default",
    progress: bool = True,
    first_batch: Callable[[np.ndarray], None] | None = None,
    fvd_positions: Sequence[int] | None = None,
) -> dict[str, object]:
    """Quality over time of long videos against real windows (the module docstring's protocol).

    Args:
        draws: per draw, batches ``(uint8 videos (b, T, H, W, C), digits (b,) or None)``; consumed
            lazily, after the real sets (so a bad real set fails before any sampling). Each draw must
            give exactly ``n_videos`` videos.
        i3d: the I3D network; None measures the digit accuracy only (no FVD, no real features).
        real_spec: the real videos (a dataset, ``.npy`` or ``demo``: :mod:`tats.data.sources`); draw k's
            real set is the release's draw of ``n_real`` training windows with seed ``real_seed + k``,
            its reference ``n_videos`` other windows (seed ``reference_seed + k``).
        cache: folder for real features (``"default"``: ``$TATS_CACHE/fvd``; None: no cache).
        first_batch: called with the first batch of draw 0 (e.g. to write a contact sheet).
        fvd_positions: the positions that get FVD/KVD (default: all; the digit accuracy is at all).

    Returns :func:`quality_over_time`'s dict plus ``positions``, ``real`` (the draws' settings and
    availability), ``digits_real`` (the real windows' digit accuracy, with a classifier) and the I3D
    weights' checksum.
    """
    from tats.data.sources import count_clips
    from tats.metrics.fvd import source_features

    if cache == "default":
        from tats.io.fetch import cache_dir

        cache = Path(cache_dir()) / "fvd" if getattr(i3d, "weights_sha256", None) else None
    available = count_clips(real_spec, window, resolution, sample_every_n_frames, "train", image_folder)
    if i3d is not None and available < n_real + n_videos:
        raise ValueError(
            f"--n_real {n_real}: a real set of {n_real} training windows plus {n_videos} other windows for "
            f"the real-vs-real reference need {n_real + n_videos}; --data_path {real_spec} has {available} "
            f"windows of {window} frames: lower --n_real or --n_sample")
    common = dict(protocol=protocol, n_frames=window, batch_size=batch_size, resolution=resolution,
                  sample_every_n_frames=sample_every_n_frames, split="train", image_folder=image_folder,
                  cache=cache, progress=progress, selection="random")
    seeds = [real_seed + k for k in range(len(draws))]
    reference_seeds = [reference_seed + k for k in range(len(draws))]
    real, reference = [], []
    for seed, ref_seed in zip(seeds, reference_seeds) if i3d is not None else ():
        real.append(source_features(real_spec, i3d, max_videos=n_real, seed=seed, **common)[0])
        reference.append(source_features(real_spec, i3d, max_videos=n_videos, seed=ref_seed,
                                         exclude_draw=(n_real, seed), **common)[0])
    fake, digits = [], []
    for k, batches in enumerate(draws):
        wf = WindowFeatures(i3d, protocol, positions, window, batch_size, digit_classifier,
                            desc=f"windows (draw {k})", progress=progress, fvd_positions=fvd_positions)
        seen = 0
        for videos, labels in batches:
            if k == 0 and seen == 0 and first_batch is not None:
                first_batch(videos)
            wf.update(videos, labels)
            seen += len(videos)
        if seen != n_videos:
            raise ValueError(f"draw {k} gave {seen} videos, expected {n_videos}")
        fake.append(wf.features())
        digits.append(wf.digit_accuracy())
    with_digits = digit_classifier is not None
    result = quality_over_time(fake, real, reference, protocol, digits if with_digits else None)
    result.update(positions=list(positions),
                  fvd_positions=list(positions if fvd_positions is None else fvd_positions),
                  protocol=protocol, n_real=n_real, real_available=available,
                  real=dict(source=str(real_spec), split="train", seeds=seeds,
                            reference_seeds=reference_seeds, resolution=resolution,
                            sample_every_n_frames=sample_every_n_frames),
                  i3d_weights_sha256=getattr(i3d, "weights_sha256", None), fvd=i3d is not None)
    if digit_classifier is not None and Path(real_spec).is_file():
        from tats.metrics.digits import real_digit_accuracy

        result["digits_real"] = real_digit_accuracy(real_spec, digit_classifier, n_real, window)
    return result
