"""Evaluation metrics: LPIPS, I3D features, FVD/KVD, PSNR/SSIM, codebook perplexity.

    from tats.metrics import LPIPS, load_i3d, compute_fvd_from_arrays, psnr, ssim
    lp = LPIPS.pretrained()                          # after `python scripts/fetch_weights.py --lpips`
    res = compute_fvd_from_arrays(real_u8, fake_u8)  # (N,T,H,W,C) uint8; needs `--i3d` fetched

Submodules import lazily so `import tats.metrics` stays cheap.
"""

from __future__ import annotations

from tats.lazy import lazy_getattr

_LAZY = {
    "LPIPS": "tats.metrics.lpips",
    "InceptionI3d": "tats.metrics.i3d",
    "load_i3d": "tats.metrics.i3d",
    "I3DFeatureExtractor": "tats.metrics.fvd",
    "frechet_distance": "tats.metrics.fvd",
    "polynomial_mmd": "tats.metrics.fvd",
    "compute_fvd_from_arrays": "tats.metrics.fvd",
    "psnr": "tats.metrics.recon",
    "ssim": "tats.metrics.recon",
    "lpips_video": "tats.metrics.recon",
    "code_perplexity": "tats.metrics.codebook",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY)
