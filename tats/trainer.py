"""Lightning 2 trainer set-up shared by ``train_vqgan.py`` and ``train_transformer.py``.

The release was trained with pytorch-lightning 1.5 and its READMEs use that era's flags
(``--gpus 8 --sync_batchnorm --progress_bar_refresh_rate 500 ...``). :func:`add_trainer_args`
accepts them unchanged and :func:`trainer_kwargs` maps them onto Lightning 2's ``Trainer`` arguments:

=====================================  ============================================================
release flag                           Lightning 2
=====================================  ============================================================
``--gpus 0`` / absent                  ``accelerator="cpu"`` (absent: ``"auto"``), ``devices=1``
``--gpus N`` (N > 0), ``--gpus 0,1``   ``accelerator="gpu"``, ``devices=N`` (or the id list)
``--gpus -1``                          ``accelerator="gpu"``, ``devices=-1`` (all)
``--gpus N --accelerator cpu``         an error (it would otherwise train on GPUs)
devices * num_nodes > 1                ``strategy="ddp"``; when the module has unused parameters every
                                       DDP flavour becomes ``<name>_find_unused_parameters_true``
                                       (``--devices auto`` / ``--gpus -1`` count the visible GPUs)
``--terminate_on_nan``                 ``--max_nonfinite_steps 0`` (stop at the first NaN/inf loss)
``--precision 16`` / ``bf16`` / ``32``  ``"16-mixed"`` / ``"bf16-mixed"`` / ``"32-true"``
``--progress_bar_refresh_rate 0``      ``enable_progress_bar=False``
``--progress_bar_refresh_rate N``      ``TQDMProgressBar(refresh_rate=N)``
``--val_check_interval 0.5`` / ``2``   fraction of an epoch (float) / every 2 training batches (int)
=====================================  ============================================================

Checkpoints are written atomically (:class:`AtomicCheckpointIO`) under ``<default_root_dir>/checkpoints``:
``step########.ckpt`` every ``--ckpt_every_n_steps`` optimizer steps, ``last.ckpt``, and
``best-step########.ckpt`` for the monitored validation metric. Rerunning the same command resumes from
the newest of them (:func:`resolve_resume`), so an interrupted job is restarted by running it again.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.plugins.precision import MixedPrecision
from pytorch_lightning.utilities import rank_zero_warn

from tats.io.checkpoint import SAFE_GLOBALS, CheckpointError, load_checkpoint, save_checkpoint

CHECKPOINT_DIR = "checkpoints"
#: Validation batches per validation unless --limit_val_batches says otherwise: video folders serve every
#: test window (the release): hundreds of thousands of clips for UCF-101, far more than a validation needs.
DEFAULT_LIMIT_VAL_BATCHES = 100
DDP_STRATEGIES = ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")
CONFIG_SECTIONS = ("vqgan", "transformer")

# Lightning-1.5 Trainer flags that have no Lightning 2 equivalent (or no effect here). The release's
# Lightning 1.5 `Trainer.add_argparse_args` accepted all of them, so old command lines may carry them;
# they are accepted and ignored with a warning instead of failing the run.
LEGACY_IGNORED_FLAGS = (
    "weights_summary", "flush_logs_every_n_steps", "terminate_on_nan", "auto_select_gpus",
    "replace_sampler_ddp", "prepare_data_per_node", "amp_backend", "amp_level", "move_metrics_to_cpu",
    "checkpoint_callback", "stochastic_weight_avg", "track_grad_norm", "auto_lr_find",
    "auto_scale_batch_size", "tpu_cores", "ipus", "process_position", "log_gpu_memory",
    "num_processes", "truncated_bptt_steps", "weights_save_path", "multiple_trainloader_mode",
    "reload_dataloaders_every_epoch", "distributed_backend", "plugins", "logger", "enable_model_summary",
)


# ----------------------------------------------------------------------------------------------- flags
def _int_or_float(value: str) -> int | float:
    """``"2"`` -> 2 (batches), ``"0.5"`` / ``"1.0"`` -> float (fraction), as Lightning interprets them."""
    try:
        return int(value)
    except ValueError:
        return float(value)


def _max_time(value: str) -> dict[str, float]:
    """``--max_time``: seconds (``"900"``) or Lightning's ``DD:HH:MM:SS`` -> ``{"seconds": s}``."""
    parts = value.split(":")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if not numbers or len(numbers) > 4 or any(n < 0 for n in numbers):
        raise argparse.ArgumentTypeError(f"expected seconds or DD:HH:MM:SS, got {value!r}")
    seconds = 0.0
    for n, unit in zip(reversed(numbers), (1, 60, 3600, 86400)):
        seconds += n * unit
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive time, got {value!r}")
    return {"seconds": seconds}


