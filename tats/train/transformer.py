"""Stage 2 training set-up: the transformer's flags, the token budget checked against the data and the
VQGAN, and :func:`fit_transformer`.

``train_transformer.py`` (and the fork's ``train_gpt.py``) is :func:`build_parser`, then
:func:`fit_transformer`. Conditioning: ``--unconditional``, class labels (default, ``--cond_stage_key
label``), captions (``--cond_stage_key text`` or ``--text_cond``) or audio (``--cond_stage_key stft
--stft_vqvae STFT_VQGAN.ckpt``; STFT features are computed from the videos' own audio). ``--vtokens``
trains from a codes file written by ``scripts/extract_codes.py`` (``--data_path codes.h5``), skipping
the VQGAN. The model it trains is :class:`tats.gpt.lightning.TransformerModule`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import pytorch_lightning as pl

from tats.data import VideoDataModule, add_data_args
from tats.data.audio import AudioVideoDataModule, add_audio_args, stft_config_from_args
from tats.data.codes import CodesDataModule
from tats.data.transforms import clip_length
from tats.distributed import rank_zero_print
from tats.gpt.config import TEXT_VOCAB_SIZE, GPTConfig, kept_latent_frames
from tats.gpt.lightning import BASE_LR, TransformerModule
from tats.io.download import file_digest
from tats.io.registry import check_file_flag, resolve_args
from tats.train.flags import add_fault_args, add_trainer_args
from tats.train.guards import check_data_flags, check_transformer_budget, check_transformer_tokens
from tats.train.lr import scale_transformer_lr
from tats.train.resume import resolve_resume
from tats.train.trainer import build_trainer, devices_per_node
from tats.vqgan.load import load_vqgan
from tats.vqgan.model import VQGAN

COND_KEYS = {"label": "label", "text": "text", "stft": "audio"}


def add_transformer_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The release's transformer flags plus ours (activation checkpointing, compile, text length)."""
    g = parser.add_argument_group("transformer")
    add = g.add_argument
    add("--vqvae", type=str, default=None,
        help="the trained video VQGAN checkpoint (ours or the release's) or a published name (ucf101, ...)")
    add("--unconditional", action="store_true", help="no condition: sequences start with token 0")
    add("--cond_stage_key", type=str, default="label", choices=sorted(COND_KEYS),
        help="condition: class label, text (CLIP BPE captions) or stft (audio through --stft_vqvae)")
    add("--text_cond", action="store_true", help="captions as CLIP BPE ids (same as --cond_stage_key text)")
    add("--class_cond", action="store_true", help="class labels (the default, --cond_stage_key label)")
    add("--stft_vqvae", type=str, default=None,
        help="audio VQGAN checkpoint or published name, e.g. drums-stft (--cond_stage_key stft)")
    add("--text_seq_len", type=int, default=77, help="BPE tokens per caption (start/end included, 0-padded)")
    add("--vocab_size", type=int, default=None, help="VQGAN codebook size (checked against --vqvae)")
    add("--block_size", type=int, default=1024, help="longest input: condition tokens + video tokens - 1")
    add("--n_layer", type=int, default=24)
    add("--n_head", type=int, default=16)
    add("--n_embd", type=int, default=1024)
    add("--n_unmasked", type=int, default=0,
        help="> 0: interpolation transformer; queries also see the first n+1 and last n-1 positions")
    add("--sample_every_n_latent_frames", type=int, default=0,
        help="> 0: keep every n-th latent frame (hierarchical AR transformer)")
    add("--spatial_length", type=int, default=None,
        help="accepted for release command lines; the code grid comes from the VQGAN (or the codes file)")
    add("--frame_rate", type=float, default=None, help="accepted for release command lines (unused here)")
    add("--vtokens", action="store_true",
        help="--data_path is a codes file from scripts/extract_codes.py: no VQGAN forward per step")
    add("--base_lr", type=float, default=BASE_LR, help="lr = accumulate * gpus * batch_size * base_lr")
    add("--weight_decay", type=float, default=0.01, help="AdamW decay of Linear weights")
    add("--activation_checkpointing", action="store_true", help="recompute block activations in backward")
    add("--compile", action="store_true", help="torch.compile the GPT")
    return parser


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """Every flag of ``train_transformer.py``: trainer, data, transformer, audio, faults. ``description``:
    the ``--help`` text (the root script passes the first paragraph of its docstring)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_trainer_args(parser)
    add_data_args(parser)
    add_transformer_args(parser)
    add_audio_args(parser)
    add_fault_args(parser)
    return parser


def cond_type_of(args: argparse.Namespace) -> str:
    """``none`` / ``label`` / ``text`` / ``audio`` from the release's flags."""
    if args.unconditional:
        return "none"
    if args.text_cond:
        return "text"
    return COND_KEYS[args.cond_stage_key]


