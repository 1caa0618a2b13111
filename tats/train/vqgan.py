"""Stage 1 training set-up: the VQGAN's flags, their checks, and :func:`fit_vqgan`.

``train_vqgan.py`` is :func:`parse_args` then :func:`fit_vqgan`; the model it trains is
:class:`tats.vqgan.lightning.VQGANModule`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch

from tats.data import VideoDataModule, add_data_args
from tats.data.release import apply_release_data_defaults, frames_per_clip
from tats.distributed import rank_zero_print
from tats.faults import DEFAULT_MAX_NONFINITE_STEPS
from tats.train.flags import add_fault_args, add_trainer_args, lightning_precision, parse_args_with_config
from tats.train.guards import check_data_flags
from tats.train.lr import scale_vqgan_lr
from tats.train.resume import resolve_resume
from tats.train.trainer import build_trainer, devices_per_node, world_size
from tats.train.video_log import VideoLoggerCallback
from tats.vqgan.config import VQGANConfig
from tats.vqgan.lightning import VQGANModule


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """Every flag of ``train_vqgan.py``: model and loss (:func:`add_vqgan_args`), data, trainer, faults.
    ``description``: the ``--help`` text (the root script passes its docstring)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_vqgan_args(parser)
    add_data_args(parser)
    add_trainer_args(parser)
    add_fault_args(parser)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse ``argv`` (with ``--config`` recipes, section ``vqgan``) and check every model and data flag
    before any data or model is built (an unusable flag is a usage error naming it)."""
    args = parse_args_with_config(parser, argv, section="vqgan")
    try:
        notes = apply_release_data_defaults(args)  # e.g. the release's STFT reader's 96-pixel frames
    except ValueError as err:
        parser.error(str(err))
    for note in notes:
        print(note, file=sys.stderr)
    try:  # validate every model flag before any data or model is built
        vqgan_config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    check_data_flags(args)  # before any demo data is generated or the model built
    return args


def add_vqgan_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Model/loss flags of the release's ``train_vqgan.py`` (defaults: :class:`VQGANConfig`'s) plus ours
    (``--init_ckpt``, ``--allow_random_lpips``, ``--lpips_cache_dir``, ``--log_videos_every_n_steps``)."""
    d = VQGANConfig()
    g = parser.add_argument_group("vqgan")
    g.add_argument("--embedding_dim", type=int, default=d.embedding_dim, help="code width")
    g.add_argument("--n_codes", type=int, default=d.n_codes, help="codebook size")
    g.add_argument("--n_hiddens", type=int, default=d.n_hiddens, help="width of the first encoder conv")
    g.add_argument("--downsample", type=int, nargs=3, default=list(d.downsample), metavar=("T", "H", "W"),
                   help="downsampling factors (powers of two) of time, height, width")
    g.add_argument("--image_channels", type=int, default=d.image_channels)
    g.add_argument("--norm_type", type=str, default=d.norm_type, choices=("group", "batch"))
    g.add_argument("--padding_type", type=str, default=d.padding_type,
                   choices=("replicate", "constant", "reflect", "circular"))
    g.add_argument("--no_random_restart", action="store_true", help="never restart unused codes")
    g.add_argument("--restart_thres", type=float, default=d.restart_thres)
    g.add_argument("--quantizer", choices=("vq", "fsq", "lfq"), default=d.quantizer,
                   help="vq: the release's EMA codebook; fsq: finite scalar quantization (--fsq_levels); "
                        "lfq: lookup-free quantization (--lfq_bits). fsq/lfq set --n_codes, --embedding_dim")
    g.add_argument("--fsq_levels", type=int, nargs="+", default=None, metavar="L",
                   help="levels per latent channel for --quantizer fsq, e.g. 8 8 8 5 5 5 (64,000 codes)")
    g.add_argument("--lfq_bits", type=int, default=None,
                   help="channels (one bit each) for --quantizer lfq: 2**bits codes")
    g.add_argument("--lfq_entropy_weight", type=float, default=d.lfq_entropy_weight)
    g.add_argument("--lfq_commitment_weight", type=float, default=d.lfq_commitment_weight)
    g.add_argument("--lfq_diversity_gamma", type=float, default=d.lfq_diversity_gamma,
                   help="weight of the batch entropy in LFQ's penalty")
    g.add_argument("--disc_channels", type=int, default=d.disc_channels)
    g.add_argument("--disc_layers", type=int, default=d.disc_layers)
    g.add_argument("--disc_loss_type", type=str, default=d.disc_loss_type, choices=("hinge", "vanilla"))
    g.add_argument("--discriminator_iter_start", type=int, default=d.discriminator_iter_start,
                   help="autoencoder step from which the GAN losses are on")
    g.add_argument("--image_gan_weight", type=float, default=d.image_gan_weight)
    g.add_argument("--video_gan_weight", type=float, default=d.video_gan_weight)
    g.add_argument("--perceptual_weight", type=float, default=d.perceptual_weight, help="0: LPIPS not built")
    g.add_argument("--gan_feat_weight", type=float, default=d.gan_feat_weight)
    g.add_argument("--l1_weight", type=float, default=d.l1_weight)
    g.add_argument("--lr", type=float, default=d.lr,
                   help="base lr; used: accumulate * (devices/8) * (batch/4) * lr (the release's rule)")
    g.add_argument("--init_ckpt", type=str, default=None,
                   help="fine-tune: initial weights from a VQGAN checkpoint (the release's or ours, or "
                        "a published name such as ucf101)")
    g.add_argument("--allow_random_lpips", action="store_true",
                   help="perceptual loss without fetched LPIPS weights: random VGG (testing only)")
    g.add_argument("--lpips_cache_dir", type=str, default=None, help="folder of the converted LPIPS weights")
    g.add_argument("--log_videos_every_n_steps", type=int, default=1000,
                   help="write input/reconstruction clips to TensorBoard every N steps (0: never)")
    g.add_argument("--activation_checkpointing", action="store_true",
                   help="encoder/decoder layers keep only their inputs and run again in the backward pass: "
                        "less memory, same results")
    g.add_argument("--channels_last", action="store_true",
                   help="channels-last memory format for the autoencoder and discriminators")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the encoder, decoder and discriminators")
    return parser


