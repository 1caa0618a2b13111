"""TATS: long video generation with a time-agnostic 3D VQGAN and a time-sensitive transformer.

The public entry points are imported lazily so that ``import tats`` stays cheap::

    vqgan = tats.load_vqgan("vqgan.ckpt")            # encode (B,C,T,H,W) -> (B,t,h,w), decode back
    gpt = tats.load_transformer("gpt.ckpt")          # the transformer with its frozen VQGAN
    gpt = tats.load_transformer("ucf101-base", vqgan_ckpt="ucf101")   # published names: downloaded once
    codes = tats.sample_short(gpt, batch_size=4)     # (B,t,h,w) VQGAN codes
    codes = tats.sample_long(gpt, n_latent_frames=32, batch_size=4)
"""

from __future__ import annotations

from tats.lazy import lazy_getattr

__version__ = "0.1.0"

_LAZY = {
    "load_vqgan": "tats.vqgan.load",
    "load_transformer": "tats.gpt.load",
    "sample_short": "tats.sampling",
    "sample_long": "tats.sampling",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY) + ["__version__"]
