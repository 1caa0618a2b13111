"""``16-mixed`` with one fp16 loss scaler per optimizer (the VQGAN steps two optimizers per batch).

:func:`tats.train.trainer.build_trainer` installs :class:`PerOptimizerGradScaler` when asked for more
than one scaler on CUDA; the VQGAN's LightningModule picks an optimizer's scaler before its backward
pass through :meth:`PerOptimizerGradScaler.select`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from pytorch_lightning.plugins.precision import MixedPrecision


class PerOptimizerGradScaler(MixedPrecision):
    """``16-mixed`` (fp16 autocast) with one loss scaler per optimizer.

    Lightning's ``MixedPrecision`` holds one GradScaler and updates it after every ``optimizer.step()``.
    The VQGAN steps two optimizers per batch, so with one scaler an overflow in the discriminator's
    gradients also halved the autoencoder's scale, the growth counter ran twice per batch, and under
    gradient accumulation the discriminator's last micro-batch was scaled differently from the earlier
    ones (the autoencoder's step updated the scale in between). Here optimizer ``i`` (in
    ``configure_optimizers`` order) owns ``scalers[i]``: its backward passes are scaled, and its step
    unscaled, skipped on overflow and its scale updated, by that scaler only.

    The module picks the scaler for a backward pass with :meth:`select`; a step finds its own. The
    checkpoint holds every scaler; a one-scaler state (a ``MixedPrecision`` checkpoint) seeds them all.
    """

    def __init__(self, device: str, n_optimizers: int = 2, init_scale: float = 2.0**16) -> None:
        scalers = [torch.amp.GradScaler(device, init_scale=init_scale) for _ in range(max(n_optimizers, 1))]
        super().__init__("16-mixed", device, scaler=scalers[0])
        self.scalers = scalers

    def select(self, index: int) -> None:
        """Use optimizer ``index``'s scaler for the following backward pass(es)."""
        self.scaler = self.scalers[index]

    def optimizer_step(self, optimizer: Any, model: Any, closure: Callable[[], Any], **kwargs: Any) -> Any:
        trainer = getattr(model, "_trainer", None)
        optimizers = trainer.optimizers if trainer is not None else []
        index = next((i for i, opt in enumerate(optimizers) if opt is optimizer), None)
        if index is not None:
            self.select(index)
        return super().optimizer_step(optimizer, model=model, closure=closure, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        return {"scalers": [s.state_dict() for s in self.scalers]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        states = state_dict.get("scalers", [state_dict] * len(self.scalers))
        for scaler, state in zip(self.scalers, states):
            if state:
                scaler.load_state_dict(state)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if type(self).__qualname__ not in checkpoint and MixedPrecision.__qualname__ in checkpoint:
            self.load_state_dict(checkpoint[MixedPrecision.__qualname__])  # saved with one shared scaler
