"""Frechet Video Distance (FVD) and Kernel Video Distance (KVD) on I3D logits, in float64.

:data:`PROTOCOLS` holds how videos become I3D inputs: ``"tats"`` (the default: the release's
evaluation), ``"styleganv"`` (StyleGAN-V's preprocessing and covariance) and ``"coinrun"`` (the
release's MUGEN I3D variant on 256x256 frames). docs/evaluation.md gives each protocol's rules and which
I3D weights make numbers comparable; every result records the weights hash.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from tats.data.sources import iter_video_batches
from tats.io.video import to_uint8


@dataclass(frozen=True)
class FVDProtocol:
    """How videos become I3D inputs and how covariances are normalised."""

    name: str
    crop: bool  # False: squash each frame to size x size; True: shorter side to size, centre crop
    cov_ddof: int  # 1: unbiased (N - 1); 0: N
    uint8: str  # float -> uint8 rule of tats.io.video: "truncate" (the release) or "round"
    size: int = 224
    is_coinrun: bool = False  # the I3D variant it needs (tats.metrics.i3d.load_i3d(is_coinrun=...))


PROTOCOLS = {
    "tats": FVDProtocol("tats", crop=False, cov_ddof=1, uint8="truncate"),
    "styleganv": FVDProtocol("styleganv", crop=True, cov_ddof=0, uint8="round"),
    "coinrun": FVDProtocol("coinrun", crop=False, cov_ddof=1, uint8="truncate", size=256, is_coinrun=True),
}
#: Clips per side of the release's FVD; numbers from fewer clips are not comparable with published ones
#: (the Frechet distance of finite samples is biased upwards, more so for fewer clips).
PUBLISHED_N = 2048


@dataclass(frozen=True)
class FVDPreset:
    """A named benchmark protocol: ``n`` clips per side of ``frames`` frames taken every ``stride``-th
    frame (a window of ``frames * stride`` frames), preprocessed as ``protocol`` says."""

    n: int
    frames: int
    stride: int = 1
    protocol: str = "styleganv"

    @property
    def window(self) -> int:
        return self.frames * self.stride


#: The protocols current video-generation papers report, by StyleGAN-V's names (Skorokhodov et al. 2022,
#: https://arxiv.org/abs/2112.14683): 2048 clips per side of 16 or 128 consecutive frames, or of 128
#: frames taken every 8th (16 frames over a longer span); one random clip per real video.
PRESETS = {
    "fvd2048_16f": FVDPreset(2048, 16),
    "fvd2048_128f": FVDPreset(2048, 128),
    "fvd2048_128f_subsample8f": FVDPreset(2048, 16, stride=8),
}


def get_protocol(name: str | FVDProtocol) -> FVDProtocol:
    if isinstance(name, FVDProtocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"unknown FVD protocol {name!r}; expected one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]


# ----------------------------------------------------------------------------------- statistics
def feature_stats(feats: np.ndarray, ddof: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """feats (N, D) -> mean (D,), covariance (D, D) in float64 (``ddof=1``: N - 1, ``0``: N)."""
    feats = np.asarray(feats, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, D), got shape {feats.shape}")
    mu = feats.mean(axis=0)
    centred = feats - mu
    return mu, centred.T @ centred / (feats.shape[0] - ddof)


def _psd_sqrt(mat: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix via eigh, tiny negative eigenvalues clipped."""
    vals, vecs = np.linalg.eigh((mat + mat.T) / 2)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def frechet_distance_from_stats(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))`` in float64.

    ``tr((S1 S2)^(1/2))`` is computed as ``tr((sqrt(S1) S2 sqrt(S1))^(1/2))``: the same eigenvalues,
    but the inner matrix is symmetric PSD, so eigh is stable even when the covariances are
    rank-deficient (fewer samples than feature dimensions). Clipped at 0.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    root1 = _psd_sqrt(s1)
    inner = root1 @ s2 @ root1
    eig = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    fd = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(fd, 0.0)


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, ddof: int = 1) -> float:
    """Frechet distance between Gaussians fitted to feats_a (N, D) and feats_b (M, D)."""
    return frechet_distance_from_stats(*feature_stats(feats_a, ddof), *feature_stats(feats_b, ddof))