def vqgan_config_from_args(args: argparse.Namespace) -> VQGANConfig:
    """The :class:`VQGANConfig` of the flags; ``ValueError`` naming the flag when they cannot work
    (e.g. ``--resolution`` not divisible by the ``--downsample`` factors, or a precision the VQGAN
    cannot train with: :func:`check_vqgan_training_flags`).

    The config's ``sequence_length`` is the frames of a clip the model sees, which differs from the
    flag for video files and HDF5 read with ``--sample_every_n_frames n > 1`` (``T = seq / n``, see
    :func:`tats.data.transforms.clip_length`)."""
    flags = dict(vars(args))
    seq, every = flags.get("sequence_length"), flags.get("sample_every_n_frames") or 1
    if seq and seq >= 1 and every >= 1:
        flags["sequence_length"] = frames_per_clip(args)
        dt = int((flags.get("downsample") or VQGANConfig.downsample)[0])
        if flags["sequence_length"] != seq and flags["sequence_length"] % dt:
            raise ValueError(
                f"--sequence_length {seq} with --sample_every_n_frames {every} gives clips of "
                f"{flags['sequence_length']} frames, which the time downsample factor {dt} does not divide; "
                f"pick --sequence_length so that sequence_length / sample_every_n_frames is a multiple "
                f"of {dt}"
            )
    config = VQGANConfig.from_dict(flags)
    check_vqgan_training_flags(args)
    return config


def check_vqgan_training_flags(args: argparse.Namespace) -> None:
    """Precision settings the VQGAN cannot train with: ``ValueError`` naming the flag.

    * ``16-true`` / ``bf16-true`` cast every buffer to half, the codebook's EMA counts included: a count
      of 300 plus 0.01 stays 300 in bf16, so the EMA freezes (the Codebook keeps its buffers fp32 anyway,
      but the rest of the model would run without fp32 master weights). Use ``bf16-mixed``.

    ``16-mixed`` works with gradient accumulation: each optimizer has its own loss scaler
    (:class:`tats.train.scalers.PerOptimizerGradScaler`), changed only by its own step at the end of a
    window.
    """
    precision = lightning_precision(getattr(args, "precision", "32"))
    if precision.endswith("-true") and precision.startswith(("16", "bf16")):
        raise ValueError(f"--precision {args.precision}: pure half precision keeps no fp32 master weights "
                         "(small EMA and Adam updates round away); use --precision bf16-mixed (or 16-mixed)")