def _str_to_bool(value: str) -> bool:
    if value.lower() in ("1", "true", "yes", "y", "on"):
        return True
    if value.lower() in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean, got {value!r}")


def add_trainer_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the trainer flags (Lightning-1.5 names of the release READMEs plus Lightning 2's own)."""
    g = parser.add_argument_group("trainer")
    g.add_argument("--gpus", type=str, default=None,
                   help="release flag: number of GPUs (0 = CPU, -1 = all) or a list of ids '0,1'")
    g.add_argument("--accelerator", type=str, default=None, help="cpu | gpu | mps | auto (Lightning 2)")
    g.add_argument("--devices", type=str, default=None, help="device count, id list '0,1' or 'auto'")
    g.add_argument("--num_nodes", type=int, default=1)
    g.add_argument("--strategy", type=str, default=None,
                   help="auto | ddp | ddp_find_unused_parameters_true | fsdp | deepspeed_stage_2 | ...")
    g.add_argument("--sync_batchnorm", action="store_true", help="SyncBatchNorm across devices (DDP)")
    g.add_argument("--precision", type=str, default="32",
                   help="32 | 16 (= 16-mixed) | bf16 (= bf16-mixed) | 16-mixed | bf16-mixed | 64")
    g.add_argument("--progress_bar_refresh_rate", type=int, default=None,
                   help="0 disables the progress bar; N refreshes it every N batches")
    g.add_argument("--accumulate_grad_batches", type=int, default=1)
    g.add_argument("--gradient_clip_val", type=float, default=None)
    g.add_argument("--gradient_clip_algorithm", type=str, default="norm", choices=("norm", "value"))
    g.add_argument("--max_steps", type=int, default=-1, help="optimizer steps (-1: no limit)")
    g.add_argument("--max_epochs", type=int, default=None)
    g.add_argument("--max_time", type=_max_time, default=None,
                   help="stop training after this long: seconds or DD:HH:MM:SS (the time already trained "
                        "is stored in checkpoints, so a resumed run trains only for the rest)")
    g.add_argument("--min_steps", type=int, default=None)
    g.add_argument("--min_epochs", type=int, default=None)
    g.add_argument("--default_root_dir", type=str, default=".",
                   help="checkpoints go to <dir>/checkpoints, TensorBoard logs to <dir>/lightning_logs")
    g.add_argument("--val_check_interval", type=_int_or_float, default=1.0,
                   help="float: fraction of an epoch; int: every N training batches")
    g.add_argument("--check_val_every_n_epoch", type=int, default=1)
    g.add_argument("--limit_val_batches", type=_int_or_float, default=DEFAULT_LIMIT_VAL_BATCHES,
                   help="int: batches per validation, float: share of the validation set (1.0: all of "
                        "it, as the release). Validation now covers every test window, so the default keeps "
                        "it to %(default)s batches of a fixed random order (tats.data.datamodule)")
    g.add_argument("--limit_train_batches", type=_int_or_float, default=None)
    g.add_argument("--num_sanity_val_steps", type=int, default=None)
    g.add_argument("--log_every_n_steps", type=int, default=50)
    g.add_argument("--deterministic", action="store_true")
    g.add_argument("--benchmark", type=_str_to_bool, nargs="?", const=True, default=None)
    g.add_argument("--fast_dev_run", type=_int_or_float, nargs="?", const=True, default=False)
    g.add_argument("--overfit_batches", type=_int_or_float, default=0.0)
    g.add_argument("--detect_anomaly", action="store_true")
    g.add_argument("--seed", type=int, default=1234, help="global seed (the release seeds 1234)")
    g.add_argument("--ckpt_every_n_steps", type=int, default=None,
                   help="periodic checkpoint interval in optimizer steps (VQGAN 3000, transformer 10000)")
    g.add_argument("--ckpt_keep", type=int, default=-1,
                   help="how many periodic checkpoints to keep (-1: all, as the release)")
    g.add_argument("--resume_from_checkpoint", type=str, default=None,
                   help="resume from this file instead of the newest one in --default_root_dir")
    g.add_argument("--no_resume", action="store_true",
                   help="start from scratch even if --default_root_dir holds checkpoints")
    legacy = parser.add_argument_group("ignored Lightning-1.5 flags (accepted for old command lines)")
    for name in LEGACY_IGNORED_FLAGS:
        legacy.add_argument(f"--{name}", nargs="?", const=True, default=None, help=argparse.SUPPRESS)
    return parser


def parse_args_with_config(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None, section: str | None = None
) -> argparse.Namespace:
    """Parse ``argv`` with optional ``--config recipe.yaml`` supplying defaults; the command line wins.

    The YAML holds flag names (``n_codes: 256``, ``downsample: [4, 4, 4]``, ``no_random_restart: true``).
    Top-level keys apply to every script; keys under a ``vqgan:`` / ``transformer:`` mapping only to the
    script whose ``section`` it names (the other sections are skipped). A key that is no flag of this
    parser is an error naming the file and the key.
    """
    if not any(a.dest == "config" for a in parser._actions):
        parser.add_argument("--config", type=str, default=None,
                            help="YAML recipe (configs/*.yaml) whose values become defaults")
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=str, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**load_config_defaults(parser, known.config, section))
    args = parser.parse_args(argv)
    nan_flag = getattr(args, "terminate_on_nan", None)
    if nan_flag is not None and hasattr(args, "max_nonfinite_steps"):
        # Lightning 1.5's --terminate_on_nan stopped at the first NaN loss: the guard's limit 0 does that
        if nan_flag is True or _str_to_bool(str(nan_flag)):
            args.max_nonfinite_steps = 0
        args.terminate_on_nan = None
    ignored = [n for n in LEGACY_IGNORED_FLAGS if getattr(args, n, None) is not None]
    if ignored:
        warnings.warn(f"ignoring Lightning-1.5 flags with no effect in Lightning 2: {ignored}", stacklevel=2)
    return args