def polynomial_mmd(
    feats_a: np.ndarray,
    feats_b: np.ndarray,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    n_subsets: int = 1,
    subset_size: int | None = None,
    seed: int = 0,
) -> float:
    """KVD: unbiased MMD^2 with the kernel ``(x.y * gamma + coef0) ** degree``, gamma = 1 / D.

    With ``n_subsets > 1`` (or ``subset_size``), the estimate is averaged over random subsets of
    ``subset_size`` rows drawn without replacement from each side (seeded). feats: (N, D), (M, D).
    """
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (N, D) feature arrays with equal D, got {a.shape} and {b.shape}")
    gamma = 1.0 / a.shape[1] if gamma is None else gamma
    size = min(len(a), len(b)) if subset_size is None else subset_size
    if size < 2 or size > min(len(a), len(b)):
        raise ValueError(f"subset_size {size} must be in [2, {min(len(a), len(b))}]")
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        if n_subsets == 1 and subset_size is None:
            x, y = a, b
        else:
            x = a[rng.choice(len(a), size, replace=False)]
            y = b[rng.choice(len(b), size, replace=False)]
        values.append(_mmd2_unbiased(x, y, degree, gamma, coef0))
    return float(np.mean(values))


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int, gamma: float, coef0: float) -> float:
    kxx = (x @ x.T * gamma + coef0) ** degree
    kyy = (y @ y.T * gamma + coef0) ** degree
    kxy = (x @ y.T * gamma + coef0) ** degree
    n, m = len(x), len(y)
    # unbiased: drop the diagonal (self-similarity) terms of the within-set sums
    sxx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


# -------------------------------------------------------------------------------- preprocessing
def preprocess_for_i3d(videos: torch.Tensor, protocol: str | FVDProtocol = "tats") -> torch.Tensor:
    """uint8 (B, T, H, W, C) -> float (B, 3, T, 224, 224) in [-1, 1] as the protocol prescribes."""
    proto = get_protocol(protocol)
    b, t, h, w, c = videos.shape
    x = videos.permute(0, 1, 4, 2, 3).reshape(b * t, c, h, w).float() / 255.0  # (B*T, C, H, W)
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    if proto.crop:
        scale = proto.size / min(h, w)
        size = (max(proto.size, int(np.ceil(h * scale))), max(proto.size, int(np.ceil(w * scale))))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        top, left = (size[0] - proto.size) // 2, (size[1] - proto.size) // 2
        x = x[:, :, top : top + proto.size, left : left + proto.size]
    else:
        x = F.interpolate(x, size=(proto.size, proto.size), mode="bilinear", align_corners=False)
    x = x * 2 - 1
    return x.reshape(b, t, 3, proto.size, proto.size).permute(0, 2, 1, 3, 4).contiguous()  # (B, 3, T, S, S)


class I3DFeatureExtractor:
    """Streams videos through I3D in batches and collects the (N, 400) logits.

    ``update(videos)`` takes uint8 ``(B, T, H, W, C)`` (numpy or torch) or float ``(B, C, T, H, W)``
    in [-0.5, 0.5] (made uint8 by the protocol's rule); preprocessing runs on the model's device, I3D
    without TF32 (:func:`tats.precision.no_tf32`). ``compute()`` returns float64 (N, 400). ``numerics``
    says where the features are computed (device, dtype, TF32), for cache keys and summaries.
    """

    def __init__(
        self,
        model: nn.Module,
        protocol: str | FVDProtocol = "tats",
        batch_size: int = 16,
        progress: bool = True,
        desc: str = "I3D features",
    ) -> None:
        self.model = model.eval()
        self.protocol = get_protocol(protocol)
        if bool(getattr(model, "is_coinrun", False)) != self.protocol.is_coinrun:
            variant = "MUGEN (is_coinrun)" if self.protocol.is_coinrun else "standard"
            raise ValueError(f"FVD protocol {self.protocol.name!r} needs the {variant} I3D; load it with "
                             f"load_i3d(..., is_coinrun={self.protocol.is_coinrun})")
        self.batch_size = batch_size
        self.progress = progress
        self.desc = desc
        self._feats: list[np.ndarray] = []
        self._bar: tqdm | None = None

    @property
    def device(self) -> torch.device:
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def numerics(self) -> dict[str, object]:
        from tats.precision import no_tf32, numerics

        with no_tf32():
            return numerics(self.model)

    @torch.no_grad()
    def update(self, videos: np.ndarray | torch.Tensor) -> None:
        from tats.precision import no_tf32

        v = torch.from_numpy(to_uint8(videos, self.protocol.uint8))  # (B, T, H, W, C)
        if self._bar is None and self.progress:
            self._bar = tqdm(desc=self.desc, unit="video")
        for i in range(0, len(v), self.batch_size):
            chunk = v[i : i + self.batch_size].to(self.device, non_blocking=True)
            with no_tf32():  # GPU features as close to the CPU's as float32 allows
                logits = self.model(preprocess_for_i3d(chunk, self.protocol))  # (b, 400)
            self._feats.append(logits.double().cpu().numpy())
            if self._bar is not None:
                self._bar.update(len(chunk))

    def update_from(self, batches: Iterable[np.ndarray | torch.Tensor]) -> None:
        """``update`` on every item of an iterable of video batches."""
        for batch in batches:
            self.update(batch)

    def compute(self) -> np.ndarray:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if not self._feats:
            raise RuntimeError("I3DFeatureExtractor.compute() before any update()")
        return np.concatenate(self._feats, axis=0)

    def reset(self) -> None:
        self._feats = []