def sync_batchnorm_if_needed(
    module: pl.LightningModule, world: int, log: Any = print, on_gpu: bool = True
) -> pl.LightningModule:
    """BatchNorm -> SyncBatchNorm when ``world`` (devices x nodes) > 1 on GPUs: the release's norm was
    always SyncBatchNorm, and per-device statistics of one or two clips differ from the global ones.
    PyTorch's SyncBatchNorm runs on GPUs only, so CPU processes keep per-process statistics (and are
    told so). Says what it did via ``log``; returns the module (converted in place, as Lightning's
    ``--sync_batchnorm`` does)."""
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                 and not isinstance(m, torch.nn.SyncBatchNorm) for m in module.modules())
    if world <= 1 or not has_bn:
        return module
    if not on_gpu:
        log(f"note: {world} CPU processes keep per-process BatchNorm statistics (SyncBatchNorm needs GPUs)")
        return module
    module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    log(f"note: BatchNorm layers converted to SyncBatchNorm across the {world} devices, as the release "
        "(--sync_batchnorm is implied for the VQGAN)")
    return module


def _plain(value: Any) -> Any:
    """Flag values as checkpoint-safe primitives (Paths and other objects become strings)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


def fit_vqgan(args: argparse.Namespace) -> tuple[pl.Trainer, VQGANModule]:
    """Train (or resume) a VQGAN from parsed flags; returns the trainer and the trained module.

    Order: validate the config, seed, build data and trainer, scale the lr by the number of devices,
    build the module, resume from ``--default_root_dir`` (or ``--resume_from_checkpoint``) unless
    ``--no_resume``, else initialise from ``--init_ckpt`` if given, then ``Trainer.fit``.
    """
    config = vqgan_config_from_args(args)
    pl.seed_everything(args.seed, workers=True)
    datamodule = VideoDataModule(args)
    trainer = build_trainer(args, monitor="val/recon_loss", ckpt_every_n_steps=3000, mode="min",
                            callbacks=[VideoLoggerCallback(args.log_videos_every_n_steps)],
                            manual_optimization=True, find_unused_parameters=True, loss_scalers=2,
                            broadcast_buffers=False)  # VQGANModule shares what must be shared
    n_dev = devices_per_node(trainer)  # the release's --gpus: per node, not the world size
    config.lr = scale_vqgan_lr(args.lr, args.accumulate_grad_batches, n_dev, args.batch_size)
    rank_zero_print(f"learning rate {config.lr:.3e} = {args.accumulate_grad_batches} (accumulate)"
                    f" * {n_dev}/8 (devices per node/8) * {args.batch_size}/4 (batch_size/4)"
                    f" * {args.lr:.2e} (base lr)")
    module = VQGANModule(config, gradient_clip_val=args.gradient_clip_val,
                         gradient_clip_algorithm=args.gradient_clip_algorithm,
                         accumulate_grad_batches=args.accumulate_grad_batches,
                         allow_random_lpips=args.allow_random_lpips, lpips_cache_dir=args.lpips_cache_dir,
                         train_args={k: _plain(v) for k, v in vars(args).items()},
                         max_nonfinite_steps=getattr(args, "max_nonfinite_steps",
                                                     DEFAULT_MAX_NONFINITE_STEPS),
                         activation_checkpointing=args.activation_checkpointing,
                         channels_last=args.channels_last, compile=args.compile)
    if not args.sync_batchnorm:
        on_gpu = trainer.strategy.root_device.type == "cuda"
        module = sync_batchnorm_if_needed(module, world_size(trainer), rank_zero_print, on_gpu)
    ckpt_path = resolve_resume(args)
    if ckpt_path is None and args.init_ckpt:
        missing = module.load_weights(args.init_ckpt)
        rank_zero_print(f"initialised from {args.init_ckpt}"
                        + (f" (not in it: {len(missing)} keys)" if missing else ""))
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    return trainer, module