def load_config_defaults(
    parser: argparse.ArgumentParser, path: str | os.PathLike, section: str | None = None
) -> dict[str, Any]:
    """Read a YAML recipe into ``{dest: value}`` for ``parser`` (see :func:`parse_args_with_config`)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"--config: file not found: {path}")
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"--config {path}: expected a mapping of flag names to values")
    dests = {a.dest: a for a in parser._actions if a.dest not in ("help", "config")}
    values: dict[str, Any] = {}
    scopes = [("", {k: v for k, v in data.items() if k not in CONFIG_SECTIONS})]
    if section is not None and isinstance(data.get(section), dict):
        scopes.append((f"{section}.", data[section]))
    for prefix, mapping in scopes:
        for key, value in mapping.items():
            dest = str(key).replace("-", "_")
            if dest not in dests:
                raise SystemExit(
                    f"--config {path}: unknown key '{prefix}{key}' (no flag --{dest} in this script)"
                )
            action = dests[dest]
            if isinstance(value, str) and action.type is not None and callable(action.type):
                value = action.type(value)  # argparse only converts string defaults given on the CLI
            values[dest] = value
    return values


# ---------------------------------------------------------------------------------- flag -> Trainer
def _parse_device_spec(value: Any) -> int | list[int] | str | None:
    """``"8"`` -> 8, ``"0,1"`` -> [0, 1], ``"auto"`` -> "auto", None -> None."""
    if value is None or isinstance(value, (int, list)):
        return value
    value = str(value).strip()
    if value == "auto":
        return value
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return int(value)


def _precision(value: Any) -> str:
    value = str(value)
    mapping = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}
    value = mapping.get(value, value)
    allowed = ("16-mixed", "bf16-mixed", "32-true", "64-true", "16-true", "bf16-true", "transformer-engine")
    if value not in allowed:
        raise SystemExit(f"--precision: expected 16, 32, 64, bf16 or one of {allowed}, got {value!r}")
    return value


def device_count(devices: int | list[int] | str | None) -> int | None:
    """Number of devices a ``devices`` value asks for; None when only Lightning can tell (auto, -1)."""
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, int) and devices >= 0:
        return devices
    return None


def trainer_kwargs(args: argparse.Namespace, find_unused_parameters: bool = False) -> dict[str, Any]:
    """Hardware/precision part of the ``Trainer`` arguments from the flags (pure: no Trainer built)."""
    gpus = _parse_device_spec(getattr(args, "gpus", None))
    devices = _parse_device_spec(getattr(args, "devices", None))
    accelerator = getattr(args, "accelerator", None)
    if gpus is not None:
        if devices is not None:
            raise SystemExit("give either --gpus (release flag) or --devices (Lightning 2), not both")
        if accelerator not in (None, "gpu", "cuda", "cpu", "auto"):
            raise SystemExit(f"--gpus {args.gpus} conflicts with --accelerator {accelerator}")
        if gpus == 0 or gpus == []:
            accelerator, devices = "cpu", 1
        elif accelerator == "cpu":  # would silently train on GPUs otherwise
            raise SystemExit(f"--gpus {args.gpus} asks for GPUs but --accelerator cpu for the CPU; drop one "
                             "(CPU: --gpus 0 or --accelerator cpu --devices N)")
        else:
            accelerator, devices = accelerator if accelerator in ("gpu", "cuda") else "gpu", gpus
    else:
        accelerator = accelerator or "auto"
        devices = 1 if devices is None else devices  # one device unless asked: the lr formula needs it
    num_nodes = int(getattr(args, "num_nodes", 1) or 1)
    precision = _precision(getattr(args, "precision", "32"))
    if accelerator == "cpu" and precision == "16-mixed":
        raise SystemExit("--precision 16 (fp16 mixed) is unsupported on the CPU; use --precision bf16-mixed")
    strategy = getattr(args, "strategy", None) or "auto"
    n = device_count(devices)
    if n is None:  # "auto" / -1: Lightning takes every visible GPU (one process on the CPU)
        if accelerator == "cpu":
            n = 1
        elif torch.cuda.is_available():
            n = torch.cuda.device_count()
        else:  # GPUs asked for but none visible here (e.g. a login node): assume several, DDP
            n = 1 if accelerator == "auto" else 2
    multi = num_nodes > 1 or n > 1
    if strategy == "auto" and multi:
        strategy = "ddp"
    if find_unused_parameters and strategy in DDP_STRATEGIES:
        # e.g. the VQGAN's discriminators get no gradient before discriminator_iter_start: plain DDP would
        # fail waiting for their all-reduce (ddp, ddp_spawn, ddp_fork, ddp_notebook alike)
        strategy = f"{strategy}_find_unused_parameters_true"
    sync_bn = bool(getattr(args, "sync_batchnorm", False))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if sync_bn and on_cpu:  # PyTorch's SyncBatchNorm runs on GPUs only; the release's flag must not crash
        rank_zero_warn("--sync_batchnorm ignored on CPU devices (SyncBatchNorm needs GPUs): each CPU process "
                       "keeps its own BatchNorm statistics", category=UserWarning)
        sync_bn = False
    return dict(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy=strategy,
                precision=precision, sync_batchnorm=sync_bn)


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


def _autocast_device(accelerator: Any) -> str:
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
    plugins = []
    if not str(hw["strategy"]).startswith(("fsdp", "deepspeed")):  # those write sharded checkpoints
        plugins.append(AtomicCheckpointIO())
    if not broadcast_buffers:
        hw["strategy"] = ddp_strategy(hw["strategy"], broadcast_buffers=False)
    if hw["precision"] == "16-mixed" and loss_scalers > 1 and _autocast_device(hw["accelerator"]) == "cuda":
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
        callbacks=[periodic, best, *bar_cb, *callbacks],
        plugins=plugins or None,
    )
    trainer_kw.update(kw)
    if manual_optimization:  # Lightning 2.6 warns that manual steps save post-step weights: that is intended
        warnings.filterwarnings("ignore", message="Using ModelCheckpoint with manual optimization")
    # reruns write into the same folder on purpose (that is how they resume)
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    return pl.Trainer(**trainer_kw)


def world_size(trainer) -> int:
    """Devices taking part in training (devices per node x nodes); 1 on the CPU."""
    return max(int(trainer.num_devices), 1) * max(int(trainer.num_nodes), 1)


def devices_per_node(trainer) -> int:
    """Devices per node (at least 1): the release's ``--gpus``, which its lr rules multiply by (not the
    world size: the release's multi-node runs kept the per-node rule)."""
    return max(int(trainer.num_devices), 1)


