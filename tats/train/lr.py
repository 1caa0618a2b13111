"""The release's learning-rate rules: the flag is a base rate, scaled by the batch the run really sees."""

from __future__ import annotations

import math
from typing import Any

from pytorch_lightning.callbacks import Callback


def scale_vqgan_lr(base_lr: float, accumulate: int, n_devices: int, batch_size: int) -> float:
    """The release's VQGAN rule ``lr = accumulate * (gpus / 8) * (batch / 4) * base_lr``.

    ``n_devices`` is the number of training devices; the release used ``--gpus``, which is 0 on the
    CPU and would give lr 0, so at least one device is counted (``max(n_devices, 1)``).
    """
    return accumulate * (max(n_devices, 1) / 8.0) * (batch_size / 4.0) * base_lr


def scale_transformer_lr(base_lr: float, accumulate: int, n_devices: int, batch_size: int) -> float:
    """The release's transformer rule ``lr = accumulate * gpus * batch * base_lr`` (gpus >= 1)."""
    return accumulate * max(n_devices, 1) * batch_size * base_lr


#: ``--lr_decay`` schedules: the factor on the learning rate at training progress ``p`` in [0, 1].
LR_DECAYS = {
    "none": lambda p: 1.0,
    "linear": lambda p: max(0.0, 1.0 - p),
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * min(p, 1.0))),
}


class BudgetLRDecay(Callback):
    """``--lr_decay linear|cosine``: every optimizer's learning rate falls from its value to 0 over the run's
    budget, ``--max_steps`` when set, else ``--max_time`` (wall clock, the time of earlier runs of a resumed
    training included). A budgeted run ends at a low learning rate instead of stopping mid-stride (Li et al.
    2020, "Budgeted Training", https://arxiv.org/abs/1905.04753). ``none`` (default) keeps the release's
    constant rate."""

    def __init__(self, kind: str) -> None:
        if kind not in LR_DECAYS:
            raise ValueError(f"--lr_decay must be one of {sorted(LR_DECAYS)}, got {kind!r}")
        self.kind = kind

    @staticmethod
    def progress(trainer) -> float | None:
        """Share of the budget spent, or None without ``max_steps`` and ``max_time``."""
        if trainer.max_steps and trainer.max_steps > 0:
            return trainer.global_step / trainer.max_steps
        from pytorch_lightning.callbacks import Timer

        timer = next((cb for cb in trainer.callbacks if isinstance(cb, Timer)), None)
        remaining = None if timer is None else timer.time_remaining("train")
        if remaining is None:
            return None
        elapsed = timer.time_elapsed("train")
        return elapsed / max(elapsed + remaining, 1e-9)

    def on_train_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int) -> None:
        p = self.progress(trainer)
        if p is None:
            return
        factor = LR_DECAYS[self.kind](p)
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                group["lr"] = group.setdefault("budget_lr", group["lr"]) * factor  # saved with the optimizer
