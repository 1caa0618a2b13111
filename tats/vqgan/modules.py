"""Building blocks of the 3D VQGAN: same-padded convolutions, norms, residual blocks, encoder, decoder.

Every module and attribute name here mirrors the release's state-dict keys (the release, "VQGAN"
and ``vqgan_state_dict.tsv``) so released checkpoints load without renaming: ``<name>.conv.``,
``<name>.convt.``, ``conv_blocks.<i>.down/res/up/res1/res2``, ``final_block.0``, ``conv_first``,
``conv_last``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from tats.precision import autocast_off


def _same_pad(kernel: tuple[int, ...], stride: tuple[int, ...]) -> tuple[int, ...]:
    """F.pad amounts (last dim first) for a total of ``k - s`` per dim, the front getting
    ``p//2 + p%2`` and the back ``p//2`` (the release, SamePadConv3d)."""
    pads: list[int] = []
    for k, s in zip(reversed(kernel), reversed(stride)):
        p = k - s
        pads += [p // 2 + p % 2, p // 2]
    return tuple(pads)


def _pad(x: torch.Tensor, pad: tuple[int, ...], mode: str) -> torch.Tensor:
    """``F.pad`` in the dtype of ``x`` whatever the autocast: CPU autocast runs replicate/reflect padding in
    float32, which would copy a bf16 activation to float32 only for the convolution to cast it back (twice
    the memory traffic, and a float32 copy to keep). Padding copies values, so the result is the same."""
    with autocast_off(x.device.type):
        return F.pad(x, pad, mode=mode)


def _triple(x: int | tuple[int, int, int]) -> tuple[int, int, int]:
    return (x, x, x) if isinstance(x, int) else tuple(x)  # type: ignore[return-value]


class SamePadConv3d(nn.Module):
    """Conv3d whose output is ``floor(input / stride)`` per dim: explicit ``F.pad`` (mode
    ``padding_type``) of ``k - s`` in total, then an unpadded Conv3d stored as ``.conv``.

    ``(B, C_in, T, H, W) -> (B, C_out, T/st, H/sh, W/sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        bias: bool = True,
        padding_type: str = "replicate",
    ) -> None:
        super().__init__()
        kernel_size, stride = _triple(kernel_size), _triple(stride)
        self.pad_input = _same_pad(kernel_size, stride)
        self.padding_type = padding_type
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pad_input):  # 1x1x1 convs need no padding
            x = _pad(x, self.pad_input, self.padding_type)
        return self.conv(x)


class SamePadConvTranspose3d(nn.Module):
    """Transposed Conv3d that multiplies each dim by its stride: replicate pre-padding of ``k - s``
    (split as in :class:`SamePadConv3d`), then ``ConvTranspose3d(k, stride, padding=k-1)`` as
    ``.convt`` (as in the release). ``(B, C_in, T, H, W) -> (B, C_out, T*st, H*sh, W*sw)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int] = 4,
        stride: int | tuple[int, int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        kernel_size, stride = _triple(kernel_size), _triple(stride)
        self.pad_input = _same_pad(kernel_size, stride)
        self.convt = nn.ConvTranspose3d(
            in_channels, out_channels, kernel_size, stride=stride, bias=bias,
            padding=tuple(k - 1 for k in kernel_size),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convt(_pad(x, self.pad_input, "replicate"))


def make_norm(channels: int, norm_type: str = "group", dims: int = 3) -> nn.Module:
    """``group``: GroupNorm(32, eps 1e-6, affine); ``batch``: BatchNorm{2,3}d (eps 1e-5, momentum
    0.1). The release used SyncBatchNorm for ``batch``; its keys are the same, and multi-GPU runs get
    the sync version from Lightning's ``sync_batchnorm`` conversion."""
    if norm_type == "group":
        return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)
    if norm_type == "batch":
        return (nn.BatchNorm3d if dims == 3 else nn.BatchNorm2d)(channels, eps=1e-5, momentum=0.1)
    raise ValueError(f"--norm_type must be 'group' or 'batch', got {norm_type!r}")


class ResBlock(nn.Module):
    """``x + conv2(silu(norm2(conv1(silu(norm1(x))))))`` with 3x3x3 replicate-padded convs.
    Shape preserving: ``(B, C, T, H, W) -> (B, C, T, H, W)``."""

    def __init__(self, channels: int, norm_type: str = "group") -> None:
        super().__init__()
        self.norm1 = make_norm(channels, norm_type)
        self.conv1 = SamePadConv3d(channels, channels, 3)
        self.norm2 = make_norm(channels, norm_type)
        self.conv2 = SamePadConv3d(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return x + h


@contextlib.contextmanager
def frozen_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """Inside the block, BatchNorm layers of ``module`` in training mode still normalise with the batch's
    statistics but leave their running statistics and ``num_batches_tracked`` as they were.

    Activation checkpointing reruns a block's forward in the backward pass; without this its BatchNorm
    layers would update their running statistics a second time for the same batch. The layers keep
    their buffers (so the rerun saves the same tensors for the backward pass as the first run) with a
    momentum of 0, which writes each running value back unchanged, and the batch count is restored."""
    norms = [m for m in module.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0  # running = (1 - 0) * running + 0 * batch statistic
    try:
        yield
    finally:
        with torch.no_grad():
            for m, (momentum, count) in zip(norms, saved):
                m.momentum = momentum
                m.num_batches_tracked.copy_(count)


def run_checkpointed(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` with activation checkpointing when gradients are being recorded, else plainly.

    Only the block's input is kept; its convolutions, norms and activations run again in the backward
    pass, with BatchNorm statistics updated once (:func:`frozen_batchnorm_statistics`). The result and
    the gradients equal the plain call's. Keeping the convolutions' outputs as well (selective
    checkpointing) was measured too: the same speed and 130 MiB more at the benchmark's config
    (``benchmarks/bench_train_step.py``, bf16).
    """
    if not torch.is_grad_enabled():
        return block(x)
    return checkpoint(block, x, use_reentrant=False,
                      context_fn=lambda: (contextlib.nullcontext(), frozen_batchnorm_statistics(block)))


def _log2_factors(factors: tuple[int, int, int], flag: str = "--downsample") -> list[int]:
    out = []
    for d in factors:
        n = int(math.log2(d)) if d >= 1 else -1
        if d < 1 or 2**n != d:
            raise ValueError(f"{flag}: every factor must be a power of two, got {list(factors)}")
        out.append(n)
    return out


class _DownBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int], norm_type: str,
                 padding_type: str) -> None:
        super().__init__()
        self.down = SamePadConv3d(in_ch, out_ch, 4, stride=stride, padding_type=padding_type)
        self.res = ResBlock(out_ch, norm_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.down(x))


class _UpBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: tuple[int, int, int], norm_type: str) -> None:
        super().__init__()
        self.up = SamePadConvTranspose3d(in_ch, out_ch, 4, stride=stride)
        self.res1 = ResBlock(out_ch, norm_type)
        self.res2 = ResBlock(out_ch, norm_type)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res2(self.res1(self.up(x)))


def _block_strides(factors: tuple[int, int, int]) -> list[tuple[int, int, int]]:
    """Stride per block: 2 on every dim that still needs halving (doubling), else 1.
    E.g. ``(2, 4, 4) -> [(2, 2, 2), (1, 2, 2)]``."""
    remaining = _log2_factors(factors)
    strides = []
    for _ in range(max(remaining)):
        strides.append(tuple(2 if r > 0 else 1 for r in remaining))
        remaining = [r - 1 for r in remaining]
    return strides  # type: ignore[return-value]


class Encoder(nn.Module):
    """``(B, C_img, T, H, W) -> (B, n_hiddens * 2**n_blocks, T/dt, H/dh, W/dw)``, ending in norm+SiLU.

    Block ``i`` maps ``n_hiddens*2^i -> n_hiddens*2^(i+1)``; only ``conv_first`` and the ``down``
    convs use ``padding_type`` (as in the release), the residual convs are always replicate-padded.
    """

    def __init__(self, n_hiddens: int, downsample: tuple[int, int, int], image_channels: int = 3,
                 norm_type: str = "group", padding_type: str = "replicate") -> None:
        super().__init__()
        strides = _block_strides(downsample)
        self.conv_first = SamePadConv3d(image_channels, n_hiddens, 3, padding_type=padding_type)
        self.conv_blocks = nn.ModuleList(
            _DownBlock(n_hiddens * 2**i, n_hiddens * 2 ** (i + 1), s, norm_type, padding_type)
            for i, s in enumerate(strides)
        )
        self.out_channels = n_hiddens * 2 ** len(strides)
        self.final_block = nn.Sequential(make_norm(self.out_channels, norm_type), nn.SiLU())
        self.activation_checkpointing = False  # see run_checkpointed

    def segments(self) -> list[nn.Module]:
        """The layers in order, each convolution with what follows it up to the next one's input."""
        return [self.conv_first, *(m for block in self.conv_blocks for m in (block.down, block.res)),
                self.final_block]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            for segment in self.segments():
                x = run_checkpointed(segment, x)
            return x
        h = self.conv_first(x)
        for block in self.conv_blocks:
            h = block(h)
        return self.final_block(h)


class Decoder(nn.Module):
    """``(B, n_hiddens * 2**n_blocks, t, h, w) -> (B, C_img, t*dt, h*dh, w*dw)``; no output activation.

    The norm+SiLU ``final_block`` runs first (the release's naming); block 0 keeps the encoder width,
    block ``i > 0`` outputs ``n_hiddens*2^(n_blocks-i)``.
    """

    def __init__(self, n_hiddens: int, upsample: tuple[int, int, int], image_channels: int = 3,
                 norm_type: str = "group") -> None:
        super().__init__()
        strides = _block_strides(upsample)
        n = len(strides)
        in_ch = n_hiddens * 2**n
        self.final_block = nn.Sequential(make_norm(in_ch, norm_type), nn.SiLU())
        blocks = []
        for i, s in enumerate(strides):
            out_ch = n_hiddens * 2 ** (n - i)
            blocks.append(_UpBlock(in_ch, out_ch, s, norm_type))
            in_ch = out_ch
        self.conv_blocks = nn.ModuleList(blocks)
        self.conv_last = SamePadConv3d(in_ch, image_channels, 3)
        self.activation_checkpointing = False  # see run_checkpointed

    def segments(self) -> list[nn.Module]:
        """The layers in order (as :meth:`Encoder.segments`)."""
        layers = (m for block in self.conv_blocks for m in (block.up, block.res1, block.res2))
        return [self.final_block, *layers, self.conv_last]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_checkpointing and torch.is_grad_enabled():
            for segment in self.segments():
                x = run_checkpointed(segment, x)
            return x
        h = self.final_block(x)
        for block in self.conv_blocks:
            h = block(h)
        return self.conv_last(h)