# ------------------------------------------------------------------------------------ learning rate
def scale_vqgan_lr(base_lr: float, accumulate: int, n_devices: int, batch_size: int) -> float:
    """The release's VQGAN rule ``lr = accumulate * (gpus / 8) * (batch / 4) * base_lr``.

    ``n_devices`` is the number of training devices; the release used ``--gpus``, which is 0 on the
    CPU and would give lr 0, so at least one device is counted (``max(n_devices, 1)``).
    """
    return accumulate * (max(n_devices, 1) / 8.0) * (batch_size / 4.0) * base_lr


def scale_transformer_lr(base_lr: float, accumulate: int, n_devices: int, batch_size: int) -> float:
    """The release's transformer rule ``lr = accumulate * gpus * batch * base_lr`` (gpus >= 1)."""
    return accumulate * max(n_devices, 1) * batch_size * base_lr


def rank_zero_print(*msg: Any) -> None:
    """Print on global rank 0 only (rank from the launcher's environment, before the Trainer exists)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", "0")))) == 0:
        print(*msg, file=sys.stdout, flush=True)


# ------------------------------------------------------------------------------------------- resume
def _peek_global_step(path: Path) -> int | None:
    """``global_step`` stored in a checkpoint, (memory-mapped, weights only); None if unreadable."""
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not a resume candidate
        return None
    step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
    return int(step) if step is not None else None


def find_resume_checkpoint(default_root_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a rerun should resume from: highest stored ``global_step`` in
    ``<default_root_dir>/checkpoints``, ties broken in favour of ``last*.ckpt`` and then the newest mtime.
    Unreadable files (e.g. a crash while writing with a non-atomic writer) are skipped with a warning."""
    ckpt_dir = Path(default_root_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return None
    ranked = []
    for path in ckpt_dir.glob("*.ckpt"):
        if not path.is_file():
            continue
        step = _peek_global_step(path)
        if step is None:
            warnings.warn(f"skipping unreadable checkpoint {path} (looking for one to resume)", stacklevel=2)
            continue
        ranked.append((step, path.name.startswith("last"), path.stat().st_mtime, path))
    if not ranked:
        return None
    return max(ranked, key=lambda r: r[:3])[3]


def remove_torn_temp_files(default_root_dir: str | os.PathLike, log: Callable[..., None] = rank_zero_print
                           ) -> list[Path]:
    """Delete the ``.<name>.ckpt.*.tmp`` files of :func:`tats.io.checkpoint.save_checkpoint` that a kill
    during a checkpoint save left in ``<default_root_dir>/checkpoints``; returns the deleted paths.
    Called when a run starts, before any save can be in flight (the target files were never touched)."""
    ckpt_dir = Path(default_root_dir) / CHECKPOINT_DIR
    removed = []
    for tmp in sorted(ckpt_dir.glob(".*.ckpt.*.tmp")) if ckpt_dir.is_dir() else []:
        try:
            tmp.unlink()
        except FileNotFoundError:  # another rank of the same job removed it first
            continue
        removed.append(tmp)
    if removed:
        log(f"removed {len(removed)} partial checkpoint file(s) left by an interrupted save in {ckpt_dir}")
    return removed


def resolve_resume(args: argparse.Namespace, log: Callable[..., None] = rank_zero_print) -> str | None:
    """``ckpt_path`` for ``Trainer.fit``: ``--resume_from_checkpoint``, else (unless ``--no_resume``) the
    newest checkpoint of ``--default_root_dir``, else None (fresh run). Torn temporary files of an
    interrupted save are removed first (:func:`remove_torn_temp_files`)."""
    remove_torn_temp_files(args.default_root_dir, log)
    explicit = getattr(args, "resume_from_checkpoint", None)
    if explicit:
        if not Path(explicit).is_file():
            raise CheckpointError(f"--resume_from_checkpoint: file not found: {explicit}")
        log(f"resuming from {explicit} (--resume_from_checkpoint)")
        return str(explicit)
    if getattr(args, "no_resume", False):
        return None
    found = find_resume_checkpoint(args.default_root_dir)
    if found is not None:
        log(f"resuming from {found} (global step {_peek_global_step(found)}); pass --no_resume to start over")
        return str(found)
    return None



# ----------------------------------------------------------------------------------- video logging
def video_grid(video: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` float in [-0.5, 0.5] -> one uint8 image ``(B*H, T*W, C)``: a clip per row."""
    from einops import rearrange

    frames = ((video.detach().float().clamp(-0.5, 0.5) + 0.5) * 255).round().to(torch.uint8).cpu()
    return rearrange(frames, "b c t h w -> (b h) (t w) c")


class VideoLoggerCallback(Callback):
    """Every ``every_n_steps`` optimizer steps, write ``pl_module.log_videos(batch)`` to TensorBoard.

    ``log_videos(batch, max_videos)`` returns ``{name: (B, C, T, H, W) in [-0.5, 0.5]}``. TensorBoard's
    ``add_video`` needs moviepy; without it each entry is written as an image with one clip per row
    (:func:`video_grid`). Rank 0 only; ``every_n_steps <= 0`` disables it.
    """

    def __init__(self, every_n_steps: int, max_videos: int = 4, fps: int = 4) -> None:
        super().__init__()
        self.every_n_steps, self.max_videos, self.fps = every_n_steps, max_videos, fps
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (self.every_n_steps <= 0 or not trainer.is_global_zero or step == self._last_step
                or step % self.every_n_steps != 0 or not hasattr(pl_module, "log_videos")):
            return
        self._last_step = step
        videos = pl_module.log_videos(batch, max_videos=self.max_videos)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for name, video in videos.items():
                    self._write(logger.experiment, f"train/{name}", video, step)

    def _write(self, writer: Any, tag: str, video: torch.Tensor, step: int) -> None:
        if _has_moviepy():
            clip = (video.detach().float().clamp(-0.5, 0.5) + 0.5).cpu()  # (B, C, T, H, W) in [0, 1]
            writer.add_video(tag, clip.permute(0, 2, 1, 3, 4), step, fps=self.fps)  # wants (B, T, C, H, W)
        else:
            writer.add_image(tag, video_grid(video), step, dataformats="HWC")


def _has_moviepy() -> bool:
    try:
        import moviepy  # noqa: F401
    except ImportError:
        return False
    return True