def latent_shape_of(vqgan: VQGAN, frames: int, resolution: int) -> tuple[int, int, int]:
    """Code grid ``(t, h, w)`` the VQGAN makes of a clip of ``frames`` x ``resolution``^2."""
    dt, dh, dw = vqgan.config.downsample
    if frames % dt or resolution % dh or resolution % dw:
        raise SystemExit(
            f"clips of {frames} frames (--sequence_length / --sample_every_n_frames) / --resolution "
            f"{resolution} are not divisible by the VQGAN's downsample factors "
            f"{tuple(vqgan.config.downsample)}"
        )
    return frames // dt, resolution // dh, resolution // dw


def build_gpt_config(
    args: argparse.Namespace,
    full_latent_shape: Sequence[int],
    n_codes: int,
    n_classes: int,
    n_audio_tokens: int = 0,
    n_audio_codes: int = 0,
) -> GPTConfig:
    """Validate the flags against the data and the VQGAN(s), then build the :class:`GPTConfig`.

    Raises ``SystemExit`` naming the flag when the run could not work (checked before any training).
    """
    kind = cond_type_of(args)
    if args.vocab_size is not None and args.vocab_size != n_codes:
        raise SystemExit(f"--vocab_size {args.vocab_size} differs from the VQGAN's codebook size {n_codes}")
    s = args.sample_every_n_latent_frames
    t, h, w = full_latent_shape
    latent_shape = (kept_latent_frames(t, s), h, w)
    if kind == "label":
        if n_classes < 1:
            raise SystemExit("the dataset has no class labels: pass --unconditional (or a --cond_stage_key)")
        n_cond_vocab, n_cond_tokens = n_classes, 1
    elif kind == "text":
        n_cond_vocab, n_cond_tokens = TEXT_VOCAB_SIZE, args.text_seq_len
    elif kind == "audio":
        n_cond_vocab, n_cond_tokens = n_audio_codes, n_audio_tokens
    else:
        n_cond_vocab, n_cond_tokens = 0, 1
    check_transformer_tokens(args.block_size, n_cond_tokens, latent_shape, args.n_unmasked)
    if args.n_embd % args.n_head:
        raise SystemExit(f"--n_embd {args.n_embd} is not divisible by --n_head {args.n_head}")
    return GPTConfig(
        vocab_size=n_codes + n_cond_vocab, block_size=args.block_size, n_layer=args.n_layer,
        n_head=args.n_head, n_embd=args.n_embd, n_unmasked=args.n_unmasked, cond_type=kind,
        n_cond_vocab=n_cond_vocab, n_cond_tokens=n_cond_tokens, n_codes=n_codes,
        latent_shape=latent_shape, sample_every_n_latent_frames=s,
    )


def _codes_setup(args: argparse.Namespace) -> tuple[CodesDataModule, VQGAN, tuple[int, int, int]]:
    """``--vtokens``: the codes file's datamodule, the VQGAN that made it, its full code grid."""
    if args.data_path is None:
        raise SystemExit("--vtokens needs --data_path pointing at a codes file from scripts/extract_codes.py")
    dm = CodesDataModule(args.data_path, batch_size=args.batch_size, num_workers=args.num_workers)
    vqvae = args.vqvae or dm.attrs.get("vqgan_ckpt")
    if not vqvae:
        raise SystemExit(f"--vtokens: pass --vqvae (the VQGAN that wrote {args.data_path})")
    if file_digest(vqvae) != dm.attrs.get("vqgan_sha256"):
        raise SystemExit(
            f"--vqvae {vqvae} is not the VQGAN that wrote {args.data_path} (SHA-256 differs from the file's "
            f"vqgan_sha256 attribute); re-run scripts/extract_codes.py with this VQGAN"
        )
    return dm, load_vqgan(vqvae), dm.latent_shape


