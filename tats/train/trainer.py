"""The Lightning 2 ``Trainer`` of both stages, built from the flags of :mod:`tats.train.flags`: atomic
weights-only checkpoint I/O, periodic and best checkpoints, progress bar, TensorBoard logger.
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger

from tats.io.checkpoint import load_checkpoint, save_checkpoint
from tats.train.flags import trainer_kwargs
from tats.train.lr import BudgetLRDecay
from tats.train.resume import CHECKPOINT_DIR
from tats.train.scalers import PerOptimizerGradScaler


def ddp_strategy(name: Any, **ddp_kwargs: Any) -> Any:
    """Lightning's strategy for a DDP strategy ``name`` (``ddp``, ``ddp_spawn``, ...,
    ``ddp_find_unused_parameters_true``) with extra ``DistributedDataParallel`` arguments; any other
    name (``auto``, ``fsdp``, ...) or an already built strategy is returned unchanged."""
    from pytorch_lightning.strategies import DDPStrategy, StrategyRegistry

    if not ddp_kwargs or not isinstance(name, str) or name not in StrategyRegistry:
        return name
    entry = StrategyRegistry[name]
    if entry["strategy"] is not DDPStrategy:
        return name
    return DDPStrategy(**entry["init_params"], **ddp_kwargs)


def autocast_device(accelerator: Any) -> str:
    """The ``torch.autocast`` device type of a Trainer ``accelerator`` flag (as Lightning resolves it)."""
    if accelerator in ("cpu", "mps"):
        return accelerator
    if accelerator in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda"


def progress_bar_kwargs(refresh_rate: int | None) -> tuple[dict[str, Any], list]:
    """``(trainer kwargs, callbacks)`` for the release's ``--progress_bar_refresh_rate``."""
    if refresh_rate is None:
        return {}, []
    if refresh_rate <= 0:
        return {"enable_progress_bar": False}, []
    return {}, [TQDMProgressBar(refresh_rate=refresh_rate)]


class StepCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` every N steps that also refreshes ``last.ckpt`` when training ends between two
    periodic saves (e.g. at ``--max_steps``), so rerunning the command resumes exactly where it stopped."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        if (self.save_last and not trainer.fast_dev_run and not trainer.sanity_checking
                and trainer.global_step > self._last_global_step_saved):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O that never leaves a half-written file and never unpickles code.

    ``save_checkpoint`` writes a temporary file and renames it over the target
    (:func:`tats.io.checkpoint.save_checkpoint`); ``load_checkpoint`` uses the weights-only allow-list
    loader (:func:`tats.io.checkpoint.load_checkpoint`), so resuming from a tampered file fails cleanly.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint does not take storage_options")
        save_checkpoint(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


def build_trainer(
    args: argparse.Namespace,
    monitor: str,
    ckpt_every_n_steps: int,
    mode: str = "min",
    callbacks: Iterable[Any] = (),
    manual_optimization: bool = False,
    find_unused_parameters: bool = False,
    broadcast_buffers: bool = True,
    loss_scalers: int = 1,
    **kw: Any,
):
    """Build a Lightning 2 ``Trainer`` from the flags of :func:`add_trainer_args`.

    ``monitor``: validation metric for the best checkpoint (``mode`` min/max). ``ckpt_every_n_steps``:
    periodic checkpoint interval when ``--ckpt_every_n_steps`` is not given. ``manual_optimization``:
    the module steps its optimizers itself, so Lightning 2 must not get ``gradient_clip_val`` nor
    ``accumulate_grad_batches`` (it refuses both); the module reads them from its hyper-parameters.
    ``find_unused_parameters``: DDP must tolerate parameters without gradients in some steps (the VQGAN's
    discriminators before ``discriminator_iter_start``). ``broadcast_buffers=False``: DDP does not copy
    every buffer from rank 0 before each forward (for models whose buffers never change in training,
    e.g. the transformer's attention masks and frozen VQGAN). ``loss_scalers``: under ``16-mixed``, one
    fp16 loss scaler per optimizer (:class:`PerOptimizerGradScaler`) when > 1. ``kw`` overrides any
    ``Trainer`` argument.
    """
    hw = trainer_kwargs(args, find_unused_parameters=find_unused_parameters)
    root = Path(args.default_root_dir)
    ckpt_dir = root / CHECKPOINT_DIR
    every = int(getattr(args, "ckpt_every_n_steps", None) or ckpt_every_n_steps)
    keep = int(getattr(args, "ckpt_keep", -1))
    # No version counter: file names carry the step, and last.ckpt must stay the newest even when a
    # run folder was copied or moved (Lightning would otherwise write last-v1.ckpt beside a stale one).
    periodic = StepCheckpoint(  # "step" is always a monitor candidate: keeps the newest `keep` files
        dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False, every_n_train_steps=every,
        save_last=True, save_top_k=keep, monitor="step" if keep > 0 else None, mode="max",
        enable_version_counter=False,
    )
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best-step{step:08d}", auto_insert_metric_name=False,
                           monitor=monitor, mode=mode, save_top_k=1, enable_version_counter=False)
    bar_kw, bar_cb = progress_bar_kwargs(getattr(args, "progress_bar_refresh_rate", None))
    decay = getattr(args, "lr_decay", "none")
    decay_cb = [] if decay == "none" else [BudgetLRDecay(decay)]
    plugins = []
    if not str(hw["strategy"]).startswith(("fsdp", "deepspeed")):  # those write sharded checkpoints
        plugins.append(AtomicCheckpointIO())
    if not broadcast_buffers:
        hw["strategy"] = ddp_strategy(hw["strategy"], broadcast_buffers=False)
    if hw["precision"] == "16-mixed" and loss_scalers > 1 and autocast_device(hw["accelerator"]) == "cuda":
        # (elsewhere Lightning runs 16-mixed as bf16-mixed, which needs no scaler)
        plugins.append(PerOptimizerGradScaler("cuda", loss_scalers))
        del hw["precision"]  # the plugin carries it (Lightning refuses both)
    opt_kw: dict[str, Any] = {}
    if not manual_optimization:
        opt_kw = dict(accumulate_grad_batches=args.accumulate_grad_batches,
                      gradient_clip_val=args.gradient_clip_val,
                      gradient_clip_algorithm=args.gradient_clip_algorithm)
    optional_names = ("max_epochs", "max_time", "min_steps", "min_epochs", "limit_val_batches",
                      "limit_train_batches", "num_sanity_val_steps", "benchmark")
    optional = {k: getattr(args, k, None) for k in optional_names}
    trainer_kw: dict[str, Any] = dict(
        **hw, **bar_kw, **opt_kw, **{k: v for k, v in optional.items() if v is not None},
        default_root_dir=str(root),
        max_steps=args.max_steps,
        val_check_interval=args.val_check_interval,
        check_val_every_n_epoch=args.check_val_every_n_epoch,
        log_every_n_steps=args.log_every_n_steps,
        deterministic=bool(args.deterministic) or None,
        fast_dev_run=getattr(args, "fast_dev_run", False),
        overfit_batches=getattr(args, "overfit_batches", 0.0),
        detect_anomaly=bool(getattr(args, "detect_anomaly", False)),
        logger=TensorBoardLogger(save_dir=str(root), name="lightning_logs"),
        callbacks=[periodic, best, *bar_cb, *decay_cb, *callbacks],
        plugins=plugins or None,
    )
    trainer_kw.update(kw)
    if manual_optimization:  # Lightning 2.6 warns that manual steps save post-step weights: that is intended
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # reruns write into the same folder on purpose (that is how they resume)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    # the GPT checks class labels in its on_before_batch_transfer (on the host, before they move)
    warnings.filterwarnings("ignore", message=r"You have overridden `on_before_batch_transfer`")
    return pl.Trainer(**trainer_kw)


def world_size(trainer) -> int:
    """Devices taking part in training (devices per node x nodes); 1 on the CPU."""
    return max(int(trainer.num_devices), 1) * max(int(trainer.num_nodes), 1)


def devices_per_node(trainer) -> int:
    """Devices per node (at least 1): the release's ``--gpus``, which its lr rules multiply by (not the
    world size: the release's multi-node runs kept the per-node rule)."""
    return max(int(trainer.num_devices), 1)
