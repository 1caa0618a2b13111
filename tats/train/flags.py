"""Training flags: the release's Lightning-1.5 command lines on Lightning 2, and YAML recipes.

The release's READMEs use pytorch-lightning 1.5's flags (``--gpus 8 --sync_batchnorm
--progress_bar_refresh_rate 500 ...``): :func:`add_trainer_args` accepts them unchanged and
:func:`trainer_kwargs` maps them onto Lightning 2's ``Trainer`` arguments (the table is in
docs/training.md). ``--config recipe.yaml`` supplies defaults (:func:`parse_args_with_config`); the
command line wins. The Trainer itself is built by :func:`tats.train.trainer.build_trainer`.
"""

from __future__ import annotations

import argparse
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities import rank_zero_warn

from tats.faults import DEFAULT_MAX_NONFINITE_STEPS

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


def str_to_bool(value: str) -> bool:
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
    g.add_argument("--lr_decay", choices=("none", "linear", "cosine"), default="none",
                   help="decay every learning rate to 0 over --max_steps, else over --max_time (none: the "
                        "release's constant rate)")
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
    g.add_argument("--benchmark", type=str_to_bool, nargs="?", const=True, default=None)
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


def add_fault_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--max_nonfinite_steps`` (once; other modules may have added it)."""
    if "--max_nonfinite_steps" not in parser._option_string_actions:
        parser.add_argument(
            "--max_nonfinite_steps", type=int, default=DEFAULT_MAX_NONFINITE_STEPS,
            help="skip steps whose loss is NaN/inf; stop after this many in a row (0: stop at the first)",
        )
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
        if nan_flag is True or str_to_bool(str(nan_flag)):
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
def parse_device_spec(value: Any) -> int | list[int] | str | None:
    """``"8"`` -> 8, ``"0,1"`` -> [0, 1], ``"auto"`` -> "auto", None -> None."""
    if value is None or isinstance(value, (int, list)):
        return value
    value = str(value).strip()
    if value == "auto":
        return value
    if "," in value:
        return [int(v) for v in value.split(",") if v.strip()]
    return int(value)


def lightning_precision(value: Any) -> str:
    """The release's ``--precision`` value (``16``, ``bf16``, ``32``, ...) as Lightning 2 names it."""
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
    gpus = parse_device_spec(getattr(args, "gpus", None))
    devices = parse_device_spec(getattr(args, "devices", None))
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
    precision = lightning_precision(getattr(args, "precision", "32"))
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
