"""Stage 1: the time-agnostic 3D VQGAN (config, modules, EMA codebook, discriminators, loading)."""

from tats.vqgan.codebook import Codebook
from tats.vqgan.config import VQGANConfig
from tats.vqgan.discriminators import NLayerDiscriminator2D, NLayerDiscriminator3D
from tats.vqgan.model import VQGAN

__all__ = ["VQGAN", "VQGANConfig", "Codebook", "NLayerDiscriminator2D", "NLayerDiscriminator3D",
           "load_vqgan"]


def __getattr__(name: str):
    if name == "load_vqgan":  # lazy: tats.vqgan.load imports the checkpoint helpers
        from tats.vqgan.load import load_vqgan

        return load_vqgan
    raise AttributeError(f"module 'tats.vqgan' has no attribute {name!r}")
