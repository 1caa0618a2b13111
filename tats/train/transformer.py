"""Stage 2 training set-up: the transformer's flags, the token budget checked against the data and the
VQGAN, and :func:`fit_transformer`.

``train_transformer.py`` (and the fork's ``train_gpt.py``) is :func:`build_parser`, then
:func:`fit_transformer`, which trains :class:`tats.gpt.lightning.TransformerModule` or, with
``--objective masked``, :class:`tats.gpt.masked_lightning.MaskedTransformerModule` on the data of
:mod:`tats.data.release` and :mod:`tats.data.datamodule`. Conditioning, ``--vtokens`` and
``--cond_drop``: docs/training.md.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

import pytorch_lightning as pl

from tats.data import VideoDataModule, add_data_args
from tats.data.audio import AudioVideoDataModule, add_audio_args, stft_config_from_args
from tats.data.codes import CodesDataModule
from tats.data.release import apply_release_data_defaults, frames_per_clip, text_layout, uses_stft_pickles
from tats.data.release_hdf5 import is_release_token_file
from tats.distributed import rank_zero_print
from tats.gpt.config import TEXT_VOCAB_SIZE, GPTConfig, kept_latent_frames
from tats.gpt.lightning import BASE_LR, TransformerModule
from tats.io.download import file_digest
from tats.io.registry import check_file_flag, resolve_args
from tats.train.flags import add_fault_args, add_trainer_args, str_to_bool
from tats.train.guards import check_data_flags, check_transformer_budget, check_transformer_tokens
from tats.train.lr import scale_transformer_lr
from tats.train.resume import resolve_resume
from tats.train.trainer import build_trainer, devices_per_node
from tats.vqgan.load import load_vqgan
from tats.vqgan.model import VQGAN

COND_KEYS = {"label": "label", "text": "text", "stft": "audio"}
#: Token vocabulary the release assumes for its token files (its first_stage_vocab_size).
RELEASE_TOKEN_VOCAB = 16384


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
    add("--text_seq_len", type=int, default=None,
        help="BPE tokens per caption (start/end included, 0-padded); default: 256 for the release's "
             "MUGEN/CoinRun and text-HDF5 layouts (the release's), 77 for captions in our HDF5 files")
    add("--truncate_captions", type=str_to_bool, nargs="?", const=True, default=None,
        help="cut longer captions to --text_seq_len tokens (else an error); default: the release's, yes for "
             "MUGEN/CoinRun and our captions, no for its text HDF5")
    add("--vocab_size", type=int, default=None,
        help="VQGAN codebook size (checked against --vqvae); with the release's token files and no --vqvae "
             f"the token vocabulary (default {RELEASE_TOKEN_VOCAB}, the release's)")
    add("--block_size", type=int, default=1024, help="longest input: condition tokens + video tokens - 1")
    add("--n_layer", type=int, default=24)
    add("--n_head", type=int, default=16)
    add("--n_embd", type=int, default=1024)
    add("--n_unmasked", type=int, default=0,
        help="> 0: interpolation transformer; queries also see the first n+1 and last n-1 positions")
    add("--sample_every_n_latent_frames", type=int, default=0,
        help="> 0: keep every n-th latent frame (hierarchical AR transformer)")
    add("--spatial_length", type=int, default=None,
        help="--vtokens with the release's token file: side of the random square crops of the token grid "
             "(default 15, the release's); accepted and unused otherwise (the grid comes from the VQGAN)")
    add("--vtokens_pos", action="store_true",
        help="--vtokens crops: add a learned embedding of each crop cell's place in the full token grid")
    add("--vtokens", action="store_true",
        help="--data_path holds precomputed codes (scripts/extract_codes.py, or the release's token file "
             "with --resolution = its grid side): no VQGAN forward per step")
    add("--base_lr", type=float, default=BASE_LR, help="lr = accumulate * gpus * batch_size * base_lr")
    add("--weight_decay", type=float, default=0.01, help="AdamW decay of Linear weights")
    add("--activation_checkpointing", action="store_true", help="recompute block activations in backward")
    add("--compile", action="store_true", help="torch.compile the GPT")
    add("--objective", choices=("autoregressive", "masked"), default="autoregressive",
        help="autoregressive: the release's GPT (next token); masked: a bidirectional masked-token "
             "transformer for parallel decoding (tats.gpt.masked, MaskGIT's cosine masking)")
    add("--cond_drop", type=float, default=0.0,
        help="share of training clips seen with a null condition, for classifier-free guidance "
             "(sampling --cfg_scale); > 0 adds the null id to the vocabulary. 0: the release's training")
    add("--frame_cond_prob", type=float, default=0.5,
        help="--objective masked: share of training clips whose first latent frames are given whole "
             "(the sliding window's and frame prediction's task)")
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


#: the largest code vocabulary the GPT's dense output head takes (2**20 codes x 1024 = 1G head weights)
MAX_DENSE_VOCAB = 2**20


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
    if n_codes > MAX_DENSE_VOCAB:
        raise SystemExit(
            f"the VQGAN (--vqvae {args.vqvae}) has {n_codes} codes: the GPT's dense output head takes at "
            f"most 2**20 = {MAX_DENSE_VOCAB} (n_embd x vocabulary weights); train the VQGAN with fewer "
            "--lfq_bits (<= 20) or smaller --fsq_levels")
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
    masked = getattr(args, "objective", "autoregressive") == "masked"
    cond_drop = float(getattr(args, "cond_drop", 0.0) or 0.0)
    if not 0 <= cond_drop < 1:
        raise SystemExit(f"--cond_drop must lie in [0, 1), got {cond_drop}")
    if cond_drop and kind == "none":
        raise SystemExit("--cond_drop drops the condition: an --unconditional model has none")
    if masked and getattr(args, "vtokens_pos", False):
        raise SystemExit("--objective masked reads whole clips: --vtokens_pos crops are for the GPT")
    if masked and (s or args.n_unmasked):
        raise SystemExit("--objective masked: the hierarchical models' --sample_every_n_latent_frames / "
                         "--n_unmasked are for the GPT")
    return GPTConfig(
        vocab_size=n_codes + n_cond_vocab + (cond_drop > 0), n_layer=args.n_layer,
        # the masked model reads the whole sequence: one position more than the GPT's inputs
        block_size=n_cond_tokens + math.prod(latent_shape) if masked else args.block_size,
        n_head=args.n_head, n_embd=args.n_embd, n_unmasked=args.n_unmasked, cond_type=kind,
        n_cond_vocab=n_cond_vocab, n_cond_tokens=n_cond_tokens, n_codes=n_codes,
        latent_shape=latent_shape, sample_every_n_latent_frames=s, null_cond=cond_drop > 0,
    )


def _codes_setup(args: argparse.Namespace) -> tuple[CodesDataModule, VQGAN, tuple[int, int, int]]:
    """``--vtokens``: the codes file's datamodule, the VQGAN that made it, its full code grid."""
    if args.data_path is None:
        raise SystemExit("--vtokens needs --data_path pointing at a codes file from scripts/extract_codes.py")
    if args.vtokens_pos or args.spatial_length is not None:
        raise SystemExit(f"--vtokens_pos / --spatial_length crop the release's token files; {args.data_path} "
                         "is a codes file of scripts/extract_codes.py, whose clips are whole")
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