# ------------------------------------------------------------------------------- cached features
def save_features(path: str | os.PathLike, feats: np.ndarray, ddof: int = 1, **meta: object) -> None:
    """Write features (N, D), their mean/covariance and string metadata to an ``.npz`` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mu, sigma = feature_stats(feats, ddof)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(
        tmp,
        feats=np.asarray(feats, np.float64),
        mu=mu,
        sigma=sigma,
        **{f"meta_{k}": np.asarray(str(v)) for k, v in meta.items()},
    )
    os.replace(tmp, path)


def load_features(path: str | os.PathLike) -> tuple[np.ndarray, dict[str, str]]:
    """Features (N, D) and metadata from :func:`save_features` (no pickle: allow_pickle=False)."""
    with np.load(path, allow_pickle=False) as z:
        meta = {k[5:]: str(z[k]) for k in z.files if k.startswith("meta_")}
        return z["feats"], meta


def fvd_kvd_trials(
    real_feats: np.ndarray,
    fake_feats: np.ndarray,
    protocol: str | FVDProtocol = "tats",
    n_trials: int = 1,
    sample_size: int | None = None,
    seed: int = 0,
) -> dict:
    """FVD and KVD over ``n_trials`` random subsets of ``sample_size`` fake (and real) clips.

    With one trial and no sample_size every clip is used once. Returns ``fvd``/``kvd`` (means),
    ``fvd_std``/``kvd_std`` and the per-trial lists.
    """
    proto = get_protocol(protocol)
    rng = np.random.default_rng(seed)
    fvds, kvds = [], []
    for _ in range(n_trials):
        if n_trials == 1 and sample_size is None:
            r, f = real_feats, fake_feats
        else:
            size = sample_size or min(len(real_feats), len(fake_feats))
            if size > min(len(real_feats), len(fake_feats)):
                raise ValueError(
                    f"sample_size {size} exceeds the available clips "
                    f"({len(real_feats)} real, {len(fake_feats)} generated)"
                )
            r = real_feats[rng.choice(len(real_feats), size, replace=False)]
            f = fake_feats[rng.choice(len(fake_feats), size, replace=False)]
        fvds.append(frechet_distance(r, f, ddof=proto.cov_ddof))
        kvds.append(polynomial_mmd(r, f))
    return {
        "fvd": float(np.mean(fvds)),
        "fvd_std": float(np.std(fvds)),
        "kvd": float(np.mean(kvds)),
        "kvd_std": float(np.std(kvds)),
        "fvd_trials": fvds,
        "kvd_trials": kvds,
    }


def compute_fvd_from_arrays(
    real: np.ndarray | torch.Tensor,
    fake: np.ndarray | torch.Tensor,
    i3d: nn.Module | None = None,
    protocol: str = "tats",
    batch_size: int = 16,
    n_trials: int = 1,
    sample_size: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """FVD/KVD between two in-memory video sets, for the sampling scripts.

    real, fake: uint8 (N, T, H, W, C) or float (N, C, T, H, W) in [-0.5, 0.5]. ``i3d`` defaults to
    the fetched TF-hub weights (:func:`tats.metrics.i3d.load_i3d`). Returns :func:`fvd_kvd_trials`'s
    dict plus ``protocol``, ``n_real``, ``n_fake`` and ``features`` (device, dtype, TF32).
    """
    from tats.metrics.i3d import load_i3d

    model = i3d if i3d is not None else load_i3d()
    feats = []
    for name, videos in (("real", real), ("generated", fake)):
        ext = I3DFeatureExtractor(model, protocol, batch_size, progress, desc=f"I3D {name}")
        ext.update(videos)
        feats.append(ext.compute())
    out = fvd_kvd_trials(feats[0], feats[1], protocol, n_trials, sample_size, seed)
    out.update(protocol=get_protocol(protocol).name, n_real=len(feats[0]), n_fake=len(feats[1]),
               features=ext.numerics)
    return out


def comparability_warning(n_real: int, n_fake: int) -> str | None:
    """The warning for FVDs over fewer than :data:`PUBLISHED_N` clips on either side (None otherwise)."""
    if min(n_real, n_fake) >= PUBLISHED_N:
        return None
    return (f"FVD over {n_fake} generated vs {n_real} real clips is not comparable with published FVDs, "
            f"which use {PUBLISHED_N} vs {PUBLISHED_N} (fewer clips bias the Frechet distance upwards); "
            f"compare it only with numbers of the same counts")


def source_features(
    spec: str,
    model: nn.Module,
    protocol: str = "tats",
    n_frames: int = 16,
    max_videos: int | None = PUBLISHED_N,
    batch_size: int = 16,
    resolution: int = 128,
    sample_every_n_frames: int = 1,
    split: str = "train",
    image_folder: bool = False,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    selection: str = "random",
    seed: int = 0,
    clips_per_video: int | str | None = None,
    exclude_draw: tuple[int, int] | None = None,
    frame_stride: int = 1,
) -> tuple[np.ndarray, dict]:
    """I3D features (N, 400) of at most ``max_videos`` clips of a video source (see
    :func:`tats.data.sources.iter_video_batches`: ``selection``, ``seed``, ``clips_per_video``,
    ``exclude_draw``, ``frame_stride``), optionally cached.

    With ``cache`` (a folder), features are stored as ``.npz`` under a key of the resolved path, its
    size and modification time, the protocol, frames, resolution, frame stride, split, clip count,
    selection, seed, clips per video, the I3D weights hash (``model.weights_sha256``) and where the
    features are computed (device, dtype, TF32: :attr:`I3DFeatureExtractor.numerics`), and reused
    when every part matches. Returns the features and the metadata dict (``n_clips`` used,
    ``available``, and ``cache_file`` when cached).
    """
    import hashlib
    import json

    p = Path(spec).expanduser()
    stat = p.stat() if p.exists() else None
    ext = I3DFeatureExtractor(model, protocol, batch_size, progress, desc=f"I3D {p.name or spec}")
    meta = {
        "source": spec if spec == "demo" else str(p.resolve()),
        "protocol": get_protocol(protocol).name,
        "frames": n_frames,
        "resolution": resolution,
        "sample_every_n_frames": sample_every_n_frames,
        "split": split,
        "max_videos": max_videos,
        "selection": selection,
        "seed": seed,
        "clips_per_video": clips_per_video,
        # (keys of earlier settings unchanged)
        **({"exclude_draw": list(exclude_draw)} if exclude_draw is not None else {}),
        **({"frame_stride": frame_stride} if frame_stride != 1 else {}),
        "weights_sha256": getattr(model, "weights_sha256", "unknown"),
        "bn_eps": getattr(model, "bn_eps", None),
        "mtime": stat.st_mtime if stat else None,
        "size": stat.st_size if stat else None,
        **ext.numerics,  # CPU and GPU features differ slightly: never mixed
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()[:16]
    file = Path(cache) / f"fvd_feats_{key}.npz" if cache is not None else None
    if file is not None and file.is_file():
        feats, stored = load_features(file)
        extra = {"available": int(stored["available"])} if stored.get("available", "").isdigit() else {}
        return feats, {**meta, **extra, "n_clips": len(feats), "cache_file": str(file), "cached": True}
    info: dict = {}
    ext.update_from(
        iter_video_batches(
            spec, n_frames, max_videos, batch_size, resolution, sample_every_n_frames, split, image_folder,
            selection=selection, seed=seed, clips_per_video=clips_per_video,
            uint8=get_protocol(protocol).uint8, info=info, exclude_draw=exclude_draw,
            frame_stride=frame_stride,
        )
    )
    feats = ext.compute()
    meta.update(n_clips=len(feats), available=info.get("available"))
    if file is not None:
        save_features(file, feats, get_protocol(protocol).cov_ddof, **meta)
        meta["cache_file"] = str(file)
    return feats, {**meta, "cached": False}
