"""Runs ``train_vqgan.main`` / ``train_transformer.main`` with a callback dumping this rank's state.

Used by tests/test_distributed.py as a real script, so Lightning's subprocess launcher re-runs it for
rank 1 exactly as it re-runs the training scripts.
``python tests/_ddp_driver.py vqgan ARGS [::: transformer ARGS]`` runs them in turn in the same
processes (the second fit reuses the first one's processes and process group); the dump folder is
``$TATS_TEST_DUMP`` (one ``<name>_rank<r>.pt`` per run and rank). ``transformer_nan`` runs the
transformer with a NaN loss on rank 0 at its second training micro-batch (rank 1's stays finite).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


class DumpState(Callback):
    """At the end of training write ``{"state": module.state_dict(), "world": ..., "rank": ...,
    "samplers": [...], "broadcast_buffers": ...}`` for this rank (the last: the DDP wrapper's setting);
    records the epochs its DistributedSampler was set to."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.epochs: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        if not dist.is_initialized() or dist.get_rank() == 0:
            state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
            out = Path(os.environ["TATS_TEST_DUMP"])
            out.mkdir(parents=True, exist_ok=True)
            torch.save(state, out / f"{self.name}_start.pt")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        sampler = getattr(trainer.train_dataloader, "sampler", None)
        self.epochs.append(int(getattr(sampler, "epoch", -1)))

    def on_train_end(self, trainer, pl_module) -> None:
        world = dist.get_world_size() if dist.is_initialized() else 1
        rank = dist.get_rank() if dist.is_initialized() else 0
        share = getattr(pl_module, "_share_norm_statistics", None)
        if share is not None:  # the VQGAN's per-step copy of rank 0's BatchNorm statistics, once more
            share()
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        out = Path(os.environ["TATS_TEST_DUMP"])
        out.mkdir(parents=True, exist_ok=True)
        sampler = type(trainer.train_dataloader.sampler).__name__
        torch.save({"state": state, "world": world, "rank": rank, "global_step": trainer.global_step,
                    "sampler_epochs": self.epochs, "sampler": sampler,
                    "broadcast_buffers": getattr(trainer.strategy.model, "broadcast_buffers", None)},
                   out / f"{self.name}_rank{rank}.pt")


def inject_nan_loss(rank0_call: int) -> None:
    """Make the ``rank0_call``-th training loss (0-based) on rank 0 NaN."""
    from tats.gpt.lightning import TransformerModule

    original, calls = TransformerModule.loss, []

    def loss(self, batch):
        value, n = original(self, batch)
        if self.training:
            calls.append(1)
            if dist.get_rank() == 0 and len(calls) == rank0_call + 1:
                value = value * float("nan")
        return value, n

    TransformerModule.loss = loss


def main() -> None:
    import tats.train.transformer
    import tats.train.vqgan

    original = tats.train.trainer.build_trainer
    runs: list[list[str]] = [[]]
    for arg in sys.argv[1:]:
        if arg == ":::":
            runs.append([])
        else:
            runs[-1].append(arg)
    for which, *argv in runs:
        def build_trainer(*args, callbacks=(), _name=which, **kw):
            return original(*args, callbacks=[*callbacks, DumpState(_name)], **kw)

        if which == "vqgan":
            import train_vqgan

            tats.train.vqgan.build_trainer = build_trainer  # imported by name there
            train_vqgan.main(argv)
        else:
            import train_transformer

            tats.train.transformer.build_trainer = build_trainer  # imported by name there
            if which == "transformer_nan":
                inject_nan_loss(rank0_call=1)
            train_transformer.main(argv)


if __name__ == "__main__":
    main()
