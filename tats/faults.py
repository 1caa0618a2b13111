"""The non-finite loss guard both stages' LightningModules use to skip a step whose loss is NaN/inf.

:class:`NonFiniteGuard` decides, once per step, whether a loss is unusable (NaN/inf) and the step must be
skipped. The decision is made over all ranks (any rank non-finite -> every rank skips), because under DDP
a rank that skips ``backward`` while another runs it would leave the gradient all-reduce waiting forever.
After ``max_consecutive`` skipped steps in a row the run stops with :class:`NonFiniteLossError` naming the
step: a diverged run should not burn GPU hours writing NaN checkpoints.

It sits below the models (``tats.vqgan.lightning``, ``tats.gpt.lightning``), apart from the training
set-up in :mod:`tats.train` (whose flag ``--max_nonfinite_steps`` sets its limit), so the imports run
one way.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from tats.distributed import any_across_ranks

DEFAULT_MAX_NONFINITE_STEPS = 10


def nonfinite_flag(loss: torch.Tensor | float | None) -> bool | torch.Tensor:
    """Whether ``loss`` has a NaN/inf: a 0-dim bool tensor on the loss's device for a tensor (not read
    back here), a bool otherwise (``None`` counts as finite)."""
    if loss is None:
        return False
    if isinstance(loss, torch.Tensor):
        return ~torch.isfinite(loss.detach()).all()
    return not math.isfinite(float(loss))


def _device(loss: object) -> torch.device:
    return loss.device if isinstance(loss, torch.Tensor) else torch.device("cpu")


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses: training stops."""


class NonFiniteGuard:
    """Counts non-finite losses and says whether to skip the step.

    Args:
        max_consecutive: this many skipped steps in a row raise :class:`NonFiniteLossError`
            (0: the first non-finite loss raises).
        any_fn: ``any_fn(flag: bool | bool tensor, device) -> bool``, True when the flag is set on any
            rank; the default all-reduces over torch.distributed when it is running (resolved at call
            time) and reads the flag otherwise.

    Attributes: ``total`` (skipped steps so far), ``consecutive`` (skipped steps in a row),
    ``last_step`` (step of the last skip, or None).
    """

    def __init__(
        self,
        max_consecutive: int = DEFAULT_MAX_NONFINITE_STEPS,
        any_fn: Callable[[bool, torch.device], bool] = any_across_ranks,
    ) -> None:
        if max_consecutive < 0:
            raise ValueError(f"--max_nonfinite_steps must be >= 0, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.any_fn = any_fn
        self.total = 0
        self.consecutive = 0
        self.last_step: int | None = None

    def check(self, loss: torch.Tensor | float | None, step: int, what: str = "loss") -> bool:
        """True when this step must be skipped (``loss`` non-finite here or on another rank).

        ``loss``: a tensor (any shape; every element must be finite) or a float; ``None`` counts as
        finite. A tensor is tested on its device and read back once (one sync per step, with the
        cross-rank decision folded in). ``step``: the global step, used in the error message. Raises
        :class:`NonFiniteLossError` when more than ``max_consecutive`` steps in a row were non-finite.
        """
        return self.record(self.any_fn(nonfinite_flag(loss), _device(loss)), step, what)

    def record(self, bad: bool, step: int, what: str = "loss") -> bool:
        """Count a decision already made over all ranks (``bad``: the loss was non-finite); returns
        ``bad``. For callers that read the flag themselves (the VQGAN's fp16 overflow test)."""
        if not bad:
            self.consecutive = 0
            return False
        self.total += 1
        self.consecutive += 1
        self.last_step = step
        if self.consecutive > self.max_consecutive:
            raise NonFiniteLossError(
                f"non-finite {what} at step {step}: {self.consecutive} steps in a row had a NaN/inf loss "
                f"({self.total} in total), more than --max_nonfinite_steps {self.max_consecutive}; the run "
                "diverged (lower --lr, set --gradient_clip_val, or check the data), or raise "
                "--max_nonfinite_steps"
            )
        return True

    def state_dict(self) -> dict[str, int]:
        return {"total": self.total, "consecutive": self.consecutive}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.total = int(state.get("total", 0))
        self.consecutive = int(state.get("consecutive", 0))
