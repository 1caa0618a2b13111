"""Float32 policy for evaluation and encoding: TF32 off, and a record of where numbers were computed.

On Ampere and later GPUs PyTorch runs float32 cuDNN convolutions in TF32 by default (10-bit
mantissa inputs), so VQGAN codes and I3D features computed there differ slightly from the CPU's:
a code can flip at a near-tie, and FVD features drift. Training keeps PyTorch's defaults (speed);
every computation whose numbers are compared or stored (codebook encoding, I3D features, LPIPS in
evaluation) runs under :func:`no_tf32`, and results record :func:`numerics` (device, dtype, TF32)
so that features from different devices or precisions are never mixed silently.

PyTorch 2.9 added a second API for these flags (``fp32_precision``) and refuses to read the old
one once the two were mixed; :func:`no_tf32` uses whichever API the process is already using and
restores it afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


def _legacy_state() -> tuple[str, bool] | None:
    """``(float32 matmul precision, cuDNN allow_tf32)`` through the old API; None when the process set
    the flags through the new ``fp32_precision`` API (the old getters then raise)."""
    try:
        return torch.get_float32_matmul_precision(), bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:
        return None


def _new_api_flags() -> list[tuple[object, str]]:
    b = torch.backends
    return [(b.cuda.matmul, "fp32_precision"), (b.cudnn.conv, "fp32_precision"),
            (b.cudnn.rnn, "fp32_precision")]


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Inside the block, CUDA matmuls and cuDNN convolutions run in full float32 (no TF32); the
    previous settings are restored afterwards. A no-op in effect on CPUs (the flags only steer CUDA)."""
    saved = _legacy_state()
    if saved is not None:
        torch.set_float32_matmul_precision("highest")
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.set_float32_matmul_precision(saved[0])
            torch.backends.cudnn.allow_tf32 = saved[1]
        return
    flags = _new_api_flags()
    old = [getattr(obj, name) for obj, name in flags]
    for obj, name in flags:
        setattr(obj, name, "ieee")
    try:
        yield
    finally:
        for (obj, name), value in zip(flags, old):
            setattr(obj, name, value)


def tf32_enabled() -> dict[str, bool]:
    """``{"conv": ..., "matmul": ...}``: whether cuDNN convolutions / CUDA matmuls may use TF32 now."""
    legacy = _legacy_state()
    if legacy is not None:
        return {"conv": legacy[1], "matmul": legacy[0] != "highest"}
    b = torch.backends
    return {"conv": b.cudnn.conv.fp32_precision == "tf32", "matmul": b.cuda.matmul.fp32_precision == "tf32"}


def device_name(device: torch.device | str) -> str:
    """``"cpu"``, ``"cuda (NVIDIA H100 80GB HBM3)"``, ``"mps"``: the device type, and the GPU model for
    CUDA (different GPUs may pick different convolution algorithms)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


def numerics(model: torch.nn.Module) -> dict[str, object]:
    """Where ``model``'s outputs are computed now: ``{"device", "dtype", "tf32"}`` (device and dtype of
    its first parameter; ``tf32``: CUDA may use TF32 under the current flags). Call it under the same
    flags as the computation (e.g. inside :func:`no_tf32`); recorded in cache keys and summaries."""
    p = next(iter(model.parameters()), None)
    device = p.device if p is not None else torch.device("cpu")
    dtype = str(p.dtype).removeprefix("torch.") if p is not None else "float32"
    tf32 = device.type == "cuda" and any(tf32_enabled().values())
    return {"device": device_name(device), "dtype": dtype, "tf32": tf32}


def autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """A block that runs without autocast on ``device_type``; a no-op for device types that have no
    autocast (``meta``, which the tests use in place of a GPU)."""
    available = getattr(torch.amp, "is_autocast_available", lambda d: d in ("cpu", "cuda", "xpu", "mps"))
    if available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
