"""The release's learning-rate rules: the flag is a base rate, scaled by the batch the run really sees."""

from __future__ import annotations


def scale_vqgan_lr(base_lr: float, accumulate: int, n_devices: int, batch_size: int) -> float:
    """The release's VQGAN rule ``lr = accumulate * (gpus / 8) * (batch / 4) * base_lr``.

    ``n_devices`` is the number of training devices; the release used ``--gpus``, which is 0 on the
    CPU and would give lr 0, so at least one device is counted (``max(n_devices, 1)``).
    """
    return accumulate * (max(n_devices, 1) / 8.0) * (batch_size / 4.0) * base_lr


def scale_transformer_lr(base_lr: float, accumulate: int, n_devices: int, batch_size: int) -> float:
    """The release's transformer rule ``lr = accumulate * gpus * batch * base_lr`` (gpus >= 1)."""
    return accumulate * max(n_devices, 1) * batch_size * base_lr