def _release_codes_setup(args: argparse.Namespace) -> tuple[VideoDataModule, VQGAN | None, tuple, int]:
    """``--vtokens`` with the release's token file: its datamodule, the optional VQGAN (``--vqvae``: only
    stored for decoding; the release trained without one), the crop grid and the vocabulary."""
    dm = VideoDataModule(args)
    dm.setup("fit")
    vqgan = load_vqgan(args.vqvae) if args.vqvae else None
    n_codes = vqgan.config.n_codes if vqgan is not None else int(args.vocab_size or RELEASE_TOKEN_VOCAB)
    import h5py  # the largest token must fit the vocabulary

    with h5py.File(args.data_path, "r") as f:
        top = max(int(f[k][:].max(initial=0)) for k in ("train_data", "test_data") if k in f)
    if top >= n_codes:
        raise SystemExit(f"--data_path {args.data_path} holds token {top}, beyond the vocabulary of "
                         f"{n_codes} (--vocab_size, or the --vqvae codebook)")
    return dm, vqgan, dm.train_dataset.latent_shape, n_codes


def apply_release_text_defaults(args: argparse.Namespace, kind: str) -> None:
    """``--text_seq_len`` / ``--truncate_captions`` left out: the release's values for its text layouts
    (MUGEN/CoinRun: 256 tokens, truncated; text HDF5: 256, not truncated), 77 / truncated for ours."""
    layout = text_layout(args) if kind == "text" else None
    if args.text_seq_len is None:
        args.text_seq_len = 256 if layout else 77
    if args.truncate_captions is None:
        args.truncate_captions = layout != "hdf5"


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
    apply_release_text_defaults(args, kind)
    pl.seed_everything(args.seed, workers=True)
    if kind == "audio":
        args.stft_data = True
        if args.stft_vqvae is None:
            raise SystemExit("--cond_stage_key stft needs --stft_vqvae (the audio VQGAN checkpoint)")
        if args.vtokens:
            raise SystemExit("--vtokens holds video codes only; audio conditioning needs the videos")
    try:
        notes = apply_release_data_defaults(args)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    for note in notes:
        rank_zero_print(note)
    release_tokens = bool(args.vtokens and args.data_path and is_release_token_file(args.data_path))
    if args.vtokens_pos and not release_tokens:
        raise SystemExit("--vtokens_pos needs --vtokens with the release's token file (the position "
                         "embedding of cropped token windows)")
    if args.vtokens_pos and args.sample_every_n_frames != 1:
        raise SystemExit("--vtokens_pos: the release's grid embedding covers every latent frame; use "
                         "--sample_every_n_frames 1")

    n_codes = None
    if release_tokens:
        dm, vqgan, full_shape, n_codes = _release_codes_setup(args)
        check_transformer_budget(args, kind, full_shape)
    elif args.vtokens:
        dm, vqgan, full_shape = _codes_setup(args)
        check_transformer_budget(args, kind, full_shape)
    else:
        if args.vqvae is None:
            raise SystemExit("--vqvae is required: the trained VQGAN checkpoint")
        vqgan = load_vqgan(args.vqvae)
        # frames the VQGAN sees per clip (sequence_length, or sequence_length / n: the layout's rule)
        full_shape = latent_shape_of(vqgan, frames_per_clip(args), args.resolution)
        check_transformer_budget(args, kind, full_shape)  # before the (demo) data is generated
        if args.stft_data and not uses_stft_pickles(args):
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
    n_codes = vqgan.config.n_codes if vqgan is not None else n_codes
    config = build_gpt_config(args, full_shape, n_codes, n_classes, n_audio_tokens,
                              cond_vqgan.config.n_codes if cond_vqgan is not None else 0)

    # Every buffer of the module is constant in training (attention masks, the frozen VQGAN in eval
    # mode): DDP need not re-broadcast them from rank 0 before each step (for TATS-base 96 MiB of
    # masks and a 32 MiB codebook). The masks stay persistent buffers: checkpoints keep the layout.
    trainer = build_trainer(args, monitor="val/loss", ckpt_every_n_steps=10000, broadcast_buffers=False)
    n_dev = devices_per_node(trainer)  # the release's --gpus: GPUs per node, not the world size
    lr = scale_transformer_lr(args.base_lr, args.accumulate_grad_batches, n_dev, args.batch_size)
    extra = {"cond_drop": args.cond_drop}
    module_cls = TransformerModule
    if args.objective == "masked":
        from tats.gpt.masked_lightning import MaskedTransformerModule

        module_cls, extra["frame_cond_prob"] = MaskedTransformerModule, args.frame_cond_prob
    module = module_cls.from_vqgan(
        config, vqgan, cond_vqgan, learning_rate=lr, base_lr=args.base_lr, weight_decay=args.weight_decay,
        max_nonfinite_steps=args.max_nonfinite_steps,
        activation_checkpointing=args.activation_checkpointing, compile=args.compile,
        cond_stage_key={"none": None, "label": "label", "text": "text", "audio": "stft"}[kind],
        truncate_captions=bool(args.truncate_captions),
        vtokens_pos_grid=((args.sequence_length, args.resolution, args.resolution) if args.vtokens_pos
                          else None), **extra,
    )
    n_params = sum(p.numel() for p in module.transformer.parameters())
    rank_zero_print(
        f"transformer ({args.objective}): {n_params / 1e6:.2f}M parameters, cond={kind}, tokens/clip "
        f"{config.n_cond_tokens}+{config.n_latent_tokens}, latent grid {config.latent_shape}, vocab "
        f"{config.vocab_size}, lr {lr:.3g} (= {args.accumulate_grad_batches} accumulate x "
        f"{n_dev} devices/node x {args.batch_size} batch x {args.base_lr:g} base_lr)"
    )
    trainer.fit(module, datamodule=dm, ckpt_path=resolve_resume(args))
    return trainer