def fit_transformer(args: argparse.Namespace) -> pl.Trainer:
    """Train (or resume) the transformer from parsed flags; returns the trainer.

    Order: published names resolved and files checked, data flags and the token budget checked (before
    any demo data is generated), seed, data (videos, or a codes file with ``--vtokens``), the frozen
    VQGAN(s), the :class:`GPTConfig` checked against them, trainer, lr scaled by the devices per node,
    the module, then ``Trainer.fit`` resuming from ``--default_root_dir`` unless ``--no_resume``.
    """
    kind = cond_type_of(args)
    resolve_args(args, vqvae="vqgan", stft_vqvae="vqgan")  # published names become cached files
    check_file_flag("vqvae", args.vqvae)
    check_file_flag("stft_vqvae", args.stft_vqvae)
    check_data_flags(args)
    pl.seed_everything(args.seed, workers=True)
    if kind == "audio":
        args.stft_data = True
        if args.stft_vqvae is None:
            raise SystemExit("--cond_stage_key stft needs --stft_vqvae (the audio VQGAN checkpoint)")
        if args.vtokens:
            raise SystemExit("--vtokens holds video codes only; audio conditioning needs the videos")

    if args.vtokens:
        dm, vqgan, full_shape = _codes_setup(args)
        check_transformer_budget(args, kind, full_shape)
    else:
        if args.vqvae is None:
            raise SystemExit("--vqvae is required: the trained VQGAN checkpoint")
        vqgan = load_vqgan(args.vqvae)
        # frames the VQGAN sees per clip: sequence_length, or sequence_length / n for video files and HDF5
        frames = clip_length(args.sequence_length, args.sample_every_n_frames, args.image_folder)
        full_shape = latent_shape_of(vqgan, frames, args.resolution)
        check_transformer_budget(args, kind, full_shape)  # before the (demo) data is generated
        if args.stft_data:
            dm = AudioVideoDataModule(args, stft_config_from_args(args))
        else:
            dm = VideoDataModule(args)
    dm.setup("fit")
    n_classes = int(getattr(dm, "n_classes", 0) or 0)
    if kind == "text" and "text" not in dm.train_dataset[0]:
        raise SystemExit(f"--text_cond: the data at --data_path {args.data_path} has no captions")

    cond_vqgan, n_audio_tokens = None, 0
    if kind == "audio":
        cond_vqgan = load_vqgan(args.stft_vqvae)
        stft = dm.train_dataset[0]["stft"][None]  # (1, 1, T, F, W): the grid the audio VQGAN sees
        n_audio_tokens = math.prod(cond_vqgan.encode(stft).shape[1:])
    config = build_gpt_config(args, full_shape, vqgan.config.n_codes, n_classes, n_audio_tokens,
                              cond_vqgan.config.n_codes if cond_vqgan is not None else 0)

    # Every buffer of the module is constant in training (attention masks, the frozen VQGAN in eval
    # mode): DDP need not re-broadcast them from rank 0 before each step (for TATS-base 96 MiB of
    # masks and a 32 MiB codebook). The masks stay persistent buffers: checkpoints keep the layout.
    trainer = build_trainer(args, monitor="val/loss", ckpt_every_n_steps=10000, broadcast_buffers=False)
    n_dev = devices_per_node(trainer)  # the release's --gpus: GPUs per node, not the world size
    lr = scale_transformer_lr(args.base_lr, args.accumulate_grad_batches, n_dev, args.batch_size)
    module = TransformerModule.from_vqgan(
        config, vqgan, cond_vqgan, learning_rate=lr, base_lr=args.base_lr, weight_decay=args.weight_decay,
        max_nonfinite_steps=args.max_nonfinite_steps,
        activation_checkpointing=args.activation_checkpointing, compile=args.compile,
        cond_stage_key={"none": None, "label": "label", "text": "text", "audio": "stft"}[kind],
    )
    n_params = sum(p.numel() for p in module.transformer.parameters())
    rank_zero_print(
        f"transformer: {n_params / 1e6:.2f}M parameters, cond={kind}, tokens/clip "
        f"{config.n_cond_tokens}+{config.n_latent_tokens}, latent grid {config.latent_shape}, vocab "
        f"{config.vocab_size}, lr {lr:.3g} (= {args.accumulate_grad_batches} accumulate x "
        f"{n_dev} devices/node x {args.batch_size} batch x {args.base_lr:g} base_lr)"
    )
    trainer.fit(module, datamodule=dm, ckpt_path=resolve_resume(args))
    return trainer
